"""API keys (unscoped admin only): create (secret shown once), list, revoke."""

from __future__ import annotations


from fastapi import APIRouter, status

from app.deps import GlobalAdminDep, SessionDep, PathId
from app.errors import ERROR_RESPONSES
from app.schemas.keys import KeyCreate, KeyCreated, KeyRead
from app.services import keys as service

router = APIRouter(prefix="/keys", tags=["keys"], responses=ERROR_RESPONSES)


@router.post(
    "",
    summary="Create an API key",
    description="Returns the secret once; only its hash is stored. A key may be scoped to one project.",
    response_model=KeyCreated,
    status_code=status.HTTP_201_CREATED,
)
def create_key(body: KeyCreate, _admin: GlobalAdminDep, session: SessionDep) -> KeyCreated:
    key, secret = service.create_api_key(session, role=body.role, name=body.name, project_id=body.project_id)
    return KeyCreated.model_validate({**KeyRead.model_validate(key).model_dump(), "secret": secret})


@router.get("", summary="List API keys", description="No secrets and no hashes.", response_model=list[KeyRead])
def list_keys(_admin: GlobalAdminDep, session: SessionDep) -> list[KeyRead]:
    return [KeyRead.model_validate(key) for key in service.list_api_keys(session)]


@router.delete(
    "/{key_id}",
    summary="Revoke an API key",
    description="The key stops working at once; the row stays for the record. Revoking twice is harmless.",
    response_model=KeyRead,
)
def revoke_key(key_id: PathId, _admin: GlobalAdminDep, session: SessionDep) -> KeyRead:
    return KeyRead.model_validate(service.revoke_api_key(session, key_id=key_id))

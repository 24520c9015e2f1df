"""API keys: create (the secret is returned once), list, revoke."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import tables as t
from app.db.base import utcnow
from app.errors import NotFound, Unprocessable
from app.security import ROLES, hash_secret, new_secret


def create_api_key(
    session: Session, *, role: str, name: str, project_id: int | None = None
) -> tuple[t.ApiKey, str]:
    if role not in ROLES:
        raise Unprocessable(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if project_id is not None and session.get(t.Project, project_id) is None:
        raise NotFound(f"project {project_id} does not exist")
    secret = new_secret()
    key = t.ApiKey(key_hash=hash_secret(secret), prefix=secret[:10], role=role, name=name, project_id=project_id)
    session.add(key)
    session.flush()
    return key, secret


def list_api_keys(session: Session) -> list[t.ApiKey]:
    return list(session.scalars(select(t.ApiKey).order_by(t.ApiKey.id)))


def revoke_api_key(session: Session, *, key_id: int) -> t.ApiKey:
    key = session.get(t.ApiKey, key_id)
    if key is None:
        raise NotFound(f"API key {key_id} does not exist")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key

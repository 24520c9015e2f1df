"""Request dependencies: settings, the database session, the caller's API key, the project in the path.

Use the ``Annotated`` aliases in routers: ``session: SessionDep``, ``principal: AdminDep``, ...
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import tables as t
from app.errors import Forbidden, NotFound, Unauthorized
from app.queue import bind_dispatcher
from app.security import ROLE_ADMIN, hash_secret


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(request: Request) -> Iterator[Session]:
    """One session per request: committed when the handler returns, rolled back if it raised.

    Declared with ``scope="function"`` (below) so the commit happens before the response is sent:
    a client that sees 200 can rely on its write being durable.
    """
    session = request.app.state.sessionmaker()
    if request.app.state.dispatcher is not None:
        bind_dispatcher(session, request.app.state.dispatcher)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


@dataclass(frozen=True)
class Principal:
    key_id: int
    name: str
    role: str
    project_id: int | None  # None: every project

    @property
    def is_admin(self) -> bool:
        return self.role == ROLE_ADMIN

    def check_project(self, project_id: int) -> None:
        if self.project_id is not None and self.project_id != project_id:
            raise Forbidden(f"this key is scoped to project {self.project_id}")


def _end_lookup(session: Session) -> None:
    """End the lookup's read transaction, giving its connection back to the pool.

    FastAPI runs each sync dependency and the handler in separate thread-pool turns; a request that
    kept its connection while waiting for a thread could, under load, hold every pooled connection
    while the threads that would finish requests wait for one. Loaded objects stay usable
    (``expire_on_commit=False``); handlers that need a consistent view lock what they change.
    """
    session.commit()


def _presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def get_principal(
    session: SessionDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Principal:
    secret = _presented_key(authorization, x_api_key)
    if not secret:
        raise Unauthorized(
            "an API key is required (Authorization: Bearer <key> or X-API-Key)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = session.scalar(select(t.ApiKey).where(t.ApiKey.key_hash == hash_secret(secret)))
    if key is None or key.revoked_at is not None:
        raise Unauthorized("unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    principal = Principal(key_id=key.id, name=key.name, role=key.role, project_id=key.project_id)
    _end_lookup(session)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this route needs an admin key")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]


async def require_global_admin(principal: AdminDep) -> Principal:
    """Admin routes that reach beyond one project (keys, creating projects) need an unscoped key:
    a project-scoped admin must not mint an unscoped key for itself."""
    if principal.project_id is not None:
        raise Forbidden("this route needs an admin key that is not scoped to a project")
    return principal


GlobalAdminDep = Annotated[Principal, Depends(require_global_admin)]


# Ids are 32-bit integer columns: a larger id in a path is a 422 here, not a database error (a 500) later.
MAX_ID = 2**31 - 1
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]


def get_project(
    session: SessionDep, principal: PrincipalDep, project_id: Annotated[int, Path(ge=1, le=MAX_ID)]
) -> t.Project:
    """The project named in the path, after checking the key may see it."""
    principal.check_project(project_id)
    project = session.get(t.Project, project_id)
    if project is None:
        raise NotFound(f"project {project_id} does not exist")
    _end_lookup(session)
    return project


ProjectDep = Annotated[t.Project, Depends(get_project)]

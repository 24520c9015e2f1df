"""Request dependencies: settings, the database session, the caller's API key, the project in the path.

Use the ``Annotated`` aliases in routers: ``session: SessionDep``, ``principal: AdminDep``, ...

Cost matters here: every request passes through these. FastAPI runs each *sync* dependency (and a
sync handler, and the validation of a sync handler's response) in its own thread-pool turn, and
under load those hand-offs cost more than the work. So the dependencies that need no I/O are
``async``, API keys are cached for a few seconds (``KeyCache``), and the session dependency only
goes to a thread when a transaction is left to end. The annotation hot path (``queries/next``,
``labels``) goes one step further: ``ProjectAccessDep`` authenticates and checks the key's scope
without I/O (on a cache hit), and ``ProjectAccess.run`` opens the session, loads the project, does
the handler's work and commits in one thread turn.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Header, Path, Request
from sqlalchemy import bindparam, event, select
from sqlalchemy.orm import Session, object_session
from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.db import tables as t
from app.errors import Forbidden, NotFound, Unauthorized
from app.queue import bind_dispatcher
from app.security import ROLE_ADMIN, hash_secret

R = TypeVar("R")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def _end(session: Session, *, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


def _has_work(session: Session) -> bool:
    """Whether ending the session needs the database: an open transaction or unflushed changes."""
    return session.in_transaction() or bool(session.new or session.dirty or session.deleted)


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request: committed when the handler returns, rolled back if it raised.

    Declared with ``scope="function"`` (below) so the commit happens before the response is sent:
    a client that sees 200 can rely on its write being durable. Opening a session does no I/O, so
    it happens here on the event loop; ending it goes to a worker thread only when a transaction is
    still open (a handler that committed in its own thread turn, or never touched the database,
    costs no extra turn).
    """
    state = request.app.state
    session = state.sessionmaker()
    if state.dispatcher is not None:
        bind_dispatcher(session, state.dispatcher)
    try:
        yield session
    except BaseException:
        # Shielded: a request cancelled (client gone) must still give its connection back cleanly.
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(_end, session, commit=False)
        raise
    if _has_work(session):
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(_end, session, commit=True)
    else:
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


# ------------------------------------------------------------------------------ API-key cache

class KeyCache:
    """Principals of recently seen API keys, by key hash, for ``ttl`` seconds.

    Only valid keys are cached (an unknown or revoked key is looked up every time, so a key created
    a moment ago works at once). A key revoked or changed through this process's ORM (``DELETE
    /keys/{id}``) is dropped from every cache in the process at commit (see the session events
    below); one revoked by another process (another api worker or replica, or directly in
    the database) keeps working here for at most ``ttl`` seconds. ``ttl`` 0 turns the cache off.
    """

    def __init__(self, ttl: float, max_size: int = 10_000):
        self.ttl = ttl
        self.max_size = max_size
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()
        # Bumped by clear(): a lookup that read the database before a revocation committed must not
        # put its (stale) answer in the cache after the revocation cleared it.
        self.generation = 0
        _KEY_CACHES.add(self)

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            with self._lock:
                self._entries.pop(digest, None)
            return None
        return entry[0]

    def put(self, digest: str, principal: Principal, generation: int) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return
            if len(self._entries) >= self.max_size:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
                if len(self._entries) >= self.max_size:
                    self._entries.clear()
            self._entries[digest] = (principal, time.monotonic() + self.ttl)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


_KEY_CACHES: weakref.WeakSet[KeyCache] = weakref.WeakSet()
_KEYS_CHANGED = "svp_api_keys_changed"


def clear_key_caches() -> None:
    """Forget every cached API key in this process (after a key is revoked or changed)."""
    for cache in list(_KEY_CACHES):
        cache.clear()


def key_cache(app) -> KeyCache:
    cache = getattr(app.state, "key_cache", None)
    if cache is None:
        cache = app.state.key_cache = KeyCache(app.state.settings.auth_cache_seconds)
    return cache


@event.listens_for(t.ApiKey, "after_update")
@event.listens_for(t.ApiKey, "after_delete")
@event.listens_for(t.Project, "after_delete")  # its scoped keys go with it (ON DELETE CASCADE)
def _api_key_row_changed(_mapper, _connection, target) -> None:
    # Cleared now (at flush) and again at commit: a lookup made in between still read the old row.
    clear_key_caches()
    session = object_session(target)
    if session is not None:
        session.info[_KEYS_CHANGED] = True


@event.listens_for(Session, "do_orm_execute")
def _api_key_statement(state) -> None:
    # Statements (not through loaded objects) that change keys: UPDATE/DELETE on api_key, DELETE on project.
    table = getattr(state.statement, "table", None)
    if (table is t.ApiKey.__table__ and (state.is_update or state.is_delete)) or (
        table is t.Project.__table__ and state.is_delete
    ):
        clear_key_caches()
        state.session.info[_KEYS_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _api_keys_committed(session: Session) -> None:
    if session.info.pop(_KEYS_CHANGED, False):
        clear_key_caches()


@event.listens_for(Session, "after_rollback")
def _api_keys_rolled_back(session: Session) -> None:
    session.info.pop(_KEYS_CHANGED, None)


# ------------------------------------------------------------------------------------- auth

def _presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def _load_principal(sessionmaker, digest: str) -> Principal | None:
    with sessionmaker() as session:
        row = session.execute(
            select(t.ApiKey.id, t.ApiKey.name, t.ApiKey.role, t.ApiKey.project_id, t.ApiKey.revoked_at).where(
                t.ApiKey.key_hash == digest
            )
        ).first()
    if row is None or row.revoked_at is not None:
        return None
    return Principal(key_id=row.id, name=row.name, role=row.role, project_id=row.project_id)


async def authenticate(request: Request, authorization: str | None, x_api_key: str | None) -> Principal:
    """The principal of the presented key (cached, see ``KeyCache``); 401 when missing, unknown or revoked."""
    secret = _presented_key(authorization, x_api_key)
    if not secret:
        raise Unauthorized(
            "an API key is required (Authorization: Bearer <key> or X-API-Key)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    digest = hash_secret(secret)
    cache = key_cache(request.app)
    principal = cache.get(digest)
    if principal is None:
        generation = cache.generation
        # Its own short session: the lookup's connection goes back to the pool before the handler
        # waits for a thread (a request must not hold a connection while queued for a thread).
        principal = await run_in_threadpool(_load_principal, request.app.state.sessionmaker, digest)
        if principal is None:
            raise Unauthorized("unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        cache.put(digest, principal, generation)
    return principal


async def get_principal(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Principal:
    return await authenticate(request, authorization, x_api_key)


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


# ----------------------------------------------------------------------------------- projects

# Built once: constructing the statement per request (as ``session.get`` does on a miss) costs more
# CPU than running it.
_PROJECT_BY_ID = select(t.Project).where(t.Project.id == bindparam("b_project"))


def load_project(session: Session, project_id: int) -> t.Project:
    project = session.scalars(_PROJECT_BY_ID, {"b_project": project_id}).first()
    if project is None:
        raise NotFound(f"project {project_id} does not exist")
    return project


def _lookup_project(session: Session, project_id: int) -> t.Project:
    """Load the project, then end the lookup's read transaction, giving its connection back.

    A request that kept its connection while waiting for the handler's thread could, under load,
    hold every pooled connection while the threads that would finish requests wait for one. Loaded
    objects stay usable (``expire_on_commit=False``); handlers that need a consistent view lock
    what they change.
    """
    project = load_project(session, project_id)
    session.commit()
    return project


async def get_project(
    session: SessionDep, principal: PrincipalDep, project_id: Annotated[int, Path(ge=1, le=MAX_ID)]
) -> t.Project:
    """The project named in the path, after checking the key may see it."""
    principal.check_project(project_id)
    return await run_in_threadpool(_lookup_project, session, project_id)


ProjectDep = Annotated[t.Project, Depends(get_project)]


# Hot-path requests run their database work with at most this many threads at once: fewer than
# the connection pool's 20, so they never open (and close again) overflow connections, and enough
# to keep a GIL-bound process busy while some wait on the database.
HOT_PATH_THREADS = 16


@dataclass(frozen=True)
class ProjectAccess:
    """A project the caller's key may use, for handlers on the annotation hot path (``queries/next``,
    ``labels``): ``await access.run(work)`` opens a session, loads the project, calls
    ``work(session, project)`` and commits (or rolls back and re-raises) in one worker-thread turn,
    with one pooled connection, where a ``SessionDep`` + ``ProjectDep`` handler takes three turns and
    two connection checkouts."""

    project_id: int
    principal: Principal
    state: Any  # the app's state: sessionmaker, dispatcher, settings

    @property
    def settings(self) -> Settings:
        return self.state.settings

    async def run(self, work: Callable[[Session, t.Project], R]) -> R:
        state = self.state
        limiter = getattr(state, "hot_path_limiter", None)
        if limiter is None:
            limiter = state.hot_path_limiter = anyio.CapacityLimiter(HOT_PATH_THREADS)

        def in_thread() -> R:
            session = state.sessionmaker()
            if state.dispatcher is not None:
                bind_dispatcher(session, state.dispatcher)
            try:
                result = work(session, load_project(session, self.project_id))
                session.commit()  # before the response is sent, as SessionDep does
                return result
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()

        return await anyio.to_thread.run_sync(in_thread, limiter=limiter)


async def get_project_access(
    request: Request,
    project_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> ProjectAccess:
    # Authenticates itself (the same check as PrincipalDep) rather than through a sub-dependency:
    # each dependency level costs the framework some work on every request.
    principal = await authenticate(request, authorization, x_api_key)
    principal.check_project(project_id)
    return ProjectAccess(project_id=project_id, principal=principal, state=request.app.state)


ProjectAccessDep = Annotated[ProjectAccess, Depends(get_project_access)]

"""Engine and session factory. One engine per database URL; SQLite gets WAL and foreign keys, PostgreSQL
a pool whose idle connections are checked before reuse."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker


def _configure_sqlite(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the embedded worker write while the api reads; busy_timeout waits instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@lru_cache(maxsize=16)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _configure_sqlite)
        return engine
    engine = create_engine(url, pool_size=20, max_overflow=20, pool_use_lifo=True)
    _ping_idle_connections(engine)
    return engine


# A pooled connection that was in use this recently is handed out without a check; one idle for
# longer is pinged first (SQLAlchemy's ``pool_pre_ping`` pings on every checkout: one more round
# trip per request on the annotation hot path). A database restart closes every connection and
# takes longer than this, so the connections it killed have been idle longer by the time they are
# reused. LIFO reuse keeps the busy connections hot and lets the rest age (and be checked).
PING_AFTER_IDLE_S = 1.0
_IDLE_SINCE = "svp_idle_since"


def _ping_idle_connections(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_connection, record) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()  # just opened: nothing to check

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection, record) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection, record, _proxy) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is not None and time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # any failure to answer: replace the connection
            raise DisconnectionError(f"pooled connection failed its check: {exc}") from exc
        if not alive:
            raise DisconnectionError("pooled connection failed its check")


@lru_cache(maxsize=16)
def get_sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A unit of work for code outside a request (workers, CLI): commit on success, roll back on error."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()

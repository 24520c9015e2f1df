"""The PostgreSQL connection pool of app.db.session: connections in steady use are handed out
without a check, idle ones are pinged first, and a connection the server dropped while idle is
replaced without the caller seeing an error."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from app.db import session as db_session
from tests.conftest import PG_ADMIN_URL, fresh_postgres_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine():
    with fresh_postgres_database("svp_pool") as url:
        # A private engine (not the per-URL cached one), built the way get_engine builds it.
        engine = db_session.get_engine.__wrapped__(url)
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture
def pings(engine, monkeypatch):
    seen = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection):
        seen.append(dbapi_connection)
        return ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return seen


def _backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar()


def _terminate(pid: int) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        # The backend is gone once it no longer shows in pg_stat_activity.
        for _ in range(100):
            with admin.connect() as conn:
                if not conn.execute(text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}).first():
                    return
            time.sleep(0.05)
    finally:
        admin.dispose()


def test_busy_connections_are_not_pinged_idle_ones_are(engine, pings, monkeypatch):
    monkeypatch.setattr(db_session, "PING_AFTER_IDLE_S", 0.3)
    first = _backend_pid(engine)  # a new connection: nothing to check
    for _ in range(5):
        assert _backend_pid(engine) == first
    assert pings == []
    time.sleep(0.4)
    assert _backend_pid(engine) == first
    assert len(pings) == 1


def test_a_connection_dropped_while_idle_is_replaced_quietly(engine, pings, monkeypatch):
    monkeypatch.setattr(db_session, "PING_AFTER_IDLE_S", 0.3)
    old = _backend_pid(engine)
    _terminate(old)  # e.g. a database restart, or an idle-session timeout
    time.sleep(0.4)
    assert _backend_pid(engine) != old  # no error: the check failed, the pool connected anew
    assert len(pings) == 1


def test_within_the_window_a_dropped_connection_fails_once(engine, monkeypatch):
    # The price of not checking every checkout: a connection killed less than PING_AFTER_IDLE_S
    # after its last use fails its next statement, once; the pool then starts over.
    monkeypatch.setattr(db_session, "PING_AFTER_IDLE_S", 60)
    old = _backend_pid(engine)
    _terminate(old)
    with pytest.raises(OperationalError):
        _backend_pid(engine)
    assert _backend_pid(engine) != old

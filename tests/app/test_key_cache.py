"""The API-key cache of app.deps: a valid key is looked up once per few seconds, and revocation
still bites: at once through this process, after the cache time when made elsewhere."""

from __future__ import annotations

import time
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text

from app.db import tables as t
from app.db.base import utcnow
from app.db.session import get_engine, session_scope
from app.deps import KeyCache, Principal
from app.main import create_app
from app.services.keys import revoke_api_key
from tests.app._lifecycle import make_project


@contextmanager
def key_lookups(url: str):
    """Counts the statements that read the api_key table while inside."""
    engine = get_engine(url)
    seen: list[str] = []

    def count(_conn, _cursor, statement, *_):
        if statement.lstrip().upper().startswith("SELECT") and "api_key" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


@contextmanager
def client_with(settings, **changes):
    with TestClient(create_app(settings.model_copy(update=changes))) as client:
        yield client


def _key_id(url: str, headers: dict[str, str]) -> int:
    from app.security import hash_secret

    secret = headers["Authorization"].removeprefix("Bearer ")
    with session_scope(url) as session:
        return session.query(t.ApiKey).filter_by(key_hash=hash_secret(secret)).one().id


def _revoke_elsewhere(url: str, key_id: int) -> None:
    """A revocation this process's ORM does not see: another api process, or SQL by hand."""
    with get_engine(url).begin() as conn:
        conn.execute(text("UPDATE api_key SET revoked_at = :now WHERE id = :id"), {"now": utcnow(), "id": key_id})


def test_a_valid_key_is_looked_up_once_within_the_cache_time(client, settings, make_key):
    headers = make_key("annotator")
    with key_lookups(settings.resolved_database_url) as lookups:
        for _ in range(5):
            assert client.get("/projects", headers=headers).status_code == 200
    assert len(lookups) == 1


def test_unknown_and_revoked_keys_are_never_cached(client, settings, make_key):
    headers = make_key("annotator")
    _revoke_elsewhere(settings.resolved_database_url, _key_id(settings.resolved_database_url, headers))
    with key_lookups(settings.resolved_database_url) as lookups:
        for _ in range(3):
            assert client.get("/projects", headers=headers).status_code == 401
            assert client.get("/projects", headers={"X-API-Key": "svp_nothing"}).status_code == 401
    assert len(lookups) == 6
    # A key created after a failed attempt works at once (no negative caching).
    fresh = make_key("annotator")
    assert client.get("/projects", headers=fresh).status_code == 200


def test_revocation_through_this_process_stops_a_cached_key_at_once(client, settings, make_key, admin_headers):
    url = settings.resolved_database_url
    alice, bob = make_key("annotator", "alice"), make_key("annotator", "bob")
    for headers in (alice, bob):
        assert client.get("/projects", headers=headers).status_code == 200
    # Through the api...
    assert client.delete(f"/keys/{_key_id(url, alice)}", headers=admin_headers).status_code == 200
    assert client.get("/projects", headers=alice).status_code == 401
    # ...or through any session of the process (service code, a CLI command run in-process).
    with session_scope(url) as session:
        revoke_api_key(session, key_id=_key_id(url, bob))
    assert client.get("/projects", headers=bob).status_code == 401


def test_a_rolled_back_revocation_leaves_the_key_working(client, settings, make_key):
    url = settings.resolved_database_url
    headers = make_key("annotator")
    assert client.get("/projects", headers=headers).status_code == 200
    with pytest.raises(RuntimeError):
        with session_scope(url) as session:
            revoke_api_key(session, key_id=_key_id(url, headers))
            session.flush()
            raise RuntimeError("changed my mind")
    assert client.get("/projects", headers=headers).status_code == 200


def test_a_revocation_elsewhere_holds_after_the_cache_time(settings, make_key):
    url = settings.resolved_database_url
    headers = make_key("annotator")
    with client_with(settings, auth_cache_seconds=0.5) as client:
        assert client.get("/projects", headers=headers).status_code == 200
        _revoke_elsewhere(url, _key_id(url, headers))
        # The documented window: this process has not seen the change yet.
        assert client.get("/projects", headers=headers).status_code == 200
        time.sleep(0.6)
        assert client.get("/projects", headers=headers).status_code == 401


def test_no_cache_when_the_cache_time_is_zero(settings, make_key):
    url = settings.resolved_database_url
    headers = make_key("annotator")
    with client_with(settings, auth_cache_seconds=0) as client:
        with key_lookups(url) as lookups:
            for _ in range(3):
                assert client.get("/projects", headers=headers).status_code == 200
        assert len(lookups) == 3
        _revoke_elsewhere(url, _key_id(url, headers))
        assert client.get("/projects", headers=headers).status_code == 401


def test_deleting_a_project_stops_its_scoped_keys_at_once(client, settings, make_key, admin_headers):
    pid, _, _ = make_project(settings.resolved_database_url, pool=4)
    scoped = make_key("annotator", "scoped", pid)
    assert client.get(f"/projects/{pid}", headers=scoped).status_code == 200
    assert client.delete(f"/projects/{pid}", headers=admin_headers).status_code == 204
    # The key went with its project (ON DELETE CASCADE): unknown now, not "project not found".
    response = client.get(f"/projects/{pid}", headers=scoped)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"


def test_key_cache_expiry_races_and_size(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("app.deps.time.monotonic", lambda: now[0])
    cache = KeyCache(ttl=5, max_size=3)
    alice = Principal(key_id=1, name="alice", role="annotator", project_id=None)
    cache.put("a", alice, cache.generation)
    assert cache.get("a") == alice
    now[0] += 4.9
    assert cache.get("a") == alice
    now[0] += 0.2
    assert cache.get("a") is None and len(cache) == 0

    # A lookup that started before a revocation cleared the cache must not put its answer back.
    started = cache.generation
    cache.clear()
    cache.put("a", alice, started)
    assert cache.get("a") is None

    # Bounded: expired entries go first, then everything.
    for n, digest in enumerate("abc"):
        cache.put(digest, alice, cache.generation)
        now[0] += 2 if n == 0 else 0
    now[0] += 3.5  # "a" (put 5.5 s ago) has expired, "b" and "c" have not
    cache.put("d", alice, cache.generation)
    assert {d for d in "abcd" if cache.get(d)} == {"b", "c", "d"}
    cache.put("e", alice, cache.generation)
    assert len(cache) <= 3 and cache.get("e") == alice

    off = KeyCache(ttl=0)
    off.put("a", alice, off.generation)
    assert off.get("a") is None

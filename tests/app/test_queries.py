"""Starting a project (round 0) and leasing its queries: order, renewal, expiry, release, statuses."""

from __future__ import annotations

import threading
from datetime import timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.db import tables as t
from app.db.base import utcnow
from app.db.session import session_scope
from tests.app._lifecycle import assert_error, count, get, make_project, queries_of


@pytest.fixture
def url(settings) -> str:
    return settings.resolved_database_url


def _start(client, pid, headers):
    response = client.post(f"/projects/{pid}/start", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _next(client, pid, headers, **params):
    response = client.get(f"/projects/{pid}/queries/next", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response


def test_start_draws_a_seeded_uniform_sample(client, url, admin_headers):
    pid, pool, _ = make_project(url, pool=50, seed=7, schedule={"initial": 0.2, "rounds": [5], "budget": 30})
    body = _start(client, pid, admin_headers)
    assert body["status"] == "active" and body["current_round"] == 0
    assert body["round"]["index"] == 0 and body["round"]["status"] == "open"
    assert body["round"]["strategy"] == "random" and body["round"]["size"] == 10

    # The draw is numpy's seeded permutation over the sorted pool ids, ranked in draw order.
    expected = [pool[i] for i in np.random.default_rng(7).permutation(50)[:10]]
    queries = queries_of(url, pid, 0)
    assert [q.item_id for q in queries] == expected
    assert [q.rank for q in queries] == list(range(10))
    assert all(q.score is None and q.leased_to is None and q.labeled_at is None for q in queries)

    # Same pool size and seed: the same positions; another seed: another sample.
    same, same_pool, _ = make_project(url, pool=50, seed=7, schedule={"initial": 0.2, "rounds": [5], "budget": 30})
    other, other_pool, _ = make_project(url, pool=50, seed=8, schedule={"initial": 0.2, "rounds": [5], "budget": 30})
    _start(client, same, admin_headers)
    _start(client, other, admin_headers)
    positions = lambda p, ids: [ids.index(q.item_id) for q in queries_of(url, p, 0)]  # noqa: E731
    assert positions(same, same_pool) == positions(pid, pool)
    assert positions(other, other_pool) != positions(pid, pool)

    with session_scope(url) as session:
        project = session.get(t.Project, pid)
        assert (project.status, project.current_round) == ("active", 0)
        round0 = session.query(t.Round).filter_by(project_id=pid).one()
        assert round0.opened_at is not None and round0.labeled_at_start == 0


def test_second_start_and_bad_starts_are_refused(client, url, admin_headers, make_key):
    pid, _, _ = make_project(url, pool=10)
    _start(client, pid, admin_headers)
    assert_error(client.post(f"/projects/{pid}/start", headers=admin_headers), 409, "conflict", "already started")
    assert count(url, t.Round, t.Round.project_id == pid) == 1
    assert count(url, t.Query, t.Query.project_id == pid) == 5

    tiny, _, _ = make_project(url, pool=1, test=3)
    assert_error(client.post(f"/projects/{tiny}/start", headers=admin_headers), 409, "conflict", "at least 2")
    assert count(url, t.Round, t.Round.project_id == tiny) == 0
    assert get(url, t.Project, tiny).status == "draft"

    annotator = make_key("annotator", "ann", pid)
    assert_error(client.post(f"/projects/{tiny}/start", headers=annotator), 403, "forbidden")
    assert_error(client.post("/projects/999999/start", headers=admin_headers), 404, "not_found")


def test_next_leases_lowest_rank_first_and_returns_own_leases(client, url, admin_headers, make_key):
    pid, _, _ = make_project(url, pool=30, schedule={"initial": 10, "rounds": [5], "budget": 20})
    _start(client, pid, admin_headers)
    order = [q.item_id for q in queries_of(url, pid, 0)]
    alice, bob = make_key("annotator", "alice", pid), make_key("annotator", "bob", pid)

    first = _next(client, pid, alice, limit=3).json()
    assert first["status"] == "ok" and first["round"] == 0
    assert [i["item_id"] for i in first["items"]] == order[:3]
    assert [i["rank"] for i in first["items"]] == [0, 1, 2]
    item = first["items"][0]
    assert item["external_id"].startswith("pool-") and item["text"].startswith("pool text")
    assert item["content_url"] == f"/projects/{pid}/items/{item['item_id']}/content"

    # A retry returns the same items, with the lease renewed.
    again = _next(client, pid, alice, limit=3).json()
    assert [i["item_id"] for i in again["items"]] == order[:3]
    assert again["items"][0]["lease_expires_at"] >= first["items"][0]["lease_expires_at"]

    assert [i["item_id"] for i in _next(client, pid, bob, limit=2).json()["items"]] == order[3:5]
    # Alice asks for more: hers first, then the next free ranks.
    assert [i["item_id"] for i in _next(client, pid, alice, limit=5).json()["items"]] == order[:3] + order[5:7]
    for q in queries_of(url, pid, 0):
        expected = "alice" if q.item_id in order[:3] + order[5:7] else "bob" if q.item_id in order[3:5] else None
        assert q.leased_to == expected


def test_lease_length_and_expiry(client, url, admin_headers, make_key):
    pid, _, _ = make_project(url, pool=10, lease_seconds=120, schedule={"initial": 3, "rounds": [2], "budget": 6})
    _start(client, pid, admin_headers)
    alice, bob = make_key("annotator", "alice", pid), make_key("annotator", "bob", pid)

    before = utcnow()
    held = _next(client, pid, alice, limit=2).json()["items"]
    expires = [q.lease_expires_at for q in queries_of(url, pid, 0) if q.leased_to == "alice"]
    assert all(timedelta(seconds=119) <= e - before <= timedelta(seconds=130) for e in expires)  # project's 120 s
    _next(client, pid, bob, limit=1, lease_seconds=5)
    bob_expiry = [q.lease_expires_at for q in queries_of(url, pid, 0) if q.leased_to == "bob"][0]
    assert bob_expiry - before <= timedelta(seconds=10)

    # Nothing free for Bob while Alice's leases are live...
    assert _next(client, pid, bob, limit=3).json()["items"][0]["rank"] == 2
    # ...then Alice's leases expire and Bob gets her items, lowest rank first.
    with session_scope(url) as session:
        session.execute(
            update(t.Query).where(t.Query.leased_to == "alice").values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    got = _next(client, pid, bob, limit=3).json()["items"]
    assert [i["rank"] for i in got] == [0, 1, 2]
    assert {i["item_id"] for i in got} >= {i["item_id"] for i in held}
    # Alice's expired leases are not hers any more.
    assert _next(client, pid, alice, limit=2).json()["status"] == "all_leased"

    for bad in ({"limit": 0}, {"limit": 101}, {"lease_seconds": 0}, {"limit": "x"}):
        assert_error(client.get(f"/projects/{pid}/queries/next", headers=alice, params=bad), 422, "validation_error")


def test_release_frees_only_the_callers_leases(client, url, admin_headers, make_key):
    pid, _, _ = make_project(url, pool=10, schedule={"initial": 4, "rounds": [2], "budget": 8})
    _start(client, pid, admin_headers)
    alice, bob = make_key("annotator", "alice", pid), make_key("annotator", "bob", pid)
    mine = [i["item_id"] for i in _next(client, pid, alice, limit=2).json()["items"]]
    bobs = [i["item_id"] for i in _next(client, pid, bob, limit=1).json()["items"]]

    response = client.post(f"/projects/{pid}/queries/release", headers=alice, json={"item_ids": [mine[0], bobs[0], 987654]})
    assert response.status_code == 200, response.text
    assert response.json() == {"released": [mine[0]]}
    leases = {q.item_id: q.leased_to for q in queries_of(url, pid, 0)}
    assert leases[mine[0]] is None and leases[mine[1]] == "alice" and leases[bobs[0]] == "bob"
    # Bob keeps his item and gets the released one (rank 0), the lowest free rank.
    assert [i["item_id"] for i in _next(client, pid, bob, limit=2).json()["items"]] == [mine[0], bobs[0]]
    assert_error(client.post(f"/projects/{pid}/queries/release", headers=alice, json={"item_ids": []}), 422, "validation_error")


def test_statuses_when_nothing_can_be_handed_out(client, url, admin_headers, make_key, settings):
    pid, _, _ = make_project(url, pool=10, schedule={"initial": 2, "rounds": [2], "budget": 6})
    alice, bob = make_key("annotator", "alice", pid), make_key("annotator", "bob", pid)

    response = _next(client, pid, alice)
    assert response.json()["status"] == "not_started" and response.json()["items"] == []
    assert response.headers["Retry-After"] == str(settings.retry_after_seconds)

    _start(client, pid, admin_headers)
    _next(client, pid, alice, limit=2)
    response = _next(client, pid, bob)
    assert response.json()["status"] == "all_leased" and response.json()["items"] == []
    assert response.headers["Retry-After"] == str(settings.retry_after_seconds)
    assert response.json()["retry_after"] == settings.retry_after_seconds

    for status, expected_reason in (("training_target", "training_target"), ("completed", "completed")):
        with session_scope(url) as session:
            session.get(t.Project, pid).status = status
        response = _next(client, pid, bob)
        assert response.json()["status"] == expected_reason and response.json()["items"] == []
        assert ("Retry-After" in response.headers) == (status != "completed")

    other, _, _ = make_project(url, pool=4)
    scoped = make_key("annotator", "scoped", other)
    assert_error(client.get(f"/projects/{pid}/queries/next", headers=scoped), 403, "forbidden")
    assert_error(client.get(f"/projects/{pid}/queries/next"), 401, "unauthorized")


def test_concurrent_callers_never_share_an_item(app, url, admin_headers, make_key):
    """Threads through the whole stack on both databases: SKIP LOCKED on PostgreSQL, the write lock on SQLite."""
    pid, _, _ = make_project(url, pool=60, schedule={"initial": 40, "rounds": [5], "budget": 50})
    keys = [make_key("annotator", f"ann-{n}", pid) for n in range(8)]
    with TestClient(app) as client:
        _start(client, pid, admin_headers)
        barrier = threading.Barrier(len(keys))
        got: dict[int, list[int]] = {}
        errors: list[str] = []

        def work(n: int) -> None:
            try:
                barrier.wait(timeout=30)
                for _ in range(2):  # the second call returns the same items (renewal)
                    response = client.get(f"/projects/{pid}/queries/next", headers=keys[n], params={"limit": 4})
                    assert response.status_code == 200, response.text
                    got.setdefault(n, []).append(tuple(i["item_id"] for i in response.json()["items"]))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(repr(exc))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(len(keys))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors
    for calls in got.values():
        assert len(calls[0]) == 4 and calls[0] == calls[1]
    held = [item for calls in got.values() for item in calls[0]]
    assert len(held) == len(set(held)) == 32
    leases = {q.item_id: q.leased_to for q in queries_of(url, pid, 0)}
    for n, calls in got.items():
        assert all(leases[item] == f"ann-{n}" for item in calls[0])

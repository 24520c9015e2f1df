"""Labels: what is accepted, idempotency, history, all-or-nothing bulk, retraction, every bad path."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app.db import tables as t
from app.db.session import session_scope
from tests.app._lifecycle import assert_error, count, get, make_project, queries_of


@pytest.fixture
def url(settings) -> str:
    return settings.resolved_database_url


@pytest.fixture
def started(client, url, admin_headers, make_key):
    """A started project (round 0 of 5 items out of 20), Alice's key, and round 0's item ids by rank."""
    pid, pool, tests = make_project(url, pool=20, test=3, schedule={"initial": 5, "rounds": [5], "budget": 15})
    assert client.post(f"/projects/{pid}/start", headers=admin_headers).status_code == 200
    alice = make_key("annotator", "alice", pid)
    round0 = [q.item_id for q in queries_of(url, pid, 0)]
    return pid, pool, tests, alice, round0


def _annotations(url, pid):
    with session_scope(url) as session:
        return list(session.scalars(select(t.Annotation).where(t.Annotation.project_id == pid).order_by(t.Annotation.id)))


def test_a_label_updates_item_query_and_history(client, url, started):
    pid, _, _, alice, round0 = started
    lease = client.get(f"/projects/{pid}/queries/next", headers=alice, params={"limit": 2}).json()["items"]
    item_id = lease[0]["item_id"]

    response = client.post(f"/projects/{pid}/labels", headers=alice, json={"item_id": item_id, "label": "cat", "meta": {"s": 1.5}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["item_id"] == item_id and body["label"] == "cat" and body["annotator"] == "alice"
    assert body["round_index"] == 0 and body["replayed"] is False
    assert body["project_status"] == "active" and body["current_round"] == 0

    item = get(url, t.Item, item_id)
    assert item.label == "cat" and item.labeled_at is not None and item.label_round == 0
    query = next(q for q in queries_of(url, pid, 0) if q.item_id == item_id)
    assert query.labeled_at is not None and query.leased_to is None and query.lease_expires_at is None
    [annotation] = _annotations(url, pid)
    assert (annotation.item_id, annotation.label, annotation.round_index, annotation.meta) == (item_id, "cat", 0, {"s": 1.5})
    # The labeled item is never handed out again; the other lease is kept.
    again = client.get(f"/projects/{pid}/queries/next", headers=alice, params={"limit": 5}).json()["items"]
    assert item_id not in [i["item_id"] for i in again] and lease[1]["item_id"] in [i["item_id"] for i in again]

    # By the client's id too.
    external = get(url, t.Item, round0[4]).external_id
    response = client.post(f"/projects/{pid}/labels", headers=alice, json={"external_id": external, "label": "dog"})
    assert response.status_code == 200 and response.json()["item_id"] == round0[4]


def test_idempotency_key_replays_without_a_new_row(client, url, started):
    pid, _, _, alice, round0 = started
    headers = {**alice, "Idempotency-Key": "req-1"}
    first = client.post(f"/projects/{pid}/labels", headers=headers, json={"item_id": round0[0], "label": "cat"})
    second = client.post(f"/projects/{pid}/labels", headers=headers, json={"item_id": round0[0], "label": "cat"})
    assert first.status_code == second.status_code == 200
    assert second.json()["annotation_id"] == first.json()["annotation_id"] and second.json()["replayed"] is True
    assert len(_annotations(url, pid)) == 1

    # The same key for another request is a conflict and writes nothing.
    body = assert_error(
        client.post(f"/projects/{pid}/labels", headers=headers, json={"item_id": round0[1], "label": "dog"}), 409, "conflict", "req-1"
    )
    assert "different" in body["error"]["message"]
    assert len(_annotations(url, pid)) == 1 and get(url, t.Item, round0[1]).label is None


def test_same_annotator_repeat_is_a_replay_and_a_change_appends_history(client, url, started, make_key):
    pid, _, _, alice, round0 = started
    bob = make_key("annotator", "bob", pid)
    label = lambda headers, value: client.post(f"/projects/{pid}/labels", headers=headers, json={"item_id": round0[0], "label": value})  # noqa: E731

    first = label(alice, "cat").json()
    repeat = label(alice, "cat").json()
    assert repeat["replayed"] is True and repeat["annotation_id"] == first["annotation_id"]
    assert len(_annotations(url, pid)) == 1

    changed = label(alice, "dog").json()
    assert changed["replayed"] is False and changed["round_index"] == 0
    assert get(url, t.Item, round0[0]).label == "dog"
    other = label(bob, "dog").json()  # another annotator agreeing is recorded too
    assert other["replayed"] is False

    history = client.get(f"/projects/{pid}/items/{round0[0]}/labels", headers=alice)
    assert history.status_code == 200
    assert [(h["annotator"], h["label"]) for h in history.json()] == [("bob", "dog"), ("alice", "dog"), ("alice", "cat")]
    # Relabeling counts once toward the budget.
    assert count(url, t.Item, t.Item.project_id == pid, t.Item.label.is_not(None), t.Item.split == "pool") == 1


def _nothing_written(url, pid, before):
    assert len(_annotations(url, pid)) == before
    assert count(url, t.Item, t.Item.project_id == pid, t.Item.split == "pool", t.Item.label.is_not(None)) == before


def test_bad_single_labels(client, url, started, admin_headers):
    pid, _, tests, alice, round0 = started
    other, other_pool, _ = make_project(url, pool=4)
    post = lambda body, headers=alice: client.post(f"/projects/{pid}/labels", headers=headers, json=body)  # noqa: E731

    body = assert_error(post({"item_id": round0[0], "label": "bird"}), 422, "unprocessable", "bird", "classes")
    assert body["error"]["details"][0]["classes"] == ["cat", "dog"]
    assert_error(post({"item_id": 99999999, "label": "cat"}), 404, "not_found", "99999999")
    assert_error(post({"external_id": "nope", "label": "cat"}), 404, "not_found", "nope")
    assert_error(post({"item_id": other_pool[0], "label": "cat"}), 404, "not_found", str(other_pool[0]))
    assert_error(post({"item_id": tests[0], "label": "cat"}), 422, "unprocessable", "test split")
    assert_error(post({"label": "cat"}), 422, "validation_error", "exactly one")
    assert_error(post({"item_id": round0[0], "external_id": "pool-1", "label": "cat"}), 422, "validation_error")
    assert_error(post({"item_id": round0[0], "label": ""}), 422, "validation_error")
    assert_error(post({"item_id": round0[0], "label": "cat", "extra": 1}), 422, "validation_error", "extra")
    _nothing_written(url, pid, 0)
    assert get(url, t.Item, tests[0]).label == "cat"  # ground truth untouched

    # A draft project takes no labels; neither does a completed one.
    assert_error(client.post(f"/projects/{other}/labels", headers=admin_headers, json={"item_id": other_pool[0], "label": "cat"}), 409, "conflict", "not been started")
    assert count(url, t.Annotation, t.Annotation.project_id == other) == 0
    with session_scope(url) as session:
        session.get(t.Project, pid).status = "completed"
    assert_error(post({"item_id": round0[0], "label": "cat"}), 409, "conflict", "completed")
    _nothing_written(url, pid, 0)


def test_bulk_is_all_or_nothing(client, url, started):
    pid, _, tests, alice, round0 = started
    bad = [
        {"item_id": round0[0], "label": "cat"},
        {"item_id": round0[1], "label": "bird"},
        {"item_id": 88888888, "label": "cat"},
        {"item_id": tests[0], "label": "dog"},
        {"external_id": "pool-missing", "label": "dog"},
    ]
    body = assert_error(client.post(f"/projects/{pid}/labels/bulk", headers=alice, json={"labels": bad}), 422, "unprocessable", "4 of 5")
    assert [(d["index"], d["code"]) for d in body["error"]["details"]] == [
        (1, "unknown_class"), (2, "not_found"), (3, "test_item"), (4, "not_found"),
    ]
    _nothing_written(url, pid, 0)
    assert all(q.labeled_at is None for q in queries_of(url, pid, 0))

    good = [
        {"item_id": round0[0], "label": "cat", "idempotency_key": "b-0"},
        {"item_id": round0[1], "label": "dog", "idempotency_key": "b-1"},
        {"external_id": get(url, t.Item, round0[2]).external_id, "label": "dog"},
    ]
    first = client.post(f"/projects/{pid}/labels/bulk", headers=alice, json={"labels": good})
    assert first.status_code == 200, first.text
    assert [r["replayed"] for r in first.json()["labels"]] == [False, False, False]
    assert [r["item_id"] for r in first.json()["labels"]] == round0[:3]
    replay = client.post(f"/projects/{pid}/labels/bulk", headers=alice, json={"labels": good})
    assert [r["replayed"] for r in replay.json()["labels"]] == [True, True, True]
    assert [r["annotation_id"] for r in replay.json()["labels"]] == [r["annotation_id"] for r in first.json()["labels"]]
    _nothing_written(url, pid, 3)
    assert_error(client.post(f"/projects/{pid}/labels/bulk", headers=alice, json={"labels": []}), 422, "validation_error")

    # One key twice in a request: the same entry is written once; a different one is a conflict
    # that rolls the whole request back.
    twice = [{"item_id": round0[3], "label": "cat", "idempotency_key": "t"}] * 2
    response = client.post(f"/projects/{pid}/labels/bulk", headers=alice, json={"labels": twice})
    assert [r["replayed"] for r in response.json()["labels"]] == [False, True]
    _nothing_written(url, pid, 4)
    clash = [{"item_id": round0[4], "label": "cat", "idempotency_key": "u"}, {"item_id": round0[4], "label": "dog", "idempotency_key": "u"}]
    assert_error(client.post(f"/projects/{pid}/labels/bulk", headers=alice, json={"labels": clash}), 409, "conflict", "'u'")
    _nothing_written(url, pid, 4)


def test_retraction_reopens_the_query(client, url, started, admin_headers):
    pid, _, tests, alice, round0 = started
    client.get(f"/projects/{pid}/queries/next", headers=alice, params={"limit": 1})
    assert client.post(f"/projects/{pid}/labels", headers=alice, json={"item_id": round0[0], "label": "cat"}).status_code == 200

    assert_error(client.delete(f"/projects/{pid}/labels/{round0[0]}", headers=alice), 403, "forbidden")
    response = client.delete(f"/projects/{pid}/labels/{round0[0]}", headers=admin_headers)
    assert response.status_code == 204, response.text
    item = get(url, t.Item, round0[0])
    assert item.label is None and item.labeled_at is None and item.label_round is None
    query = queries_of(url, pid, 0)[0]
    assert query.item_id == round0[0] and query.labeled_at is None
    history = client.get(f"/projects/{pid}/items/{round0[0]}/labels", headers=alice).json()
    assert [(h["label"], h["annotator"]) for h in history] == [(None, "admin"), ("cat", "alice")]
    # It is handed out again, first (rank 0).
    assert client.get(f"/projects/{pid}/queries/next", headers=alice).json()["items"][0]["item_id"] == round0[0]

    assert_error(client.delete(f"/projects/{pid}/labels/{round0[0]}", headers=admin_headers), 409, "conflict", "no label")
    assert_error(client.delete(f"/projects/{pid}/labels/{tests[0]}", headers=admin_headers), 422, "unprocessable", "test")
    assert_error(client.delete(f"/projects/{pid}/labels/77777777", headers=admin_headers), 404, "not_found")
    assert len(_annotations(url, pid)) == 2


def test_labels_outside_the_round_count_toward_the_budget(client, url, started):
    pid, pool, _, alice, round0 = started
    outside = next(i for i in pool if i not in round0)
    response = client.post(f"/projects/{pid}/labels", headers=alice, json={"item_id": outside, "label": "dog"})
    assert response.status_code == 200 and response.json()["round_index"] is None
    assert get(url, t.Item, outside).label_round is None
    assert count(url, t.Item, t.Item.project_id == pid, t.Item.label.is_not(None)) == 1 + 3  # 3 test items
    assert all(q.labeled_at is None for q in queries_of(url, pid, 0))


def test_history_of_another_projects_item_is_not_found(client, url, started):
    pid, _, _, alice, _ = started
    _, other_pool, _ = make_project(url, pool=3)
    assert_error(client.get(f"/projects/{pid}/items/{other_pool[0]}/labels", headers=alice), 404, "not_found")


def test_ids_beyond_the_column_range_are_422_not_500(client, url, started, admin_headers):
    pid, _, _, alice, _ = started
    huge = 2**40
    assert_error(client.post(f"/projects/{pid}/labels", headers=alice, json={"item_id": huge, "label": "cat"}), 422, "validation_error")
    assert_error(client.post(f"/projects/{pid}/labels/bulk", headers=alice, json={"labels": [{"item_id": huge, "label": "cat"}]}), 422, "validation_error")
    assert_error(client.post(f"/projects/{pid}/queries/release", headers=alice, json={"item_ids": [huge]}), 422, "validation_error")
    assert_error(client.delete(f"/projects/{pid}/labels/{huge}", headers=admin_headers), 422, "validation_error")
    assert_error(client.get(f"/projects/{pid}/items/{huge}/labels", headers=alice), 422, "validation_error")
    assert_error(client.get(f"/projects/{huge}/queries/next", headers=admin_headers), 422, "validation_error")
    _nothing_written(url, pid, 0)


@pytest.mark.parametrize(
    "entry",
    [
        {"external_id": "pool\x00-1", "label": "cat"},
        {"item_id": 1, "label": "cat", "meta": {"note": "a\x00b"}},
        {"item_id": 1, "label": "cat", "meta": {"x": float("nan")}},
        {"item_id": 1, "label": "ca\ud800t"},
        {"item_id": 1, "label": "cat", "idempotency_key": "k\x00"},
    ],
)
def test_values_the_database_cannot_store_are_422(client, url, started, entry):
    pid, _, _, alice, _ = started
    body = json.dumps({"labels": [entry]}, allow_nan=True).encode()
    response = client.post(f"/projects/{pid}/labels/bulk", headers={**alice, "Content-Type": "application/json"}, content=body)
    assert_error(response, 422, "validation_error")
    _nothing_written(url, pid, 0)

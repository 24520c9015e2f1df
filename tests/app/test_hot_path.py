"""The annotation hot path (``queries/next``, ``labels``, ``labels/bulk``): a bounded number of
statements per request whatever the page size, writes that land exactly as the ORM would have
written them, the label counter, and rollback on error."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from sqlalchemy import event, select

from app.db import tables as t
from app.db.session import get_engine, session_scope
from tests.app._lifecycle import assert_error, make_project, queries_of
from tests.deploy.test_observability import scrape, value


@pytest.fixture
def url(settings) -> str:
    return settings.resolved_database_url


@pytest.fixture
def started(client, url, admin_headers, make_key):
    """A started project whose round 0 holds 60 of its 80 pool items, and Alice's key."""
    pid, pool, _ = make_project(url, pool=80, schedule={"initial": 60, "rounds": [10], "budget": 79})
    assert client.post(f"/projects/{pid}/start", headers=admin_headers).status_code == 200
    return pid, pool, make_key("annotator", "alice", pid)


@contextmanager
def statements(url: str):
    """The SQL statements run (each executemany counted once) while inside; no BEGIN/COMMIT."""
    engine = get_engine(url)
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_):
        if statement.lstrip().split(None, 1)[0].upper() in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _lease(client, pid, headers, limit):
    response = client.get(f"/projects/{pid}/queries/next", headers=headers, params={"limit": limit})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def _bulk(client, pid, headers, items, label="cat"):
    body = {"labels": [{"item_id": i["item_id"], "label": label} for i in items]}
    response = client.post(f"/projects/{pid}/labels/bulk", headers=headers, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_statements_per_request_do_not_grow_with_the_page(client, url, started):
    pid, _, alice = started
    client.get("/projects", headers=alice)  # the key's lookup is cached from here on
    counts = {}
    for limit in (1, 2, 20):
        with statements(url) as leased:
            items = _lease(client, pid, alice, limit)
        with statements(url) as labeled:
            body = _bulk(client, pid, alice, items)
        assert len(items) == limit and [r["replayed"] for r in body["labels"]] == [False] * limit
        counts[limit] = (len(leased), len(labeled))
    assert counts[1][0] == counts[2][0] == counts[20][0], counts
    if url.startswith("postgresql"):
        assert counts[1][1] == counts[2][1] == counts[20][1], counts
    else:
        # SQLite returns inserted ids in order only row by row: one INSERT per annotation.
        assert counts[20][1] - counts[1][1] == 19, counts
    # next: the project and one lease statement on PostgreSQL (+ a check of a connection idle for a
    # while); on SQLite the caller's own leases, free ones and their items separately. labels: the
    # project, the items, the queries, the annotations, the items' mirror, the round probe.
    postgres = url.startswith("postgresql")
    assert counts[1][0] <= (3 if postgres else 4) and counts[1][1] <= (7 if postgres else 6), counts


def test_writes_land_as_before_and_the_response_matches(client, url, started):
    pid, _, alice = started
    items = _lease(client, pid, alice, 3)
    body = _bulk(client, pid, alice, items, "dog")
    ids = [i["item_id"] for i in items]
    with session_scope(url) as session:
        annotations = {a.item_id: a for a in session.scalars(select(t.Annotation).where(t.Annotation.project_id == pid))}
        stored = {i.id: i for i in session.scalars(select(t.Item).where(t.Item.id.in_(ids)))}
    assert sorted(annotations) == sorted(ids)
    for entry in body["labels"]:
        a, item = annotations[entry["item_id"]], stored[entry["item_id"]]
        assert entry["annotation_id"] == a.id and entry["external_id"] == item.external_id
        assert (a.label, a.annotator, a.round_index, a.meta) == ("dog", "alice", 0, {})
        assert (item.label, item.label_round, item.labeled_at) == ("dog", 0, a.created_at)
    queries = {q.item_id: q for q in queries_of(url, pid, 0)}
    assert all(queries[i].labeled_at is not None and queries[i].leased_to is None for i in ids)

    # The same item twice in one request, two labels: two history rows, the last one is effective.
    item = _lease(client, pid, alice, 1)[0]
    body = client.post(f"/projects/{pid}/labels/bulk", headers=alice, json={"labels": [
        {"item_id": item["item_id"], "label": "cat"}, {"item_id": item["item_id"], "label": "dog"},
        {"item_id": item["item_id"], "label": "dog"},  # a repeat of the line above: a replay
    ]}).json()
    assert [(r["label"], r["replayed"]) for r in body["labels"]] == [("cat", False), ("dog", False), ("dog", True)]
    assert body["labels"][2]["annotation_id"] == body["labels"][1]["annotation_id"]
    with session_scope(url) as session:
        assert session.get(t.Item, item["item_id"]).label == "dog"
        history = session.scalars(select(t.Annotation.label).where(t.Annotation.item_id == item["item_id"])
                                  .order_by(t.Annotation.id)).all()
    assert history == ["cat", "dog"]


def test_the_label_counter_counts_labels_from_the_api(client, url, started):
    pid, _, alice = started
    before = value(scrape(client), "svp_labels_total")
    items = _lease(client, pid, alice, 4)
    _bulk(client, pid, alice, items[:3])
    assert client.post(f"/projects/{pid}/labels", headers=alice,
                       json={"item_id": items[3]["item_id"], "label": "cat"}).status_code == 200
    _bulk(client, pid, alice, items[:1])  # a replay writes nothing and counts nothing
    # A request that fails after its annotations were inserted counts nothing either.
    bad = [{"item_id": items[0]["item_id"], "label": "dog", "idempotency_key": "k"},
           {"item_id": items[1]["item_id"], "label": "dog", "idempotency_key": "k"}]
    assert_error(client.post(f"/projects/{pid}/labels/bulk", headers=alice, json={"labels": bad}), 409, "conflict")
    assert value(scrape(client), "svp_labels_total") - before == 4


def test_the_last_label_of_a_round_still_closes_it(client, url, admin_headers, make_key):
    pid, _, _ = make_project(url, pool=10, schedule={"initial": 4, "rounds": [2], "budget": 8})
    assert client.post(f"/projects/{pid}/start", headers=admin_headers).status_code == 200
    alice = make_key("annotator", "alice", pid)
    items = _lease(client, pid, alice, 4)
    body = _bulk(client, pid, alice, items[:3])
    assert (body["project_status"], body["current_round"]) == ("active", 0)
    last = client.post(f"/projects/{pid}/labels", headers=alice, json={"item_id": items[3]["item_id"], "label": "cat"})
    assert last.status_code == 200
    # The response reflects what the label set off: round 0 complete, round 1 being selected.
    assert (last.json()["project_status"], last.json()["current_round"]) == ("active", 1)
    with session_scope(url) as session:
        rounds = session.scalars(select(t.Round).where(t.Round.project_id == pid).order_by(t.Round.index)).all()
        jobs = session.scalars(select(t.Job).where(t.Job.project_id == pid)).all()
    assert [(r.index, r.status) for r in rounds] == [(0, t.ROUND_COMPLETED), (1, t.ROUND_SELECTING)]
    assert [j.type for j in jobs] == [t.JOB_SELECT_ROUND]
    nothing = client.get(f"/projects/{pid}/queries/next", headers=alice).json()
    assert (nothing["items"], nothing["status"]) == ([], "selecting")

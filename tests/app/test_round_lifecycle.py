"""The round lifecycle: a completed round queues exactly one selection, open_round publishes once,
the budget queues the target, admins advance early, and racing annotators make one next round."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import tables as t
from app.db.session import session_scope
from app.errors import Conflict, NotFound, Unprocessable
from app.services.rounds import open_round
from tests.app._lifecycle import assert_error, count, get, make_project, queries_of


@pytest.fixture
def url(settings) -> str:
    return settings.resolved_database_url


def _start(client, pid, admin_headers):
    assert client.post(f"/projects/{pid}/start", headers=admin_headers).status_code == 200


def _label_all(client, pid, headers, item_ids, label="cat"):
    response = client.post(
        f"/projects/{pid}/labels/bulk", headers=headers, json={"labels": [{"item_id": i, "label": label} for i in item_ids]}
    )
    assert response.status_code == 200, response.text
    return response.json()


def _jobs(url, pid):
    with session_scope(url) as session:
        return list(session.scalars(select(t.Job).where(t.Job.project_id == pid).order_by(t.Job.id)))


def _rounds(url, pid):
    with session_scope(url) as session:
        return list(session.scalars(select(t.Round).where(t.Round.project_id == pid).order_by(t.Round.index)))


def _publish(url, pid, index, picks, **kwargs):
    with session_scope(url) as session:
        return open_round(
            session, project_id=pid, round_index=index, picks=picks,
            timings=kwargs.get("timings", {}), metrics=kwargs.get("metrics", {}), selector=kwargs.get("selector", {}),
        ).id


def test_completing_round_0_queues_one_selection(client, url, admin_headers, make_key, settings):
    pid, _, _ = make_project(url, pool=20, schedule={"initial": 4, "rounds": [3], "budget": 12}, strategy="entropy")
    _start(client, pid, admin_headers)
    alice = make_key("annotator", "alice", pid)
    round0 = [q.item_id for q in queries_of(url, pid, 0)]

    body = _label_all(client, pid, alice, round0[:3])
    assert body["current_round"] == 0 and len(_rounds(url, pid)) == 1 and _jobs(url, pid) == []
    body = _label_all(client, pid, alice, round0[3:])
    assert body["current_round"] == 1 and body["project_status"] == "active"

    first, second = _rounds(url, pid)
    assert first.status == "completed" and first.finished_at is not None
    assert (second.index, second.status, second.strategy, second.labeled_at_start, second.size) == (1, "selecting", "entropy", 4, 3)
    [job] = _jobs(url, pid)
    assert (job.type, job.status, job.params, job.dedup_key) == ("select_round", "queued", {"round_index": 1}, f"select_round:{pid}:1")
    assert second.job_id == job.id and get(url, t.Project, pid).current_round == 1

    # A late relabel of a round-0 item changes nothing in the lifecycle.
    _label_all(client, pid, alice, round0[:1], label="dog")
    assert len(_rounds(url, pid)) == 2 and len(_jobs(url, pid)) == 1

    response = client.get(f"/projects/{pid}/queries/next", headers=alice)
    assert response.json()["status"] == "selecting" and response.json()["items"] == []
    assert response.json()["round"] == 1 and response.headers["Retry-After"] == str(settings.retry_after_seconds)


def test_open_round_publishes_once(client, url, admin_headers, make_key):
    pid, pool, _ = make_project(url, pool=20, schedule={"initial": 4, "rounds": [3], "budget": 12})
    _start(client, pid, admin_headers)
    alice = make_key("annotator", "alice", pid)
    round0 = [q.item_id for q in queries_of(url, pid, 0)]
    _label_all(client, pid, alice, round0)
    unlabeled = [i for i in pool if i not in round0]
    picks = [(unlabeled[5], 0.9), (unlabeled[1], 0.8), (unlabeled[7], 0.7)]

    with pytest.raises(NotFound):
        _publish(url, pid, 2, picks)
    with pytest.raises(Unprocessable):
        _publish(url, pid, 1, [(unlabeled[0], 0.5), (unlabeled[0], 0.4)])
    with pytest.raises(Unprocessable):
        _publish(url, pid, 1, [(unlabeled[0], 0.5), (999999, 0.4)])
    assert count(url, t.Query, t.Query.round_index == 1, t.Query.project_id == pid) == 0

    _publish(url, pid, 1, picks, timings={"train_s": 1.5, "total_s": 2.0}, metrics={"proxy_accuracy": 0.5}, selector={"arch": "fasttext"})
    round1 = _rounds(url, pid)[1]
    assert round1.status == "open" and round1.opened_at is not None and round1.size == 3
    assert (round1.train_s, round1.total_s, round1.metrics, round1.selector) == (1.5, 2.0, {"proxy_accuracy": 0.5}, {"arch": "fasttext"})
    assert [(q.item_id, q.rank, q.score) for q in queries_of(url, pid, 1)] == [(i, r, s) for r, (i, s) in enumerate(picks)]

    # A re-delivered job cannot publish again.
    with pytest.raises(Conflict):
        _publish(url, pid, 1, picks)
    assert count(url, t.Query, t.Query.round_index == 1, t.Query.project_id == pid) == 3
    items = client.get(f"/projects/{pid}/queries/next", headers=alice, params={"limit": 5}).json()["items"]
    assert [i["item_id"] for i in items] == [p[0] for p in picks] and [i["score"] for i in items] == [0.9, 0.8, 0.7]
    assert all(i["text"] for i in items)


def test_open_round_skips_items_labeled_meanwhile(client, url, admin_headers, make_key):
    pid, pool, _ = make_project(url, pool=20, schedule={"initial": 2, "rounds": [2], "budget": 10})
    _start(client, pid, admin_headers)
    alice = make_key("annotator", "alice", pid)
    round0 = [q.item_id for q in queries_of(url, pid, 0)]
    _label_all(client, pid, alice, round0)
    unlabeled = [i for i in pool if i not in round0]
    _label_all(client, pid, alice, unlabeled[:1])  # labeled while round 1 is being selected
    _publish(url, pid, 1, [(unlabeled[0], 1.0), (unlabeled[1], 0.5)])
    queries = queries_of(url, pid, 1)
    assert queries[0].labeled_at is not None and queries[1].labeled_at is None
    assert [i["item_id"] for i in client.get(f"/projects/{pid}/queries/next", headers=alice, params={"limit": 5}).json()["items"]] == [unlabeled[1]]

    # All picks labeled already: the round completes at once and the next one is queued.
    _label_all(client, pid, alice, unlabeled[1:2])
    _label_all(client, pid, alice, unlabeled[2:4])
    _publish(url, pid, 2, [(unlabeled[2], 1.0), (unlabeled[3], 0.5)])
    assert [r.status for r in _rounds(url, pid)] == ["completed", "completed", "completed", "selecting"]
    assert [j.params["round_index"] for j in _jobs(url, pid)] == [1, 2, 3]


def test_budget_reached_queues_the_target(client, url, admin_headers, make_key):
    pid, pool, _ = make_project(url, pool=10, schedule={"initial": 3, "rounds": [3], "budget": 6})
    _start(client, pid, admin_headers)
    alice = make_key("annotator", "alice", pid)
    round0 = [q.item_id for q in queries_of(url, pid, 0)]
    _label_all(client, pid, alice, round0)
    rest = [i for i in pool if i not in round0]
    _publish(url, pid, 1, [(i, None) for i in rest[:3]])
    body = _label_all(client, pid, alice, rest[:3])
    assert body["project_status"] == "training_target" and body["current_round"] == 1

    jobs = _jobs(url, pid)
    assert [(j.type, j.dedup_key) for j in jobs] == [("select_round", f"select_round:{pid}:1"), ("train_target", f"train_target:{pid}")]
    assert [r.status for r in _rounds(url, pid)] == ["completed", "completed"]
    response = client.get(f"/projects/{pid}/queries/next", headers=alice)
    assert response.json()["status"] == "training_target" and "Retry-After" in response.headers
    # Another train-target request returns the same job.
    again = client.post(f"/projects/{pid}/train-target", headers=admin_headers)
    assert again.status_code == 200 and again.json()["job_id"] == jobs[1].id
    assert len(_jobs(url, pid)) == 2


def test_admin_advances_a_partly_labeled_round(client, url, admin_headers, make_key):
    pid, _, _ = make_project(url, pool=20, schedule={"initial": 5, "rounds": [4], "budget": 15})
    _start(client, pid, admin_headers)
    alice = make_key("annotator", "alice", pid)
    leased = client.get(f"/projects/{pid}/queries/next", headers=alice, params={"limit": 3}).json()["items"]
    _label_all(client, pid, alice, [leased[0]["item_id"]])

    assert_error(client.post(f"/projects/{pid}/rounds/advance", headers=alice), 403, "forbidden")
    response = client.post(f"/projects/{pid}/rounds/advance", headers=admin_headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["current_round"] == 1 and body["round"]["status"] == "selecting" and body["round"]["labeled_at_start"] == 1
    [job] = _jobs(url, pid)
    assert body["job_id"] == job.id and job.params == {"round_index": 1}
    # The leftovers are not handed out any more; a late label of one still counts.
    assert client.get(f"/projects/{pid}/queries/next", headers=alice).json()["status"] == "selecting"
    late = _label_all(client, pid, alice, [leased[1]["item_id"]])["labels"][0]
    assert late["round_index"] == 0 and get(url, t.Item, leased[1]["item_id"]).label == "cat"
    assert_error(client.post(f"/projects/{pid}/rounds/advance", headers=admin_headers), 409, "conflict", "selecting")
    assert len(_rounds(url, pid)) == 2 and len(_jobs(url, pid)) == 1

    draft, _, _ = make_project(url, pool=4)
    assert_error(client.post(f"/projects/{draft}/rounds/advance", headers=admin_headers), 409, "conflict", "draft")
    assert_error(client.post(f"/projects/{draft}/train-target", headers=admin_headers), 409, "conflict", "draft")


def test_train_target_early_cancels_the_pending_selection(client, url, admin_headers, make_key):
    pid, _, _ = make_project(url, pool=20, schedule={"initial": 3, "rounds": [4], "budget": 15})
    _start(client, pid, admin_headers)
    alice = make_key("annotator", "alice", pid)
    round0 = [q.item_id for q in queries_of(url, pid, 0)]
    _label_all(client, pid, alice, round0)  # round 1 selecting, its job queued

    response = client.post(f"/projects/{pid}/train-target", headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "training_target"
    select_job, target_job = _jobs(url, pid)
    assert select_job.status == "cancelled" and target_job.type == "train_target"
    assert response.json()["job_id"] == target_job.id
    assert _rounds(url, pid)[1].status == "completed"
    with pytest.raises(Conflict):  # the cancelled selection can no longer publish
        _publish(url, pid, 1, [(round0[0], None)])


@pytest.mark.parametrize("attempt", range(3))
def test_racing_annotators_make_one_next_round(app, url, admin_headers, make_key, attempt):
    """Each annotator labels one of the round's last items at the same moment."""
    n = 6
    pid, _, _ = make_project(url, pool=30, schedule={"initial": n, "rounds": [4], "budget": 20})
    keys = [make_key("annotator", f"ann-{i}", pid) for i in range(n)]
    errors: list[str] = []
    with TestClient(app) as client:
        _start(client, pid, admin_headers)
        held = [client.get(f"/projects/{pid}/queries/next", headers=k).json()["items"][0]["item_id"] for k in keys]
        barrier = threading.Barrier(n)

        def label(i: int) -> None:
            try:
                barrier.wait(timeout=30)
                response = client.post(f"/projects/{pid}/labels", headers=keys[i], json={"item_id": held[i], "label": "dog"})
                assert response.status_code == 200, response.text
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(repr(exc))

        threads = [threading.Thread(target=label, args=(i,)) for i in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors
    assert [(r.index, r.status) for r in _rounds(url, pid)] == [(0, "completed"), (1, "selecting")]
    assert [(j.type, j.params) for j in _jobs(url, pid)] == [("select_round", {"round_index": 1})]
    assert count(url, t.Annotation, t.Annotation.project_id == pid) == n


def test_open_round_with_more_picks_than_a_statement_has_parameters(client, url, admin_headers, make_key, monkeypatch):
    """Publishing looks the picks up in chunks; a small chunk size exercises the same path cheaply."""
    import app.services.rounds as rounds_service

    monkeypatch.setattr(rounds_service, "ID_CHUNK", 7)
    pid, pool, _ = make_project(url, pool=60, schedule={"initial": 5, "rounds": [30], "budget": 50})
    _start(client, pid, admin_headers)
    alice = make_key("annotator", "alice", pid)
    round0 = [q.item_id for q in queries_of(url, pid, 0)]
    _label_all(client, pid, alice, round0)
    rest = [i for i in pool if i not in round0][:30]
    with pytest.raises(Unprocessable):  # a bad id in the last chunk is still found
        _publish(url, pid, 1, [(i, None) for i in rest[:-1]] + [(999999, None)])
    _publish(url, pid, 1, [(i, float(n)) for n, i in enumerate(rest)])
    assert [q.item_id for q in queries_of(url, pid, 1)] == rest

"""Rounds and jobs read API over rows as workers leave them; admin cancel and retry."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from app.db import tables as t
from app.db.base import utcnow
from app.db.session import session_scope
from app.main import create_app
from app.services.jobs import RUN_JOB_TASK


class RecordingDispatcher:
    def __init__(self):
        self.sent: list[tuple[str, dict]] = []

    def send(self, task_name, kwargs):
        self.sent.append((task_name, dict(kwargs)))
        return None


@pytest.fixture
def dispatcher():
    return RecordingDispatcher()


@pytest.fixture
def client(settings, dispatcher):
    with TestClient(create_app(settings, dispatcher=dispatcher)) as test_client:
        yield test_client


def new_project(session, name: str) -> t.Project:
    project = t.Project(name=name, modality="text", classes=["neg", "pos"], proxy={"arch": "fasttext"},
                        target={"arch": "vdcnn29"}, strategy="entropy",
                        schedule={"initial": 3, "rounds": [2], "budget": 7}, status=t.PROJECT_ACTIVE)
    session.add(project)
    session.flush()
    return project


@pytest.fixture
def world(settings):
    """Project p with round 0 (3 queries, 2 labeled) and round 1 (selected by a finished job) ; an
    unrelated project q with its own round and job."""
    now = utcnow()
    with session_scope(settings.resolved_database_url) as session:
        p, q = new_project(session, "p"), new_project(session, "q")
        items = []
        for i in range(5):
            item = t.Item(project_id=p.id, external_id=f"i{i}", split="pool", content_type="text/plain",
                          content_sha256=f"{i:064d}", text=f"text {i}")
            session.add(item)
            items.append(item)
        session.flush()
        r0 = t.Round(project_id=p.id, index=0, status=t.ROUND_COMPLETED, strategy="random", size=3,
                     labeled_at_start=0, opened_at=now, finished_at=now + timedelta(minutes=5))
        session.add(r0)
        session.flush()
        for rank, item in enumerate(items[:3]):
            session.add(t.Query(project_id=p.id, round_id=r0.id, round_index=0, item_id=item.id, rank=rank,
                                labeled_at=now if rank < 2 else None))
        select_job = t.Job(project_id=p.id, type=t.JOB_SELECT_ROUND, status=t.JOB_SUCCEEDED, attempts=1,
                           params={"round_index": 1}, result={"selected": 2}, progress={"fraction": 1.0},
                           started_at=now, finished_at=now + timedelta(seconds=9))
        failed_job = t.Job(project_id=p.id, type=t.JOB_TRAIN_TARGET, status=t.JOB_FAILED, attempts=2,
                           error="CUDA out of memory", progress={"fraction": 0.4, "phase": "train"})
        queued_job = t.Job(project_id=p.id, type=t.JOB_CORESET, status=t.JOB_QUEUED)
        running_job = t.Job(project_id=p.id, type=t.JOB_SELECT_ROUND, status=t.JOB_RUNNING, started_at=now)
        other_job = t.Job(project_id=q.id, type=t.JOB_SELECT_ROUND, status=t.JOB_FAILED, error="boom")
        session.add_all([select_job, failed_job, queued_job, running_job, other_job])
        session.flush()
        r1 = t.Round(project_id=p.id, index=1, status=t.ROUND_OPEN, strategy="entropy", size=2,
                     labeled_at_start=2, selector={"arch": "fasttext"}, job_id=select_job.id, train_s=1.5,
                     inference_s=0.25, ranking_s=0.01, total_s=2.0, metrics={"accuracy": 0.75}, opened_at=now)
        session.add(r1)
        session.add(t.Round(project_id=q.id, index=0, status=t.ROUND_OPEN, strategy="random", size=9))
        return {
            "p": p.id, "q": q.id, "select": select_job.id, "failed": failed_job.id, "queued": queued_job.id,
            "running": running_job.id, "other": other_job.id,
        }


def test_rounds_list_in_order_with_progress_and_timings(client, admin_headers, world):
    response = client.get(f"/projects/{world['p']}/rounds", headers=admin_headers)
    assert response.status_code == 200
    rounds = response.json()
    assert [r["index"] for r in rounds] == [0, 1]
    r0, r1 = rounds
    assert (r0["status"], r0["strategy"], r0["size"], r0["labeled"], r0["labeled_at_start"]) == (
        "completed", "random", 3, 2, 0)
    assert r0["selector"] is None and r0["job_id"] is None
    assert r0["timings"] == {"train_s": None, "inference_s": None, "ranking_s": None, "total_s": None}
    assert r0["finished_at"] is not None and r0["opened_at"] is not None
    assert (r1["status"], r1["strategy"], r1["size"], r1["labeled"], r1["labeled_at_start"]) == (
        "open", "entropy", 2, 0, 2)
    assert r1["timings"] == {"train_s": 1.5, "inference_s": 0.25, "ranking_s": 0.01, "total_s": 2.0}
    assert r1["metrics"] == {"accuracy": 0.75} and r1["job_id"] == world["select"]
    assert r1["selector"] == {"arch": "fasttext"} and r1["finished_at"] is None


def test_one_round(client, admin_headers, world):
    body = client.get(f"/projects/{world['p']}/rounds/1", headers=admin_headers).json()
    assert body["index"] == 1 and body["size"] == 2
    # Another project's round 0 has size 9; this project's has 3.
    assert client.get(f"/projects/{world['p']}/rounds/0", headers=admin_headers).json()["size"] == 3
    missing = client.get(f"/projects/{world['p']}/rounds/2", headers=admin_headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert client.get(f"/projects/{world['p']}/rounds/-1", headers=admin_headers).status_code == 422
    assert client.get("/projects/999/rounds", headers=admin_headers).status_code == 404


def test_annotators_read_rounds_and_jobs_of_their_project(client, make_key, world):
    annotator = make_key("annotator", project_id=world["p"])
    assert client.get(f"/projects/{world['p']}/rounds", headers=annotator).status_code == 200
    assert client.get(f"/projects/{world['p']}/jobs", headers=annotator).status_code == 200
    assert client.get(f"/jobs/{world['failed']}", headers=annotator).status_code == 200
    assert client.get(f"/jobs/{world['other']}", headers=annotator).status_code == 403
    assert client.get(f"/projects/{world['q']}/rounds", headers=annotator).status_code == 403


def test_jobs_list_newest_first_and_filters(client, admin_headers, world):
    url = f"/projects/{world['p']}/jobs"
    jobs = client.get(url, headers=admin_headers).json()
    assert [j["id"] for j in jobs] == sorted([world[k] for k in ("select", "failed", "queued", "running")], reverse=True)
    assert world["other"] not in {j["id"] for j in jobs}
    failed = client.get(url, params={"status": "failed"}, headers=admin_headers).json()
    assert [j["id"] for j in failed] == [world["failed"]]
    selects = client.get(url, params={"type": "select_round"}, headers=admin_headers).json()
    assert {j["id"] for j in selects} == {world["select"], world["running"]}
    page = client.get(url, params={"limit": 2, "offset": 1}, headers=admin_headers).json()
    assert [j["id"] for j in page] == [j["id"] for j in jobs[1:3]]
    for params in ({"status": "exploded"}, {"type": "dance"}, {"limit": 0}, {"limit": 5000}, {"offset": -1}):
        response = client.get(url, params=params, headers=admin_headers)
        assert response.status_code == 422, params
        assert response.json()["error"]["details"]


def test_job_detail(client, admin_headers, world):
    body = client.get(f"/jobs/{world['failed']}", headers=admin_headers).json()
    assert (body["type"], body["status"], body["attempts"], body["error"]) == ("train_target", "failed", 2, "CUDA out of memory")
    assert body["progress"] == {"fraction": 0.4, "phase": "train"} and body["project_id"] == world["p"]
    done = client.get(f"/jobs/{world['select']}", headers=admin_headers).json()
    assert done["result"] == {"selected": 2} and done["params"] == {"round_index": 1}
    assert done["started_at"] < done["finished_at"]
    assert client.get("/jobs/999999", headers=admin_headers).status_code == 404
    assert client.get("/jobs/0", headers=admin_headers).status_code == 422


def test_cancel(client, admin_headers, world, dispatcher):
    queued = client.post(f"/jobs/{world['queued']}/cancel", headers=admin_headers)
    assert queued.status_code == 200
    assert queued.json()["status"] == "cancelled" and queued.json()["finished_at"] is not None
    running = client.post(f"/jobs/{world['running']}/cancel", headers=admin_headers).json()
    # A running job is only asked to stop; the worker finishes the cancellation.
    assert running["status"] == "running" and running["cancel_requested"] is True
    for key in ("select", "queued"):
        response = client.post(f"/jobs/{world[key]}/cancel", headers=admin_headers)
        assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"
    assert client.post("/jobs/999999/cancel", headers=admin_headers).status_code == 404
    assert dispatcher.sent == []


def test_retry_requeues_after_commit(client, admin_headers, world, dispatcher):
    response = client.post(f"/jobs/{world['failed']}/retry", headers=admin_headers)
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["error"], body["progress"], body["finished_at"]) == ("queued", None, {}, None)
    assert dispatcher.sent == [(RUN_JOB_TASK, {"job_id": world["failed"]})]
    assert client.get(f"/jobs/{world['failed']}", headers=admin_headers).json()["status"] == "queued"

    for key in ("running", "select", "failed"):  # the failed one is queued now
        response = client.post(f"/jobs/{world[key]}/retry", headers=admin_headers)
        assert response.status_code == 409, key
    assert len(dispatcher.sent) == 1  # refused retries send nothing


def test_annotators_cannot_cancel_or_retry(client, make_key, admin_headers, world, dispatcher):
    annotator = make_key("annotator", project_id=world["p"])
    assert client.post(f"/jobs/{world['queued']}/cancel", headers=annotator).status_code == 403
    assert client.post(f"/jobs/{world['failed']}/retry", headers=annotator).status_code == 403
    assert client.get(f"/jobs/{world['queued']}", headers=admin_headers).json()["status"] == "queued"
    assert client.get(f"/jobs/{world['failed']}", headers=admin_headers).json()["status"] == "failed"
    assert dispatcher.sent == []

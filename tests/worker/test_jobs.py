"""Job row lifecycle: claiming is exclusive, the reconciler re-queues dead and lost jobs exactly once."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select

from app.db import tables as t
from app.db.base import utcnow
from app.db.session import session_scope
from app.services.jobs import RUN_JOB_TASK, create_job
from worker import jobs
from worker.runner import run_job


def _project(session) -> t.Project:
    project = t.Project(
        name="p", modality="text", classes=["a", "b"], proxy={"arch": "fasttext"}, target={"arch": "vdcnn9"},
        strategy="least_confidence", schedule={"initial": 2, "rounds": [2], "budget": 6},
    )
    session.add(project)
    session.flush()
    return project


def _job(settings, **values) -> int:
    with session_scope(settings.resolved_database_url) as session:
        project = session.scalar(select(t.Project)) or _project(session)
        job = create_job(session, project_id=project.id, type=t.JOB_TRAIN_TARGET)
        for key, value in values.items():
            setattr(job, key, value)
        session.flush()
        return job.id


def _status(settings, job_id):
    with session_scope(settings.resolved_database_url) as session:
        return session.get(t.Job, job_id)


def test_claim_is_exclusive_under_concurrent_deliveries(settings):
    job_id = _job(settings)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def deliver():
        barrier.wait()
        results.append(jobs.claim(settings, job_id))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1
    job = _status(settings, job_id)
    assert job.status == t.JOB_RUNNING and job.attempts == 1 and job.started_at is not None


def test_cancelled_or_finished_jobs_are_not_claimed(settings):
    cancelled = _job(settings, status=t.JOB_CANCELLED)
    done = _job(settings, status=t.JOB_SUCCEEDED)
    assert not jobs.claim(settings, cancelled)
    assert not jobs.claim(settings, done)
    assert run_job(settings, done) == "skipped"


def test_reconciler_requeues_dead_running_jobs_once(settings):
    old = utcnow() - timedelta(seconds=settings.job_stale_s * 2)
    dead = _job(settings, status=t.JOB_RUNNING, heartbeat_at=old, started_at=old)
    alive = _job(settings, status=t.JOB_RUNNING, heartbeat_at=utcnow(), started_at=old)
    sent: list[tuple[str, dict]] = []
    assert jobs.reconcile(settings, lambda name, kwargs: sent.append((name, kwargs))) == [dead]
    assert sent == [(RUN_JOB_TASK, {"job_id": dead})]
    assert _status(settings, dead).status == t.JOB_QUEUED
    assert _status(settings, alive).status == t.JOB_RUNNING
    # A second pass right after sends nothing: the dead job is queued again with a fresh enqueued_at.
    assert jobs.reconcile(settings, lambda name, kwargs: sent.append((name, kwargs))) == []


def test_reconciler_resends_queued_jobs_whose_message_may_be_lost(settings):
    lost = _job(settings, enqueued_at=utcnow() - timedelta(seconds=settings.requeue_queued_after_s + 5))
    fresh = _job(settings)
    sent: list[int] = []
    jobs.reconcile(settings, lambda name, kwargs: sent.append(kwargs["job_id"]))
    assert sent == [lost]
    assert fresh not in sent


def test_failed_pipeline_records_error(settings, monkeypatch):
    from worker import runner

    job_id = _job(settings)

    def boom(ctx):
        raise RuntimeError("out of memory on purpose")

    monkeypatch.setattr(runner, "_pipeline", lambda job_type: boom)
    assert run_job(settings, job_id) == t.JOB_FAILED
    job = _status(settings, job_id)
    assert job.status == t.JOB_FAILED and "out of memory on purpose" in job.error and job.finished_at


def test_cancel_between_epochs(settings, monkeypatch):
    from worker import runner

    job_id = _job(settings)

    def pipeline(ctx):
        with session_scope(settings.resolved_database_url) as session:
            session.get(t.Job, ctx.job_id).cancel_requested = True
        ctx.check_cancelled()
        raise AssertionError("not reached")

    monkeypatch.setattr(runner, "_pipeline", lambda job_type: pipeline)
    assert run_job(settings, job_id) == t.JOB_CANCELLED
    assert _status(settings, job_id).status == t.JOB_CANCELLED

"""Background jobs: the ``job`` row is the source of truth; the queue only carries its id.

Every job type is run by one Celery task, ``svp.run_job(job_id=...)``, which dispatches on the row's
type, so the api needs to know a single task name.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import tables as t
from app.db.base import utcnow
from app.errors import Conflict, NotFound
from app.queue import enqueue_after_commit

RUN_JOB_TASK = "svp.run_job"


def create_job(
    session: Session,
    *,
    project_id: int,
    type: str,
    params: dict[str, Any] | None = None,
    dedup_key: str | None = None,
) -> t.Job:
    """Insert a queued job and send its id once the transaction commits.

    With a ``dedup_key`` the job is created at most once: a second call returns the existing row
    (e.g. two annotators finishing the same round at the same moment queue one selection).
    """
    if dedup_key is not None:
        existing = session.scalar(select(t.Job).where(t.Job.dedup_key == dedup_key))
        if existing is not None:
            return existing
    job = t.Job(project_id=project_id, type=type, params=params or {}, dedup_key=dedup_key, enqueued_at=utcnow())
    session.add(job)
    session.flush()
    enqueue_after_commit(session, RUN_JOB_TASK, job_id=job.id)
    return job


def get_job(session: Session, *, job_id: int, project_id: int | None = None) -> t.Job:
    job = session.get(t.Job, job_id)
    if job is None or (project_id is not None and job.project_id != project_id):
        raise NotFound(f"job {job_id} does not exist")
    return job


def request_cancel(session: Session, *, job: t.Job) -> t.Job:
    """Queued jobs are cancelled at once; running ones stop at the next check (between epochs)."""
    if job.status in t.JOB_FINISHED:
        raise Conflict(f"job {job.id} is already {job.status}")
    job.cancel_requested = True
    if job.status == t.JOB_QUEUED:
        job.status = t.JOB_CANCELLED
        job.finished_at = utcnow()
    return job


def retry_job(session: Session, *, job: t.Job) -> t.Job:
    """Re-queue a failed or cancelled job (admin action); the same row is run again."""
    if job.status not in (t.JOB_FAILED, t.JOB_CANCELLED):
        raise Conflict(f"job {job.id} is {job.status}; only failed or cancelled jobs can be retried")
    job.status = t.JOB_QUEUED
    job.cancel_requested = False
    job.error = None
    job.progress = {}
    job.started_at = None
    job.finished_at = None
    job.enqueued_at = utcnow()
    session.flush()
    enqueue_after_commit(session, RUN_JOB_TASK, job_id=job.id)
    return job

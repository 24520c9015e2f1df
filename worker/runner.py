"""Runs one job by id: claim the row, call the pipeline for its type, record the outcome.

The same function runs under Celery (worker/tasks.py) and in embedded mode (worker/embedded.py),
so both give the same results.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Callable

from app.config import Settings
from app.db import tables as t
from app.db.session import session_scope
from app.observability import bind_job_id
from worker.jobs import Heartbeat, JobCancelled, JobContext, cancel, claim, fail

log = logging.getLogger(__name__)

# Job type -> "module:function" of its pipeline, imported on first use (keeps torch out of start-up).
PIPELINES: dict[str, str] = {
    t.JOB_SELECT_ROUND: "worker.pipelines.al_round:run",
    t.JOB_TRAIN_TARGET: "worker.pipelines.target:run",
    t.JOB_CORESET: "worker.pipelines.coreset:run",
}


def _pipeline(job_type: str) -> Callable[[JobContext], Any]:
    module_name, _, func = PIPELINES[job_type].partition(":")
    return getattr(importlib.import_module(module_name), func)


@bind_job_id  # log lines of the job carry its id
def run_job(settings: Settings, job_id: int) -> str:
    """Returns what happened: skipped (not claimable), succeeded, failed or cancelled."""
    if not claim(settings, job_id):
        log.info("job %s is not queued (already running, finished or cancelled); skipping", job_id)
        return "skipped"
    with session_scope(settings.resolved_database_url) as session:
        job = session.get(t.Job, job_id)
        ctx = JobContext(settings=settings, job_id=job_id, project_id=job.project_id, params=dict(job.params or {}))
        job_type = job.type
    log.info("job %s (%s) for project %s started", job_id, job_type, ctx.project_id)
    with Heartbeat(settings, job_id):
        try:
            if job_type not in PIPELINES:
                raise ValueError(f"unknown job type {job_type!r}")
            _pipeline(job_type)(ctx)  # the pipeline marks the job succeeded in its final transaction
        except JobCancelled:
            log.info("job %s cancelled", job_id)
            cancel(settings, job_id)
            return t.JOB_CANCELLED
        except Exception as exc:
            log.exception("job %s failed", job_id)
            fail(settings, job_id, exc)
            return t.JOB_FAILED
    log.info("job %s succeeded", job_id)
    return t.JOB_SUCCEEDED

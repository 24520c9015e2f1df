"""Celery tasks: thin. They take ids only and hand over to worker.runner."""

from __future__ import annotations

from worker.celery_app import celery_app, settings
from worker.runner import run_job


@celery_app.task(name="svp.run_job")
def run_job_task(job_id: int) -> str:
    return run_job(settings, job_id)

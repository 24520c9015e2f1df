"""Job lifecycle on the database row: claim, heartbeat, progress, cancel checks, finish, reconcile.

The row is the source of truth. Claiming is one conditional UPDATE (queued -> running), so a second
delivery of the same message, or a message re-sent by the reconciler, does nothing while another
worker runs the job or after it finished.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import tables as t
from app.db.base import utcnow
from app.db.session import session_scope
from app.services.jobs import RUN_JOB_TASK

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised between epochs when an admin asked to cancel the running job."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{threading.get_native_id()}"


def claim(settings: Settings, job_id: int) -> bool:
    """queued -> running, atomically. False when the job is not queued (duplicate or stale message)."""
    now = utcnow()
    with session_scope(settings.resolved_database_url) as session:
        result = session.execute(
            update(t.Job)
            .where(t.Job.id == job_id, t.Job.status == t.JOB_QUEUED, t.Job.cancel_requested.is_(False))
            .values(
                status=t.JOB_RUNNING,
                started_at=now,
                heartbeat_at=now,
                attempts=t.Job.attempts + 1,
                worker=worker_name(),
                error=None,
            )
        )
        return result.rowcount == 1


def mark_finished(session: Session, job_id: int, *, status: str, result: dict[str, Any] | None = None,
                  error: str | None = None) -> None:
    """Finish a running job in the caller's transaction (so outputs and status commit together)."""
    job = session.get(t.Job, job_id, with_for_update=True)
    if job is None:
        return
    job.status = status
    job.finished_at = utcnow()
    if result is not None:
        job.result = result
    if error is not None:
        job.error = error
    if status == t.JOB_SUCCEEDED:
        job.progress = {**(job.progress or {}), "fraction": 1.0, "phase": "done"}


def fail(settings: Settings, job_id: int, exc: BaseException) -> None:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    detail = traceback.format_exc(limit=8)
    with session_scope(settings.resolved_database_url) as session:
        mark_finished(session, job_id, status=t.JOB_FAILED, error=f"{text}\n\n{detail}"[:8000])


def cancel(settings: Settings, job_id: int) -> None:
    with session_scope(settings.resolved_database_url) as session:
        mark_finished(session, job_id, status=t.JOB_CANCELLED)


@dataclass
class JobContext:
    """What a pipeline gets: ids, parameters, and throttled progress / cancel hooks."""

    settings: Settings
    job_id: int
    project_id: int
    params: dict[str, Any]
    min_progress_interval_s: float = 1.0
    _last_progress: float = field(default=0.0, repr=False)
    _last_cancel_check: float = field(default=0.0, repr=False)

    def progress(self, *, phase: str, fraction: float | None = None, force: bool = False, **extra: Any) -> None:
        """Record progress on the job row, at most once a second unless forced (phase changes)."""
        now = time.monotonic()
        if not force and now - self._last_progress < self.min_progress_interval_s:
            return
        self._last_progress = now
        payload = {"phase": phase, **({"fraction": round(float(fraction), 4)} if fraction is not None else {}), **extra}
        with session_scope(self.settings.resolved_database_url) as session:
            session.execute(
                update(t.Job).where(t.Job.id == self.job_id).values(progress=payload, heartbeat_at=utcnow())
            )

    def check_cancelled(self) -> None:
        with session_scope(self.settings.resolved_database_url) as session:
            requested = session.scalar(select(t.Job.cancel_requested).where(t.Job.id == self.job_id))
        if requested:
            raise JobCancelled(f"job {self.job_id} was cancelled")

    def should_stop(self) -> bool:
        """For the training loop's between-epoch check; reads the row at most every 2 s."""
        now = time.monotonic()
        if now - self._last_cancel_check < 2.0:
            return False
        self._last_cancel_check = now
        self.check_cancelled()
        return False


class Heartbeat:
    """A daemon thread that stamps ``heartbeat_at`` while a job runs, so the reconciler can tell a
    slow job from a dead worker."""

    def __init__(self, settings: Settings, job_id: int):
        self.settings = settings
        self.job_id = job_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.job_heartbeat_s):
            try:
                with session_scope(self.settings.resolved_database_url) as session:
                    session.execute(
                        update(t.Job)
                        .where(t.Job.id == self.job_id, t.Job.status == t.JOB_RUNNING)
                        .values(heartbeat_at=utcnow())
                    )
            except Exception:  # a missed beat is not fatal; the next one may succeed
                log.warning("heartbeat for job %s failed", self.job_id, exc_info=True)


def reconcile(settings: Settings, send: Callable[[str, dict[str, Any]], Any]) -> list[int]:
    """Re-queue jobs whose worker died (stale heartbeat) and re-send queued jobs whose message may
    be lost. Each flip is one conditional UPDATE, so concurrent reconcilers never double-send a
    running job. Returns the ids sent."""
    now = utcnow()
    stale_before = now - timedelta(seconds=settings.job_stale_s)
    resend_before = now - timedelta(seconds=settings.requeue_queued_after_s)
    sent: list[int] = []
    with session_scope(settings.resolved_database_url) as session:
        dead = session.scalars(
            select(t.Job.id).where(t.Job.status == t.JOB_RUNNING, t.Job.heartbeat_at < stale_before)
        ).all()
        for job_id in dead:
            flipped = session.execute(
                update(t.Job)
                .where(t.Job.id == job_id, t.Job.status == t.JOB_RUNNING, t.Job.heartbeat_at < stale_before)
                .values(status=t.JOB_QUEUED, enqueued_at=now, worker=None,
                        progress={"phase": "requeued", "message": "worker stopped responding; job re-queued"})
            ).rowcount
            if flipped:
                log.warning("job %s: worker stopped responding; re-queued", job_id)
                sent.append(job_id)
        lost = session.scalars(
            select(t.Job.id).where(
                t.Job.status == t.JOB_QUEUED,
                t.Job.cancel_requested.is_(False),
                t.Job.enqueued_at < resend_before,
            )
        ).all()
        for job_id in lost:
            flipped = session.execute(
                update(t.Job)
                .where(t.Job.id == job_id, t.Job.status == t.JOB_QUEUED, t.Job.enqueued_at < resend_before)
                .values(enqueued_at=now)
            ).rowcount
            if flipped:
                sent.append(job_id)
    for job_id in sent:
        try:
            send(RUN_JOB_TASK, {"job_id": job_id})
        except Exception:
            log.exception("could not re-send job %s", job_id)
    return sent


class Reconciler:
    """Runs ``reconcile`` every ``settings.reconcile_interval_s`` in a daemon thread."""

    def __init__(self, settings: Settings, send: Callable[[str, dict[str, Any]], Any]):
        self.settings = settings
        self.send = send
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="svp-reconciler", daemon=True)

    def start(self) -> "Reconciler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            try:
                reconcile(self.settings, self.send)
            except Exception:
                log.exception("reconciler pass failed")
            if self._stop.wait(self.settings.reconcile_interval_s):
                return

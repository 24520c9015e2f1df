"""Enqueue background jobs by task name, only after the transaction that created them commits.

``enqueue_after_commit(session, "svp.run_job", job_id=...)`` records the send on the session; a
SQLAlchemy ``after_commit`` hook hands it to the app's dispatcher. A rollback drops it, so a worker
never receives the id of a job row that does not exist. The dispatcher is either Celery's
``send_task`` (by name: the api never imports the worker) or, in embedded mode, an in-process
runner registered by whoever starts the embedded service.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

_PENDING = "svp_pending_tasks"
_DISPATCHER = "svp_dispatcher"


class Dispatcher(Protocol):
    def send(self, task_name: str, kwargs: dict[str, Any]) -> str | None:
        """Deliver one task; returns a task id when the transport has one."""


class CeleryDispatcher:
    """Sends tasks by name through a broker; no worker code is imported."""

    def __init__(self, broker_url: str, queue: str):
        from celery import Celery

        self.celery = Celery("svp-api", broker=broker_url)
        self.celery.conf.broker_connection_retry_on_startup = True
        self.queue = queue

    def send(self, task_name: str, kwargs: dict[str, Any]) -> str | None:
        result = self.celery.send_task(task_name, kwargs=kwargs, queue=self.queue)
        return result.id


class NullDispatcher:
    """Leaves jobs queued in the database (the reconciler or a later worker picks them up)."""

    def send(self, task_name: str, kwargs: dict[str, Any]) -> str | None:
        log.info("no dispatcher configured; %s %s stays queued", task_name, kwargs)
        return None


def bind_dispatcher(session: Session, dispatcher: Dispatcher) -> None:
    session.info[_DISPATCHER] = dispatcher


def enqueue_after_commit(session: Session, task_name: str, **kwargs: Any) -> None:
    session.info.setdefault(_PENDING, []).append((task_name, kwargs))


@event.listens_for(Session, "after_commit")
def _send_pending(session: Session) -> None:
    pending = session.info.pop(_PENDING, [])
    if not pending:
        return
    dispatcher: Dispatcher = session.info.get(_DISPATCHER) or NullDispatcher()
    for task_name, kwargs in pending:
        try:
            dispatcher.send(task_name, kwargs)
        except Exception:  # the job row is committed; the reconciler re-sends lost messages
            log.exception("could not send %s %s; it stays queued for the reconciler", task_name, kwargs)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)

"""The Celery application of the workers.

Start one worker process per GPU on the ``gpu`` queue:
``celery -A worker.celery_app worker -Q gpu --concurrency 1 --prefetch-multiplier 1``.
Messages are acknowledged after the task ends (``acks_late``) and re-queued when the worker process
is lost; the job row decides whether a delivery runs (see worker/jobs.py), so duplicates are harmless.
"""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import setup_logging, worker_ready, worker_shutdown

from app.config import Settings

log = logging.getLogger(__name__)

settings = Settings()

celery_app = Celery("svp", broker=settings.broker_url or "redis://127.0.0.1:6379/0", include=["worker.tasks"])
celery_app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue=settings.gpu_queue,
    task_routes={"svp.*": {"queue": settings.gpu_queue}},
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    # Training can run for hours: keep Redis from re-delivering an unacked message meanwhile.
    # Lost workers are detected through the job heartbeat instead (worker/jobs.py reconcile).
    broker_transport_options={"visibility_timeout": 12 * 3600},
)

_reconciler = None


class _CelerySender:
    def __call__(self, task_name: str, kwargs: dict) -> None:
        celery_app.send_task(task_name, kwargs=kwargs, queue=settings.gpu_queue)


@setup_logging.connect
def _configure_logging(**_kwargs) -> None:
    """The service's logging (SVP_LOG_LEVEL, SVP_LOG_FORMAT=json) instead of Celery's own."""
    from app.observability import configure_logging

    configure_logging(settings)


@worker_ready.connect
def _start_reconciler(**_kwargs) -> None:
    """Every worker also re-queues jobs of dead workers and re-sends lost messages."""
    global _reconciler
    from worker.jobs import Reconciler

    _reconciler = Reconciler(settings, _CelerySender()).start()


@worker_shutdown.connect
def _stop_reconciler(**_kwargs) -> None:
    if _reconciler is not None:
        _reconciler.stop()

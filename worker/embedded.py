"""Embedded mode: the worker's task code run in-process, in a background thread.

No broker, no separate process: jobs are executed one at a time (like one GPU worker) by a single
background thread, so a request never waits for training. The same ``run_job`` as under Celery.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from app.config import Settings
from app.services.jobs import RUN_JOB_TASK

log = logging.getLogger(__name__)


class InProcessDispatcher:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="svp-embedded-worker")
        self._reconciler = None

    def send(self, task_name: str, kwargs: dict[str, Any]) -> str | None:
        if task_name != RUN_JOB_TASK:
            raise ValueError(f"unknown task {task_name!r}")
        self._executor.submit(self._run, int(kwargs["job_id"]))
        return None

    def _run(self, job_id: int) -> None:
        from worker.runner import run_job

        try:
            run_job(self.settings, job_id)
        except Exception:  # run_job records failures itself; this is only a last resort
            log.exception("embedded job %s crashed", job_id)

    def start(self) -> None:
        """Picks up jobs left queued or running when a previous process stopped."""
        from worker.jobs import Reconciler

        self._reconciler = Reconciler(self.settings, self.send).start()

    def shutdown(self, wait: bool = True) -> None:
        if self._reconciler is not None:
            self._reconciler.stop()
        self._executor.shutdown(wait=wait, cancel_futures=not wait)

    def drain(self) -> None:
        """Wait until every job sent so far has run (tests, the demo)."""
        done: Future = self._executor.submit(lambda: None)
        done.result()

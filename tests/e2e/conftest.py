"""End-to-end fixtures: a real uvicorn server, real Celery worker subprocesses on a real Redis and a
real PostgreSQL database, and a small image dataset (scikit-learn's digits)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from app.config import Settings
from app.db.session import session_scope
from app.services.keys import create_api_key
from svp.simulation import Dataset
from tests.conftest import _truncate_all

REDIS_URL = os.environ.get("SVP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pg_url(postgres_database) -> str:
    _truncate_all(postgres_database)
    return postgres_database


@pytest.fixture
def celery_settings(pg_url, tmp_path) -> Settings:
    # A queue of its own per test, so nothing else on this Redis can take or leave our messages.
    return Settings(
        data_dir=tmp_path / "data",
        database_url=pg_url,
        broker_url=REDIS_URL,
        gpu_queue=f"gpu-test-{uuid.uuid4().hex[:8]}",
        job_heartbeat_s=0.5,
        job_stale_s=4,
        reconcile_interval_s=1,
        torch_threads=1,
        _env_file=None,
    )


def worker_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SVP_DATA_DIR=str(settings.data_dir),
        SVP_DATABASE_URL=settings.resolved_database_url,
        SVP_BROKER_URL=settings.broker_url or "",
        SVP_GPU_QUEUE=settings.gpu_queue,
        SVP_JOB_HEARTBEAT_S=str(settings.job_heartbeat_s),
        SVP_JOB_STALE_S=str(settings.job_stale_s),
        SVP_RECONCILE_INTERVAL_S=str(settings.reconcile_interval_s),
        SVP_TORCH_THREADS=str(settings.torch_threads or ""),
        OMP_NUM_THREADS="1",
    )
    return env


@pytest.fixture
def start_worker(celery_settings, tmp_path) -> Iterator[Callable[[], subprocess.Popen]]:
    """start_worker() -> a `celery worker` subprocess (its own process group, killed at teardown)."""
    procs: list[subprocess.Popen] = []

    def _start() -> subprocess.Popen:
        log = open(tmp_path / f"worker-{len(procs)}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", celery_settings.gpu_queue,
             "--concurrency", "1", "--pool", "solo", "--without-gossip", "--without-mingle", "--loglevel", "INFO",
             "-n", f"test-{uuid.uuid4().hex[:6]}@%h"],
            cwd=ROOT, env=worker_env(celery_settings), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        procs.append(proc)
        return proc

    yield _start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def admin_secret(settings: Settings) -> str:
    with session_scope(settings.resolved_database_url) as session:
        _, secret = create_api_key(session, role="admin", name=f"admin-{uuid.uuid4().hex[:6]}")
    return secret


@pytest.fixture(scope="session")
def digits() -> Dataset:
    """600 pool / 200 test digits (8×8 grey), shuffled with a fixed seed."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.clip(np.rint(data.images * 255.0 / 16.0), 0, 255).astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(images))
    pool, test = order[:600], order[600:800]
    return Dataset("digits", "image", [str(c) for c in range(10)], images[pool], data.target[pool],
                   images[test], data.target[test])


def wait_for(predicate: Callable[[], object], *, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")

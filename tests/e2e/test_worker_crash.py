"""A worker killed with SIGKILL in the middle of select_round: once a new worker runs, the round is
published exactly once (no duplicate queries) and no label is lost."""

from __future__ import annotations

import os
import signal

import httpx
import pytest
from sqlalchemy import func, select

from app.db import tables as t
from app.db.session import session_scope
from svp.server import running_service
from tests.e2e.conftest import admin_secret, wait_for

pytestmark = pytest.mark.slow


def test_round_completes_once_after_worker_is_killed(celery_settings, start_worker, digits):
    worker = start_worker()
    with running_service(celery_settings) as base_url:
        admin = httpx.Client(base_url=base_url, headers={"X-API-Key": admin_secret(celery_settings)}, timeout=60)
        project = admin.post("/projects", json={
            "name": "crash", "modality": "image", "classes": digits.classes,
            # Enough epochs that training is still running when the worker is killed.
            "proxy": {"arch": "tinycnn", "epochs": 400, "batch_size": 16},
            "target": {"arch": "mlp", "epochs": 2},
            "strategy": "least_confidence",
            "schedule": {"initial": 40, "rounds": [25], "budget": 200},
        }).json()
        pid = project["id"]
        import io

        import numpy as np

        buffer = io.BytesIO()
        np.savez(buffer, x=digits.pool_x[:300], ids=np.array([f"p{i}" for i in range(300)]))
        response = admin.post(f"/projects/{pid}/items/upload", data={"split": "pool"},
                              files={"file": ("pool.npz", buffer.getvalue())})
        assert response.status_code == 201, response.text
        assert admin.post(f"/projects/{pid}/start").status_code == 200
        items = admin.get(f"/projects/{pid}/queries/next", params={"limit": 100}).json()["items"]
        assert len(items) == 40
        oracle = {f"p{i}": str(int(y)) for i, y in enumerate(digits.pool_y[:300])}
        response = admin.post(f"/projects/{pid}/labels/bulk",
                              json={"labels": [{"item_id": i["item_id"], "label": oracle[i["external_id"]]} for i in items]})
        assert response.status_code == 200, response.text

        def job_in_training():
            with session_scope(celery_settings.resolved_database_url) as session:
                job = session.scalar(select(t.Job).where(t.Job.type == "select_round"))
                return job if job is not None and job.status == "running" and (job.progress or {}).get("phase") == "training" else None

        job = wait_for(job_in_training, timeout=120, what="select_round to be training")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        with session_scope(celery_settings.resolved_database_url) as session:
            assert session.get(t.Job, job.id).status == "running"  # the dead worker could not say otherwise

        start_worker()  # its reconciler sees the stale heartbeat and re-queues the job

        def round_open():
            body = admin.get(f"/projects/{pid}/rounds/1").json()
            return body if body.get("status") == "open" else None

        wait_for(round_open, timeout=240, interval=0.5, what="round 1 to open after the restart")
        with session_scope(celery_settings.resolved_database_url) as session:
            final = session.get(t.Job, job.id)
            assert final.status == "succeeded" and final.attempts == 2
            assert session.scalar(select(func.count()).select_from(t.Round).where(t.Round.project_id == pid)) == 2
            queries = session.scalars(select(t.Query.item_id).where(t.Query.round_index == 1)).all()
            assert len(queries) == len(set(queries)) == 25
            labeled = session.scalar(select(func.count()).select_from(t.Item).where(t.Item.label.is_not(None)))
            assert labeled == 40
            assert session.scalar(select(func.count()).select_from(t.Job)) == 1
        admin.close()

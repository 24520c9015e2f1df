"""Core-set jobs for real: HTTP api, Redis, a `celery worker` subprocess, PostgreSQL. Every method's
subsets have the asked sizes, nest, and repeat for a seed; the job is admin only, can be cancelled
and retried, survives its worker being killed; `svp coreset --follow` drives one with target
training to its summary table."""

from __future__ import annotations

import csv
import io
import os
import signal

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from app.db import tables as t
from app.db.session import session_scope
from svp.cli import main as svp_main
from svp.server import running_service
from tests.e2e.conftest import admin_secret, wait_for

pytestmark = pytest.mark.slow

PROXY = {"arch": "mlp", "epochs": 5, "batch_size": 32}
TARGET = {"arch": "tinycnn", "epochs": 4, "batch_size": 32}


def labeled_project(admin: httpx.Client, digits, name: str, proxy=PROXY, pool: int = 600,
                    test: bool = True) -> tuple[int, int]:
    """A project made for a core-set: every pool item imported with its label, plus a test split.
    Returns (project id, labeled pool items)."""
    response = admin.post("/projects", json={"name": name, "modality": "image", "classes": digits.classes,
                                             "proxy": proxy, "target": TARGET, "seed": 4})
    assert response.status_code == 201, response.text
    pid = response.json()["id"]
    splits = [("pool", digits.pool_x[:pool], digits.pool_y[:pool])] + [("test", digits.test_x, digits.test_y)] * test
    for split, x, y in splits:
        buffer = io.BytesIO()
        np.savez(buffer, x=x, y=y, ids=np.array([f"{split}-{i}" for i in range(len(x))]))
        response = admin.post(f"/projects/{pid}/items/upload", data={"split": split},
                              files={"file": (f"{split}.npz", buffer.getvalue())})
        assert response.status_code == 201, response.text
    return pid, admin.get(f"/projects/{pid}").json()["counts"]["labeled"]


def wait_finished(admin: httpx.Client, pid: int, job_ids: list[int], timeout: float = 120) -> dict[int, dict]:
    def finished():
        jobs = {j: admin.get(f"/projects/{pid}/coresets/{j}").json() for j in job_ids}
        return jobs if all(job["status"] in ("succeeded", "failed", "cancelled") for job in jobs.values()) else None

    return wait_for(finished, timeout=timeout, interval=0.5, what=f"core-set jobs {job_ids}")


def subset(admin: httpx.Client, url: str) -> list[str]:
    response = admin.get(url)
    assert response.status_code == 200, response.text
    return [item["external_id"] for item in response.json()["items"]]


def test_every_method_and_the_cli_through_a_real_worker(celery_settings, start_worker, digits, tmp_path, capsys):
    start_worker()
    with running_service(celery_settings) as base_url:
        admin = httpx.Client(base_url=base_url, headers={"X-API-Key": admin_secret(celery_settings)}, timeout=60)
        pid, n = labeled_project(admin, digits, "coresets")
        annotator = admin.post("/keys", json={"role": "annotator", "name": "ann", "project_id": pid}).json()["secret"]
        refused = httpx.post(f"{base_url}/projects/{pid}/coresets", headers={"X-API-Key": annotator},
                             json={"method": "random", "fractions": [0.3]})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        assert admin.get(f"/projects/{pid}/jobs").json() == []

        jobs: dict[str, list[int]] = {}
        for method in ("forgetting_events", "entropy", "kcenters", "random"):
            body = {"method": method, "fractions": [0.3, 0.5], "sizes": [50], "seed": 11}
            if method == "kcenters":
                body["kcenters_initial"] = 12
            for _ in range(2):  # same seed twice: the same subsets
                response = admin.post(f"/projects/{pid}/coresets", json=body)
                assert response.status_code == 202, response.text
                jobs.setdefault(method, []).append(response.json()["job_id"])
        # A job cancelled while queued, then retried: it runs like any other.
        cancelled = admin.post(f"/projects/{pid}/coresets", json={"method": "entropy", "sizes": [20]}).json()["job_id"]
        assert admin.post(f"/jobs/{cancelled}/cancel").json()["status"] == "cancelled"
        assert admin.post(f"/jobs/{cancelled}/retry").json()["status"] == "queued"

        done = wait_finished(admin, pid, [j for ids in jobs.values() for j in ids] + [cancelled])
        assert all(job["status"] == "succeeded" for job in done.values()), {j: d["error"] for j, d in done.items()}
        sizes = [50, int(0.3 * n + 0.5), int(0.5 * n + 0.5)]
        for method, (first, second) in jobs.items():
            job = done[first]
            assert [s["size"] for s in job["subsets"]] == sizes, method
            assert job["progress"]["fraction"] == 1.0 and job["labeled"] == n
            picked = [subset(admin, s["url"]) for s in job["subsets"]]
            assert [len(p) for p in picked] == sizes and all(len(set(p)) == len(p) for p in picked)
            assert picked[1][:50] == picked[0] and picked[2][: sizes[1]] == picked[1], method  # nested
            assert [subset(admin, s["url"]) for s in done[second]["subsets"]] == picked, method  # deterministic
            if method != "random":
                assert job["selection"]["train_s"] > 0 and job["proxy_metrics"]["accuracy"] > 0.5, method
        # Different methods keep different items (they rank by different criteria).
        firsts = {m: set(subset(admin, done[ids[0]]["subsets"][0]["url"])) for m, ids in jobs.items()}
        assert len({frozenset(s) for s in firsts.values()}) == 4
        compare = admin.get(f"/projects/{pid}/coresets/compare",
                            params={"a": jobs["forgetting_events"][0], "b": jobs["forgetting_events"][1]}).json()
        assert compare["spearman"] == pytest.approx(1.0) and compare["items"] == n
        assert done[cancelled]["attempts"] == 1 and done[cancelled]["subsets"][0]["size"] == 20
        with session_scope(celery_settings.resolved_database_url) as session:
            rows = session.scalar(select(func.count()).select_from(t.CoresetResult))
            assert rows == n * (len(jobs) * 2 + 1)
        admin.close()
        # The same worker (one start per test keeps the suite quick) then runs the CLI's job.
        check_cli_follows_a_job_with_target_training(base_url, celery_settings, digits, tmp_path, capsys)


def check_cli_follows_a_job_with_target_training(base_url, celery_settings, digits, tmp_path, capsys):
    key = admin_secret(celery_settings)
    admin = httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=60)
    pid, n = labeled_project(admin, digits, "cli", pool=400)
    code = svp_main(["coreset", "--url", base_url, "--key", key, "--project", str(pid), "--method",
                     "forgetting_events", "--fractions", "0.3,0.5", "--proxy", "mlp", "--epochs", "5",
                     "--train-target", "--full-data", "--follow", "--poll", "0.2", "--csv-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, (out, err)
    assert "queued" in err and "] 100% done" in err and "training target" in err
    assert "subset  fraction  size  target acc  random acc" in out
    job = admin.get(f"/projects/{pid}/coresets").json()[0]
    assert job["status"] == "succeeded" and job["rankings"] == ["proxy", "target"]
    full = job["full"]
    assert full["size"] == n and full["accuracy"] > 0.5  # ten classes: chance is 0.1
    for entry in job["subsets"]:
        assert entry["target"]["size"] == entry["size"] == entry["random"]["size"]
        assert 0 < entry["target"]["accuracy"] <= 1 and 0 < entry["random"]["accuracy"] <= 1
        assert entry["end_to_end_s"] > entry["target"]["train_s"] > 0 and entry["speedup"] > 0
        assert f"{entry['fraction']:g}" in out
        with open(tmp_path / f"coreset-{job['job_id']}-{entry['size']}.csv") as f:
            rows = list(csv.DictReader(f))
        assert [r["external_id"] for r in rows] == subset(admin, entry["url"])
    assert -1 <= job["spearman_proxy_target"] <= 1 and "Spearman" in out
    # A request the service refuses: the CLI prints its reason and fails.
    code = svp_main(["coreset", "--url", base_url, "--key", key, "--project", str(pid), "--method", "entropy",
                     "--fractions", "1.5"])
    assert code == 2 and "between 0 and 1" in capsys.readouterr().err
    admin.close()


def test_job_survives_its_worker_being_killed(celery_settings, start_worker, digits):
    worker = start_worker()
    with running_service(celery_settings) as base_url:
        admin = httpx.Client(base_url=base_url, headers={"X-API-Key": admin_secret(celery_settings)}, timeout=60)
        # Killed as soon as the job reports the proxy's training (a new worker's first job spends
        # seconds importing torch there, so the kill lands inside the job).
        pid, n = labeled_project(admin, digits, "crash", proxy={"arch": "mlp", "epochs": 20, "batch_size": 16},
                                 pool=200, test=False)
        job_id = admin.post(f"/projects/{pid}/coresets", json={"method": "forgetting_events",
                                                               "fractions": [0.5]}).json()["job_id"]

        def training():
            job = admin.get(f"/projects/{pid}/coresets/{job_id}").json()
            return job["status"] == "running" and job["progress"].get("phase") == "training proxy"

        wait_for(training, timeout=60, what="the proxy to be training")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        start_worker()  # its reconciler finds the stale heartbeat and re-queues the job
        job = wait_finished(admin, pid, [job_id], timeout=120)[job_id]
        assert job["status"] == "succeeded" and job["attempts"] == 2
        with session_scope(celery_settings.resolved_database_url) as session:
            assert session.scalar(select(func.count()).select_from(t.CoresetResult)) == n
            assert session.scalar(select(func.count()).select_from(t.ModelArtifact)) == 1
        admin.close()

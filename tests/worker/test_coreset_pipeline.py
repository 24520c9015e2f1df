"""The core-set pipeline run in-process on both databases (no broker): the forgetting ranking on a
controlled toy problem, nesting and determinism of every method, target training and timings,
idempotent re-runs, cancellation, +inf scores stored and read back."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.config import Settings
from app.db import tables as t
from app.db.session import session_scope
from app.main import create_app
from worker.jobs import JobCancelled, JobContext
from worker.pipelines import coreset
from worker.runner import run_job

torch.set_num_threads(1)  # tiny models: one thread beats oversubscribed spinning threads on a shared CPU

# A gentle learning rate: clean examples are learned once and never forgotten, so forgetting events
# come from the flipped labels alone (checked over several data and training seeds).
MLP = {"arch": "mlp", "epochs": 20, "batch_size": 20, "lr": 0.01, "extra": {"hidden": [32]}}


@pytest.fixture
def settings(db_url, tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, torch_threads=1, _env_file=None)


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as test_client:  # no dispatcher: the test runs the jobs itself
        yield test_client


def toy_problem(n: int = 200, noisy: int = 20, seed: int = 0):
    """Two well separated classes of 8x8 images (bright left half vs bright right half, plus noise);
    the labels of ``noisy`` random examples are flipped. Returns (x, labels, flipped positions)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(60, 25, size=(n, 8, 8))
    x[y == 0, :, :4] += 120
    x[y == 1, :, 4:] += 120
    flipped = np.sort(rng.choice(n, size=noisy, replace=False))
    labels = y.copy()
    labels[flipped] = 1 - labels[flipped]
    return np.clip(x, 0, 255).astype(np.uint8), labels, flipped


def make_project(client, headers, x, y, *, test=None, name="toy", classes=("a", "b"), modality="image", proxy=MLP,
                 target=MLP) -> int:
    body = {"name": name, "modality": modality, "classes": list(classes), "proxy": proxy, "target": target}
    response = client.post("/projects", json=body, headers=headers)
    assert response.status_code == 201, response.text
    pid = response.json()["id"]
    for split, arrays in (("pool", (x, y)), ("test", test)):
        if arrays is None:
            continue
        xs, ys = arrays
        buffer = io.BytesIO()
        np.savez(buffer, x=xs, y=np.asarray(ys, dtype=np.int64), ids=np.array([f"{split}-{i}" for i in range(len(xs))]))
        response = client.post(f"/projects/{pid}/items/upload", data={"split": split},
                               files={"file": (f"{split}.npz", buffer.getvalue())}, headers=headers)
        assert response.status_code == 201, response.text
    return pid


def run_coreset(client, settings, headers, pid, **body) -> dict:
    response = client.post(f"/projects/{pid}/coresets", json=body, headers=headers)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert run_job(settings, job_id) == t.JOB_SUCCEEDED, client.get(f"/jobs/{job_id}", headers=headers).json()
    return client.get(f"/projects/{pid}/coresets/{job_id}", headers=headers).json()


def ranking(client, headers, pid, job_id, name="proxy") -> list[dict]:
    response = client.get(f"/projects/{pid}/coresets/{job_id}/ranking", params={"ranking": name, "limit": 100000},
                          headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def subset_ids(client, headers, pid, job_id, index) -> list[str]:
    response = client.get(f"/projects/{pid}/coresets/{job_id}/subsets/{index}", headers=headers)
    assert response.status_code == 200, response.text
    return [item["external_id"] for item in response.json()["items"]]


def test_forgetting_ranks_flipped_examples_first(client, settings, admin_headers):
    x, labels, flipped = toy_problem()
    pid = make_project(client, admin_headers, x, labels)
    job = run_coreset(client, settings, admin_headers, pid, method="forgetting_events", fractions=[0.1, 0.5], seed=3)
    assert job["status"] == "succeeded"
    items = ranking(client, admin_headers, pid, job["job_id"])
    assert [item["rank"] for item in items] == list(range(200))
    flipped_ids = {f"pool-{i}" for i in flipped}
    top = [item["external_id"] for item in items[: len(flipped)]]
    # The flipped examples are never learned (+inf) or learned by chance early and forgotten once the
    # model has the real pattern; the clean ones are learned and kept (0 events).
    assert set(top) == flipped_ids
    scores = {item["external_id"]: (math.inf if item["infinite"] else item["score"]) for item in items}
    assert all(scores[i] >= 1 for i in flipped_ids)
    assert any(math.isinf(scores[i]) for i in flipped_ids)
    assert all(scores[f"pool-{i}"] == 0 for i in range(200) if f"pool-{i}" not in flipped_ids)
    # Scores never increase down the ranking, and the 10% subset is exactly the top of it.
    ordered = [math.inf if item["infinite"] else item["score"] for item in items]
    assert all(a >= b for a, b in zip(ordered, ordered[1:]))
    assert subset_ids(client, admin_headers, pid, job["job_id"], 0) == top
    assert job["subsets"][0]["size"] == 20 and job["subsets"][1]["size"] == 100
    assert job["selection"]["train_s"] > 0 and job["selection"]["total_s"] >= job["selection"]["train_s"]


@pytest.mark.parametrize("method", ["forgetting_events", "entropy", "kcenters", "random"])
def test_subsets_are_nested_prefixes_and_deterministic(client, settings, admin_headers, method):
    x, labels, _ = toy_problem(n=120, noisy=12, seed=1)
    pid = make_project(client, admin_headers, x, labels)
    body = {"method": method, "fractions": [0.25, 0.5], "sizes": [90], "seed": 7}
    if method == "kcenters":
        body["kcenters_initial"] = 10
    first = run_coreset(client, settings, admin_headers, pid, **body)
    second = run_coreset(client, settings, admin_headers, pid, **body)
    assert [s["size"] for s in first["subsets"]] == [30, 60, 90]
    subsets = [subset_ids(client, admin_headers, pid, first["job_id"], i) for i in range(3)]
    assert [len(s) for s in subsets] == [30, 60, 90]
    assert all(len(set(s)) == len(s) for s in subsets)
    assert subsets[1][:30] == subsets[0] and subsets[2][:60] == subsets[1]
    assert [subset_ids(client, admin_headers, pid, second["job_id"], i) for i in range(3)] == subsets
    full = ranking(client, admin_headers, pid, first["job_id"])
    assert sorted(item["external_id"] for item in full) == sorted(f"pool-{i}" for i in range(120))
    if method == "kcenters":
        # The start set (no score) comes first, then greedy picks with non-increasing distances.
        assert all(item["score"] is None for item in full[:10])
        distances = [item["score"] for item in full[10:]]
        assert all(d is not None and d >= 0 for d in distances)
        assert all(a >= b - 1e-6 for a, b in zip(distances, distances[1:]))
    other_seed = run_coreset(client, settings, admin_headers, pid, **{**body, "seed": 8})
    if method in ("kcenters", "random"):
        assert subset_ids(client, admin_headers, pid, other_seed["job_id"], 0) != subsets[0]


def test_target_training_reports_accuracy_times_speedup_and_spearman(client, settings, admin_headers):
    x, labels, _ = toy_problem(n=160, noisy=0, seed=2)
    tx, tlabels, _ = toy_problem(n=60, noisy=0, seed=3)
    pid = make_project(client, admin_headers, x, labels, test=(tx, tlabels))
    job = run_coreset(client, settings, admin_headers, pid, method="entropy", fractions=[0.5], train_target=True,
                      full_data=True, seed=0)
    assert job["rankings"] == ["proxy", "target"]
    assert job["proxy_metrics"]["accuracy"] > 0.8  # a separable problem: learning happened
    full, (subset,) = job["full"], job["subsets"]
    assert full["size"] == 160 and full["accuracy"] > 0.8 and full["train_s"] > 0
    assert subset["target"]["size"] == 80 and 0 <= subset["target"]["accuracy"] <= 1
    assert subset["random"]["size"] == 80 and subset["random"]["accuracy"] > 0.8
    assert subset["end_to_end_s"] == pytest.approx(job["selection"]["total_s"] + subset["target"]["train_s"])
    assert subset["speedup"] == pytest.approx(full["train_s"] / subset["end_to_end_s"])
    assert -1 <= job["spearman_proxy_target"] <= 1
    compared = client.get(f"/projects/{pid}/coresets/compare",
                          params={"a": job["job_id"], "b": job["job_id"], "b_ranking": "target"}, headers=admin_headers)
    assert compared.status_code == 200, compared.text
    assert compared.json()["spearman"] == pytest.approx(job["spearman_proxy_target"])
    assert compared.json()["basis"] == "scores"
    with session_scope(settings.resolved_database_url) as session:
        artifacts = session.scalars(select(t.ModelArtifact).where(t.ModelArtifact.project_id == pid)).all()
        assert [(a.role, a.arch, a.job_id) for a in artifacts] == [("proxy", "mlp", job["job_id"])]


def test_rerun_after_a_crash_writes_the_results_once(client, settings, admin_headers):
    x, labels, _ = toy_problem(n=80, noisy=8)
    pid = make_project(client, admin_headers, x, labels)
    job = run_coreset(client, settings, admin_headers, pid, method="forgetting_events", fractions=[0.5])
    before = ranking(client, admin_headers, pid, job["job_id"])
    with session_scope(settings.resolved_database_url) as session:
        # What the reconciler does to a job whose worker stopped answering.
        session.get(t.Job, job["job_id"]).status = t.JOB_QUEUED
    assert run_job(settings, job["job_id"]) == t.JOB_SUCCEEDED
    with session_scope(settings.resolved_database_url) as session:
        count = session.scalar(select(func.count()).select_from(t.CoresetResult).where(t.CoresetResult.job_id == job["job_id"]))
        assert count == 80
        assert session.get(t.Job, job["job_id"]).attempts == 2
    assert ranking(client, admin_headers, pid, job["job_id"]) == before


def test_cancel_requested_stops_before_anything_is_written(client, settings, admin_headers):
    x, labels, _ = toy_problem(n=40, noisy=4)
    pid = make_project(client, admin_headers, x, labels)
    response = client.post(f"/projects/{pid}/coresets", json={"method": "entropy", "fractions": [0.5]},
                           headers=admin_headers)
    job_id = response.json()["job_id"]
    with session_scope(settings.resolved_database_url) as session:
        job = session.get(t.Job, job_id)
        job.status, job.cancel_requested = t.JOB_RUNNING, True
        params = dict(job.params)
    ctx = JobContext(settings=settings, job_id=job_id, project_id=pid, params=params)
    with pytest.raises(JobCancelled):
        coreset.run(ctx)
    with session_scope(settings.resolved_database_url) as session:
        assert session.scalar(select(func.count()).select_from(t.CoresetResult)) == 0
        assert session.get(t.Job, job_id).status == t.JOB_RUNNING  # the runner records the cancellation


def test_infinite_and_missing_scores_round_trip(client, settings, admin_headers):
    x, labels, _ = toy_problem(n=6, noisy=0)
    pid = make_project(client, admin_headers, x, labels)
    response = client.post(f"/projects/{pid}/coresets", json={"method": "forgetting_events", "sizes": [2]},
                           headers=admin_headers)
    job_id = response.json()["job_id"]
    with session_scope(settings.resolved_database_url) as session:
        ids = np.array(session.scalars(select(t.Item.id).where(t.Item.project_id == pid).order_by(t.Item.id)).all())
    scores = np.array([0.0, math.inf, 2.0, math.nan, math.inf, 1.0])
    ranked = coreset.Ranking(np.array([1, 4, 2, 5, 0, 3]), scores)
    result = {"method": "forgetting_events", "labeled": 6, "subsets": [{"fraction": None, "size": 2}],
              "proxy_metrics": {}, "rankings": ["proxy"]}
    ctx = JobContext(settings=settings, job_id=job_id, project_id=pid, params={})
    coreset._publish(ctx, pid, ids, {"proxy": ranked}, result, None, None)
    items = ranking(client, admin_headers, pid, job_id)
    assert [(i["external_id"], i["score"], i["infinite"]) for i in items] == [
        ("pool-1", None, True), ("pool-4", None, True), ("pool-2", 2.0, False), ("pool-5", 1.0, False),
        ("pool-0", 0.0, False), ("pool-3", None, False)]
    csv_text = client.get(f"/projects/{pid}/coresets/{job_id}/subsets/0", params={"format": "csv"},
                          headers=admin_headers).text
    assert csv_text.splitlines()[1:] == [f"pool-1,{ids[1]},0,inf,{labels[1] and 'b' or 'a'}",
                                         f"pool-4,{ids[4]},1,inf,{labels[4] and 'b' or 'a'}"]

"""Core-set API on both databases: admin only, every bad request a 422 that says why with nothing
written, the job queued with its resolved parameters, and the read routes (ranking pages, subsets
as JSON and CSV, Spearman comparison) over result rows as a worker leaves them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy.stats import spearmanr
from sqlalchemy import func, select

from app.db import tables as t
from app.db.session import session_scope
from app.main import create_app
from app.services import coresets as service
from app.services.jobs import RUN_JOB_TASK


class RecordingDispatcher:
    def __init__(self):
        self.sent: list[tuple[str, dict]] = []

    def send(self, task_name, kwargs):
        self.sent.append((task_name, dict(kwargs)))


@pytest.fixture
def dispatcher():
    return RecordingDispatcher()


@pytest.fixture
def client(settings, dispatcher):
    with TestClient(create_app(settings, dispatcher=dispatcher)) as test_client:
        yield test_client


def new_project(client, headers, *, name="p", modality="text", pool=20, labeled=20, test=0, proxy=None,
                target=None, seed=5) -> int:
    body = {"name": name, "modality": modality, "classes": ["neg", "pos"], "seed": seed}
    if modality == "text":
        body["proxy"] = proxy or {"arch": "vdcnn9", "epochs": 2}
        body["target"] = target or {"arch": "vdcnn9", "epochs": 3}
    response = client.post("/projects", json=body, headers=headers)
    assert response.status_code == 201, response.text
    pid = response.json()["id"]
    rows = [{"external_id": f"item-{i}", "text": f"text number {i} {name}", **({"label": ["neg", "pos"][i % 2]} if i < labeled else {})}
            for i in range(pool)]
    if rows:
        assert client.post(f"/projects/{pid}/items", json={"split": "pool", "items": rows}, headers=headers).status_code == 201
    if test:
        rows = [{"external_id": f"test-{i}", "text": f"held out {i}", "label": ["neg", "pos"][i % 2]} for i in range(test)]
        assert client.post(f"/projects/{pid}/items", json={"split": "test", "items": rows}, headers=headers).status_code == 201
    return pid


def job_count(settings) -> int:
    with session_scope(settings.resolved_database_url) as session:
        return session.scalar(select(func.count()).select_from(t.Job))


# -- creating jobs ---------------------------------------------------------------------------------


def test_admin_queues_a_job_with_resolved_parameters(client, admin_headers, dispatcher, settings):
    pid = new_project(client, admin_headers, pool=25, labeled=20, test=4)
    body = {"method": "forgetting_events", "fractions": [0.5, 0.25], "sizes": [10, 3], "train_target": True,
            "full_data": True}
    response = client.post(f"/projects/{pid}/coresets", json=body, headers=admin_headers)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["method"] == "forgetting_events"
    # Fractions of the 20 labeled items (not the 25 in the pool); one subset per size, ascending.
    assert [(s["fraction"], s["size"]) for s in job["subsets"]] == [(None, 3), (0.25, 5), (0.5, 10)]
    assert [s["url"] for s in job["subsets"]] == [f"/projects/{pid}/coresets/{job['job_id']}/subsets/{i}" for i in range(3)]
    assert job["labeled"] == 20 and job["seed"] == 5  # the project's seed by default
    assert job["proxy"]["arch"] == "vdcnn9" and job["target"]["arch"] == "vdcnn9"  # the project's models
    assert job["params"]["random_baseline"] is True and job["params"]["full_data"] is True
    assert dispatcher.sent == [(RUN_JOB_TASK, {"job_id": job["job_id"]})]
    generic = client.get(f"/jobs/{job['job_id']}", headers=admin_headers).json()
    assert generic["type"] == "coreset" and generic["params"]["subsets"][0] == {"fraction": None, "size": 3}
    listed = client.get(f"/projects/{pid}/coresets", headers=admin_headers).json()
    assert [j["job_id"] for j in listed] == [job["job_id"]]


def test_overrides_kcenters_start_set_and_random(client, admin_headers):
    pid = new_project(client, admin_headers, pool=300, labeled=300)
    kc = client.post(f"/projects/{pid}/coresets", json={"method": "kcenters", "fractions": [0.3], "seed": 9,
                                                        "proxy": "vdcnn17"}, headers=admin_headers).json()
    assert kc["seed"] == 9 and kc["proxy"] == {**kc["proxy"], "arch": "vdcnn17"}
    assert kc["params"]["kcenters_initial"] == 6  # 2% of 300: the paper's 1,000 scaled to a small pool
    explicit = client.post(f"/projects/{pid}/coresets", json={"method": "kcenters", "sizes": [50],
                                                              "kcenters_initial": 40}, headers=admin_headers).json()
    assert explicit["params"]["kcenters_initial"] == 40
    rnd = client.post(f"/projects/{pid}/coresets", json={"method": "random", "sizes": [50]}, headers=admin_headers).json()
    assert rnd["proxy"] is None and rnd["params"]["random_baseline"] is False


@pytest.mark.parametrize(
    "body, where, says",
    [
        ({"method": "entropy"}, "body", "at least one subset"),
        ({"method": "entropy", "fractions": [0]}, "fractions", "between 0 and 1"),
        ({"method": "entropy", "fractions": [1.0]}, "fractions", "between 0 and 1"),
        ({"method": "entropy", "fractions": [1.5]}, "fractions", "between 0 and 1"),
        ({"method": "entropy", "fractions": [-0.2]}, "fractions", "between 0 and 1"),
        ({"method": "entropy", "fractions": [1]}, "fractions", "between 0 and 1"),
        ({"method": "entropy", "fractions": ["0.3"]}, "fractions", "float"),
        ({"method": "entropy", "sizes": [0]}, "sizes", "greater than or equal to 1"),
        ({"method": "entropy", "sizes": [2.5]}, "sizes", "integer"),
        ({"method": "entropy", "sizes": [21]}, "sizes", "exceeds the 20 labeled"),
        ({"method": "entropy", "sizes": [2**40]}, "sizes", "less than or equal"),
        ({"method": "gradients", "sizes": [5]}, "method", "forgetting_events"),
        ({"method": "entropy", "sizes": [5], "colour": "red"}, "colour", "Extra inputs"),
        ({"method": "entropy", "sizes": [5], "seed": -1}, "seed", "greater than or equal"),
        ({"method": "entropy", "sizes": [5], "proxy": "preact20"}, "proxy", "not an architecture for text"),
        ({"method": "entropy", "sizes": [5], "proxy": {"arch": "vdcnn9", "epochs": 0}}, "epochs", "greater"),
        ({"method": "entropy", "sizes": [5], "full_data": True}, "body", "only apply with train_target"),
        ({"method": "entropy", "sizes": [5], "random_baseline": True}, "body", "only apply with train_target"),
        ({"method": "entropy", "sizes": [5], "train_target": True}, "train_target", "no test split"),
        ({"method": "entropy", "sizes": [5], "kcenters_initial": 3}, "kcenters_initial", "only applies"),
        ({"method": "kcenters", "sizes": [5], "kcenters_initial": 21}, "kcenters_initial", "exceeds the 20"),
        ({"method": "random", "sizes": [5], "proxy": "vdcnn9"}, "proxy", "trains no proxy"),
        ({"method": "forgetting_events", "sizes": [5], "proxy": "fasttext"}, "arch", "per-example predictions"),
    ],
)
def test_bad_requests_are_422_and_write_nothing(client, admin_headers, dispatcher, settings, body, where, says):
    pid = new_project(client, admin_headers)
    before = job_count(settings)
    response = client.post(f"/projects/{pid}/coresets", json=body, headers=admin_headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    text = error["message"] + " " + " ".join(str(d) for d in error["details"])
    assert says in text, error
    assert any(where in [str(part) for part in d["loc"]] for d in error["details"]), error["details"]
    assert job_count(settings) == before and dispatcher.sent == []


def test_forgetting_with_a_fasttext_project_proxy_says_why(client, admin_headers, settings):
    pid = new_project(client, admin_headers, proxy={"arch": "fasttext"})
    response = client.post(f"/projects/{pid}/coresets", json={"method": "forgetting_events", "fractions": [0.5]},
                           headers=admin_headers)
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "fasttext" in message and "forgetting events" in message and "torch proxy" in message
    # The same proxy is fine for the methods that only need its predictions or features.
    for method in ("entropy", "kcenters"):
        ok = client.post(f"/projects/{pid}/coresets", json={"method": method, "fractions": [0.5]}, headers=admin_headers)
        assert ok.status_code == 202, ok.text


def test_too_few_labeled_items(client, admin_headers, settings):
    pid = new_project(client, admin_headers, pool=10, labeled=1)
    response = client.post(f"/projects/{pid}/coresets", json={"method": "random", "sizes": [1]}, headers=admin_headers)
    assert response.status_code == 422 and "1 labeled pool item" in response.json()["error"]["message"]
    assert job_count(settings) == 0


def test_admin_only(client, admin_headers, make_key, settings):
    pid = new_project(client, admin_headers)
    other = new_project(client, admin_headers, name="other")
    body = {"method": "random", "sizes": [5]}
    assert client.post(f"/projects/{pid}/coresets", json=body).status_code == 401
    annotator = make_key("annotator", project_id=pid)
    response = client.post(f"/projects/{pid}/coresets", json=body, headers=annotator)
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    for path in ("", "/1", "/1/ranking", "/1/subsets/0", "/compare?a=1&b=1"):
        assert client.get(f"/projects/{pid}/coresets{path}", headers=annotator).status_code == 403, path
    scoped_admin = make_key("admin", project_id=other)
    assert client.post(f"/projects/{pid}/coresets", json=body, headers=scoped_admin).status_code == 403
    assert job_count(settings) == 0
    assert client.post(f"/projects/{other}/coresets", json=body, headers=scoped_admin).status_code == 202


# -- reading results -------------------------------------------------------------------------------


def finished_job(settings, pid: int, method: str, scores, ranks, *, sizes=(2, 4), ranking="proxy",
                 job_id: int | None = None) -> int:
    """Result rows and result as the worker writes them (scores aligned with the pool items by id)."""
    with session_scope(settings.resolved_database_url) as session:
        ids = session.scalars(select(t.Item.id).where(t.Item.project_id == pid, t.Item.split == "pool",
                                                      t.Item.label.is_not(None)).order_by(t.Item.id)).all()
        if job_id is None:
            job = t.Job(project_id=pid, type=t.JOB_CORESET, status=t.JOB_SUCCEEDED,
                        params={"method": method, "seed": 0, "subsets": [{"fraction": None, "size": s} for s in sizes]},
                        result={"labeled": len(ids), "rankings": [ranking],
                                "subsets": [{"fraction": None, "size": s} for s in sizes]})
            session.add(job)
            session.flush()
            job_id = job.id
        else:
            job = session.get(t.Job, job_id)
            job.result = {**job.result, "rankings": sorted({*job.result["rankings"], ranking})}
        for item_id, score, rank in zip(ids, scores, ranks):
            session.add(t.CoresetResult(job_id=job_id, item_id=item_id, ranking=ranking, rank=int(rank),
                                        score=None if score is None else float(score)))
    return job_id


def test_ranking_pages_and_subsets(client, admin_headers, settings):
    pid = new_project(client, admin_headers, pool=8, labeled=6)
    scores = [0.0, math.inf, 3.0, 1.0, math.inf, 2.0]
    ranks = [5, 0, 2, 4, 1, 3]
    job_id = finished_job(settings, pid, "forgetting_events", scores, ranks)
    summary = client.get(f"/projects/{pid}/coresets/{job_id}", headers=admin_headers).json()
    assert summary["status"] == "succeeded" and [s["size"] for s in summary["subsets"]] == [2, 4]
    page = client.get(f"/projects/{pid}/coresets/{job_id}/ranking", params={"limit": 4}, headers=admin_headers).json()
    assert page["total"] == 6 and page["next_offset"] == 4
    assert [(i["external_id"], i["score"], i["infinite"]) for i in page["items"]] == [
        ("item-1", None, True), ("item-4", None, True), ("item-2", 3.0, False), ("item-5", 2.0, False)]
    rest = client.get(f"/projects/{pid}/coresets/{job_id}/ranking", params={"offset": 4}, headers=admin_headers).json()
    assert [i["rank"] for i in rest["items"]] == [4, 5] and rest["next_offset"] is None
    subset = client.get(f"/projects/{pid}/coresets/{job_id}/subsets/1", headers=admin_headers).json()
    assert (subset["index"], subset["size"], subset["total"]) == (1, 4, 4)
    assert [i["external_id"] for i in subset["items"]] == ["item-1", "item-4", "item-2", "item-5"]
    assert [i["label"] for i in subset["items"]] == ["pos", "neg", "neg", "pos"]
    paged = client.get(f"/projects/{pid}/coresets/{job_id}/subsets/1", params={"offset": 3, "limit": 5},
                       headers=admin_headers).json()
    assert [i["external_id"] for i in paged["items"]] == ["item-5"] and paged["next_offset"] is None
    response = client.get(f"/projects/{pid}/coresets/{job_id}/subsets/0", params={"format": "csv"}, headers=admin_headers)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    lines = response.text.splitlines()
    assert lines[0] == "external_id,item_id,rank,score,label"
    assert [line.split(",")[0] for line in lines[1:]] == ["item-1", "item-4"]
    assert [line.split(",")[3] for line in lines[1:]] == ["inf", "inf"]


def test_read_errors(client, admin_headers, settings):
    pid = new_project(client, admin_headers, pool=6)
    other = new_project(client, admin_headers, name="other", pool=6)
    job_id = finished_job(settings, pid, "entropy", [0.1] * 6, range(6))
    queued = client.post(f"/projects/{pid}/coresets", json={"method": "random", "sizes": [2]}, headers=admin_headers).json()
    base = f"/projects/{pid}/coresets"
    cases = [
        (f"{base}/{queued['job_id']}/ranking", 409),
        (f"{base}/{queued['job_id']}/subsets/0", 409),
        (f"{base}/{queued['job_id']}/subsets/0?format=csv", 409),
        (f"{base}/{job_id}/subsets/2", 404),
        (f"{base}/{job_id}/ranking?ranking=target", 404),
        (f"{base}/{job_id}/subsets/0?format=csv&ranking=target", 404),
        (f"{base}/{job_id}/ranking?ranking=oracle", 422),
        (f"{base}/{job_id}/subsets/0?format=xml", 422),
        (f"{base}/{job_id}/subsets/-1", 422),
        (f"{base}/{job_id}/ranking?limit=0", 422),
        (f"{base}/{2**31}", 422),
        (f"{base}/999999", 404),
        (f"/projects/{other}/coresets/{job_id}", 404),
        (f"{base}/compare?a={job_id}", 422),
        (f"{base}/compare?a={job_id}&b={queued['job_id']}", 409),
    ]
    with session_scope(settings.resolved_database_url) as session:
        select_job = t.Job(project_id=pid, type=t.JOB_SELECT_ROUND, status=t.JOB_SUCCEEDED)
        session.add(select_job)
        session.flush()
        cases.append((f"{base}/{select_job.id}", 404))
    for url, status in cases:
        response = client.get(url, headers=admin_headers)
        assert response.status_code == status, (url, response.text)
        assert response.json()["error"]["code"], url


def test_compare_matches_scipy_on_scores_and_on_ranks(client, admin_headers, settings):
    pid = new_project(client, admin_headers, pool=40, labeled=40)
    rng = np.random.default_rng(0)
    # Forgetting counts: many ties (0 events), some never learned.
    a = rng.integers(0, 4, size=40).astype(float)
    a[rng.choice(40, 5, replace=False)] = math.inf
    b = a + rng.integers(0, 3, size=40)
    order_a, order_b = np.argsort(-a, kind="stable"), np.argsort(-b, kind="stable")
    ranks_a, ranks_b = np.argsort(order_a), np.argsort(order_b)
    job_a = finished_job(settings, pid, "forgetting_events", a, ranks_a)
    job_b = finished_job(settings, pid, "forgetting_events", b, ranks_b)
    body = client.get(f"/projects/{pid}/coresets/compare", params={"a": job_a, "b": job_b}, headers=admin_headers).json()
    assert body["basis"] == "scores" and body["items"] == 40
    assert body["spearman"] == pytest.approx(spearmanr(a, b).statistic)
    # A k-centers ranking has no comparable score: positions are compared.
    kc = finished_job(settings, pid, "kcenters", [None] * 40, ranks_b)
    body = client.get(f"/projects/{pid}/coresets/compare", params={"a": job_a, "b": kc}, headers=admin_headers).json()
    assert body["basis"] == "ranks" and body["spearman"] == pytest.approx(spearmanr(ranks_a, ranks_b).statistic)
    assert body["a"] == {"job_id": job_a, "ranking": "proxy", "method": "forgetting_events"}
    # Proxy against target of one job.
    finished_job(settings, pid, "forgetting_events", b, ranks_b, ranking="target", job_id=job_a)
    body = client.get(f"/projects/{pid}/coresets/compare", params={"a": job_a, "b": job_a, "b_ranking": "target"},
                      headers=admin_headers).json()
    assert body["spearman"] == pytest.approx(spearmanr(a, b).statistic)
    constant = finished_job(settings, pid, "entropy", [0.5] * 40, range(40))
    body = client.get(f"/projects/{pid}/coresets/compare", params={"a": job_a, "b": constant}, headers=admin_headers).json()
    assert body["spearman"] is None


def test_spearman_and_average_ranks_against_scipy():
    rng = np.random.default_rng(1)
    for _ in range(20):
        a = rng.integers(0, 5, size=30).astype(float)
        b = rng.normal(size=30)
        a[rng.integers(0, 30)] = math.inf
        assert service.spearman_rho(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert service.average_ranks(np.array([3.0, 1.0, 3.0, math.inf])).tolist() == [1.5, 0.0, 1.5, 3.0]
    assert service.spearman_rho(np.ones(5), np.arange(5.0)) is None
    assert service.spearman_rho(np.arange(5.0), -np.arange(5.0)) == pytest.approx(-1.0)


def test_resolve_subsets():
    assert service.resolve_subsets(fractions=[0.3, 0.5, 0.001], sizes=[5, 50], labeled=100) == [
        {"fraction": 0.001, "size": 1}, {"fraction": None, "size": 5}, {"fraction": 0.3, "size": 30},
        {"fraction": 0.5, "size": 50}]
    assert service.resolve_subsets(fractions=[0.25], sizes=[], labeled=10) == [{"fraction": 0.25, "size": 3}]
    with pytest.raises(ValueError, match="exceeds"):
        service.resolve_subsets(fractions=[], sizes=[11], labeled=10)
    assert service.default_kcenters_initial(50_000) == 1000 and service.default_kcenters_initial(10) == 1

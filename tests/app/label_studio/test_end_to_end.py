"""Label Studio driving a real loop: the embedded worker retrains a fastText proxy after the round
labeled through webhooks, stores its predictions with the round, and /predict then serves the new
batch first and the rest by least confidence, with the proxy's classes as pre-annotations."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import tables as t
from app.db.session import session_scope
from tests.app._lifecycle import queries_of
from tests.app.label_studio._ls import annotation_event, basic, mapping, recorded, secret_of, tasks_request

GOOD = ["great", "love", "excellent", "wonderful", "perfect", "amazing"]
BAD = ["awful", "hate", "terrible", "broken", "useless", "horrible"]


def corpus() -> list[tuple[int, str, str]]:
    """(task id, text, true class): 40 reviews whose words give the class away."""
    rows = []
    for i in range(40):
        words, label = (GOOD, "Positive") if i % 2 else (BAD, "Negative")
        text = f"{words[i % 6]} {words[(i + 1) % 6]} item {i} {words[(i + 3) % 6]}"
        rows.append((1000 + i, text, label))
    return rows


@pytest.fixture
def service(settings):
    from svp.asgi import create_service

    app = create_service(settings)
    with TestClient(app) as client:
        yield app, client


def wait_round_open(db_url, project_id, index, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(db_url) as session:
            round_ = session.scalar(select(t.Round).where(t.Round.project_id == project_id, t.Round.index == index))
            job = session.scalar(select(t.Job).where(t.Job.project_id == project_id, t.Job.type == "select_round"))
            if job is not None and job.status == "failed":
                pytest.fail(f"select_round failed: {job.error}")
            if round_ is not None and round_.status == "open":
                return
        time.sleep(0.2)
    pytest.fail(f"round {index} did not open in {timeout}s")


def test_label_studio_drives_svp_rounds(service, make_key, admin_headers, db_url):
    app, client = service
    config = recorded("/setup")["request"]["schema"].replace('    <Choice value="Neutral"/>\n', "")
    response = client.post("/projects", headers=admin_headers, json={
        "name": "ls-e2e", "modality": "text", "classes": ["Positive", "Negative"], "seed": 3,
        "proxy": {"arch": "fasttext", "epochs": 40, "lr": 0.5}, "target": {"arch": "fasttext"},
        "strategy": "least_confidence", "schedule": {"initial": 8, "rounds": [6], "budget": 30},
    })
    pid = response.json()["id"]
    ls = basic(secret_of(make_key("annotator", "label-studio", project_id=pid)))
    rows = corpus()
    truth = {task_id: label for task_id, _, label in rows}
    setup = {**recorded("/setup")["request"], "schema": config}
    predict = {**tasks_request([(task_id, text) for task_id, text, _ in rows]), "label_config": config}

    def call(path, body):
        response = client.post(f"/ls/{pid}{path}", json=body, headers=ls)
        assert response.status_code == 200, response.text
        return response.json()

    call("/predict", predict)  # imports the 40 tasks
    assert call("/webhook", recorded("/webhook", "START_TRAINING")["request"])["status"] == "started"
    version0 = call("/setup", setup)["model_version"]
    task_of = {item: task for task, item in mapping(db_url, pid).items()}
    round0 = [task_of[q.item_id] for q in queries_of(db_url, pid, 0)]
    scores = call("/predict", predict)["results"]
    served = sorted(truth, key=lambda task_id: scores[list(truth).index(task_id)]["score"])
    assert served[:8] == round0

    # Annotators label what Label Studio serves; the round's last label queues the retrain.
    for n, task_id in enumerate(round0):
        event = annotation_event(task_id, truth[task_id], annotation_id=n + 1, updated_at=f"t{n}")
        event["project"]["label_config"] = config
        assert call("/webhook", event)["status"] == "recorded"
    wait_round_open(db_url, pid, 1)
    version1 = call("/setup", setup)["model_version"]
    assert version1 != version0

    body = call("/predict", predict)
    assert {r["model_version"] for r in body["results"]} == {version1}
    by_task = dict(zip(truth, body["results"]))
    with session_scope(db_url) as session:
        stored = {
            task_of[p.item_id]: p
            for p in session.scalars(select(t.Prediction).where(t.Prediction.project_id == pid))
        }
    assert set(stored) == set(truth) and {p.round_index for p in stored.values()} == {1}  # the whole pool
    unlabeled = [task_id for task_id in truth if task_id not in round0]
    # Least confidence picked round 1 from exactly these predictions (ties: lower item id).
    by_confidence = sorted(unlabeled, key=lambda task_id: (stored[task_id].confidence, stored[task_id].item_id))
    round1 = [task_of[q.item_id] for q in queries_of(db_url, pid, 1)]
    assert sorted(round1) == sorted(by_confidence[:6])
    # Served order: round 1 by rank, the rest by least confidence, the labeled tasks last.
    served = sorted(truth, key=lambda task_id: by_task[task_id]["score"])
    assert served[:6] == round1
    assert served[6:32] == [task_id for task_id in by_confidence if task_id not in round1]
    assert sorted(served[32:]) == sorted(round0)
    # The pre-annotation is the proxy's class, and the proxy learned from 8 labels.
    correct = sum(by_task[task_id]["result"][0]["value"]["choices"] == [truth[task_id]] for task_id in unlabeled)
    assert correct / len(unlabeled) >= 0.8, correct

"""The Label Studio ML-backend protocol against the service, with the request bodies a real Label
Studio 1.23.2 sent (fixtures/): response shapes, one result per task in order, scores ordered as the
service selects, the model version bumping after a retrain, idempotent labels."""

from __future__ import annotations

import base64
import time

from sqlalchemy import select

from app.db import tables as t
from app.db.session import session_scope
from app.services.label_studio.predictions import store_predictions
from app.services.rounds import open_round
from tests.app._lifecycle import assert_error, queries_of
from tests.app.label_studio._ls import (
    CLASSES,
    annotation_event,
    count,
    create_project,
    ls_key,
    mapping,
    recorded,
    tasks_request,
)

TEXTS = [f"review number {i}: {'great' if i % 2 else 'awful'} product {i}" for i in range(1, 13)]


def post(client, project_id, path, body, headers):
    return client.post(f"/ls/{project_id}{path}", json=body, headers=headers)


def setup_version(client, project_id, headers) -> str:
    response = post(client, project_id, "/setup", recorded("/setup")["request"], headers)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"model_version"}
    return response.json()["model_version"]


def item_of(url, project_id, task_id) -> t.Item:
    with session_scope(url) as session:
        return session.get(t.Item, mapping(url, project_id)[task_id])


def test_recorded_session_in_order(client, admin_headers, make_key, db_url):
    pid = create_project(client, admin_headers)
    ls = ls_key(make_key, pid)

    health = client.get(f"/ls/{pid}/health", headers=ls)
    assert health.status_code == 200 and health.json()["status"] == "UP"
    draft_version = setup_version(client, pid, ls)
    assert draft_version.endswith("-draft")

    predict = recorded("/predict")
    response = post(client, pid, "/predict", predict["request"], ls)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == len(predict["request"]["tasks"]) == len(predict["response"]["results"])
    assert all(set(r) == set(predict["response"]["results"][0]) for r in results)  # result, score, model_version
    assert all(r["model_version"] == draft_version and r["result"] == [] for r in results)  # no proxy yet
    assert all(0.7 < r["score"] < 1.0 for r in results)
    # Each task became a pool item keyed by its Label Studio id, with its text.
    for task in predict["request"]["tasks"]:
        item = item_of(db_url, pid, task["id"])
        assert (item.external_id, item.text, item.split) == (f"ls:{task['id']}", task["data"]["text"], "pool")

    updated = post(client, pid, "/webhook", recorded("/webhook", "PROJECT_UPDATED")["request"], ls)
    assert updated.status_code == 200 and updated.json()["status"] == "ignored"

    start = post(client, pid, "/webhook", recorded("/webhook", "START_TRAINING")["request"], ls)
    assert start.status_code == 200 and start.json()["status"] == "started", start.text
    round0_version = setup_version(client, pid, ls)
    assert round0_version != draft_version and round0_version.endswith("-round-0")

    created = recorded("/webhook", "ANNOTATION_CREATED")["request"]
    first = post(client, pid, "/webhook", created, ls)
    assert first.status_code == 200 and first.json()["status"] == "recorded", first.text
    again = post(client, pid, "/webhook", created, ls)  # the same webhook delivered twice
    assert again.status_code == 200 and again.json()["status"] == "replayed"
    item = item_of(db_url, pid, created["annotation"]["task"])
    assert item.label == "Negative"
    assert count(db_url, t.Annotation, t.Annotation.item_id == item.id) == 1

    new_task = post(client, pid, "/webhook", recorded("/webhook", "TASKS_CREATED")["request"], ls)
    assert new_task.status_code == 200 and new_task.json()["details"]["imported"] == 1
    single = recorded("/predict", index=1)
    response = post(client, pid, "/predict", single["request"], ls)
    assert response.status_code == 200
    [result] = response.json()["results"]
    assert result["model_version"] == round0_version
    assert item_of(db_url, pid, single["request"]["tasks"][0]["id"]).text == single["request"]["tasks"][0]["data"]["text"]


def _sorted_by_score(client, pid, ls, tasks) -> tuple[str, list[int], dict[int, dict]]:
    response = post(client, pid, "/predict", tasks_request(tasks), ls)
    assert response.status_code == 200, response.text
    body = response.json()
    results = body["results"]
    assert len(results) == len(tasks)
    by_task = {task_id: r for (task_id, _), r in zip(tasks, results)}
    assert all(r["model_version"] == body["model_version"] for r in results)
    return body["model_version"], sorted(by_task, key=lambda task_id: by_task[task_id]["score"]), by_task


def test_scores_serve_the_service_selection_and_the_version_bumps_after_a_retrain(client, admin_headers, make_key, db_url):
    pid = create_project(client, admin_headers, schedule={"initial": 4, "rounds": [4], "budget": 10})
    ls = ls_key(make_key, pid)
    setup_version(client, pid, ls)
    tasks = [(100 + i, text) for i, text in enumerate(TEXTS)]
    _sorted_by_score(client, pid, ls, tasks)  # imports the tasks
    assert post(client, pid, "/webhook", recorded("/webhook", "START_TRAINING")["request"], ls).json()["status"] == "started"
    item_to_task = {item: task for task, item in mapping(db_url, pid).items()}

    # Round 0: its random draw first, in draw order; the rest after it.
    version0, order, _ = _sorted_by_score(client, pid, ls, tasks)
    round0 = [item_to_task[q.item_id] for q in queries_of(db_url, pid, 0)]
    assert order[:4] == round0

    # Label round 0 through webhooks; its last label queues the retrain, the version stays until
    # the retrained proxy publishes round 1.
    for n, task_id in enumerate(round0):
        event = annotation_event(task_id, CLASSES[n % 2], annotation_id=500 + n, updated_at=f"2026-11-28T22:0{n}:00Z")
        assert post(client, pid, "/webhook", event, ls).json()["status"] == "recorded"
    with session_scope(db_url) as session:
        job = session.scalar(select(t.Job).where(t.Job.project_id == pid))
        assert (job.type, job.status, job.params) == ("select_round", "queued", {"round_index": 1})
    assert setup_version(client, pid, ls) == version0

    # What the select_round job publishes: round 1's picks and the pool's predictions, together.
    unlabeled = sorted(item for item, task in item_to_task.items() if task not in round0)
    confidence = {item: 0.34 + 0.6 * ((item * 7919) % 13) / 13 for item in unlabeled}
    confidence[unlabeled[0]] = confidence[unlabeled[1]]  # a tie: the lower item id comes first
    picks = sorted(unlabeled, key=lambda item: (confidence[item], item))[:4]
    with session_scope(db_url) as session:
        open_round(session, project_id=pid, round_index=1, picks=[(i, None) for i in picks], timings={}, metrics={},
                   selector={"arch": "fasttext"})
        store_predictions(session, project_id=pid, round_index=1, item_ids=unlabeled,
                          class_indices=[item % 3 for item in unlabeled], confidences=[confidence[i] for i in unlabeled])

    version1 = setup_version(client, pid, ls)
    assert version1 != version0 and version1.endswith("-round-1")
    got_version, order, by_task = _sorted_by_score(client, pid, ls, tasks)
    assert got_version == version1
    rest = sorted((item for item in unlabeled if item not in picks), key=lambda item: (confidence[item], item))
    assert order == [item_to_task[i] for i in picks + rest] + order[-4:]
    assert set(order[-4:]) == set(round0)  # labeled: last
    # Each result is the proxy's class as a choices result, shaped like the recorded ones.
    shape = recorded("/predict")["response"]["results"][0]["result"][0]
    for item in unlabeled:
        [result] = by_task[item_to_task[item]]["result"]
        assert set(result) == set(shape) and result["from_name"] == "sentiment" and result["to_name"] == "text"
        assert result["value"] == {"choices": [CLASSES[item % 3]]}


def test_labels_once_updates_cancels_and_deletions(client, admin_headers, make_key, db_url):
    pid = create_project(client, admin_headers)
    ls = ls_key(make_key, pid)
    tasks = [(1, "first text"), (2, "second text"), (3, "third text")]
    post(client, pid, "/predict", tasks_request(tasks), ls)
    client.post(f"/projects/{pid}/start", headers=admin_headers)
    item = item_of(db_url, pid, 1).id

    def send(body):
        response = post(client, pid, "/webhook", body, ls)
        assert response.status_code == 200, response.text
        return response.json()

    created = annotation_event(1, "Positive", annotation_id=7, updated_at="2026-11-28T22:00:00.1Z")
    assert send(created)["status"] == "recorded"
    assert send(created)["status"] == "replayed"
    updated = annotation_event(1, "Neutral", annotation_id=7, updated_at="2026-11-28T22:05:00Z", action="ANNOTATION_UPDATED")
    assert send(updated)["status"] == "recorded"
    assert send(updated)["status"] == "replayed"
    assert send(created)["status"] == "replayed"  # a late re-delivery of the old state changes nothing
    assert item_of(db_url, pid, 1).label == "Neutral"
    assert count(db_url, t.Annotation, t.Annotation.item_id == item) == 2

    skipped = annotation_event(2, "Positive", annotation_id=8, updated_at="x", cancelled=True)
    assert send(skipped)["status"] == "skipped"
    empty = annotation_event(2, None, annotation_id=9, updated_at="y")
    assert send(empty)["status"] == "skipped"
    assert item_of(db_url, pid, 2).label is None

    deleted = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 7}], "project": created["project"]}
    assert send(deleted)["status"] == "retracted"
    assert item_of(db_url, pid, 1).label is None
    assert send(deleted)["status"] == "skipped"  # delivered twice: nothing left to retract
    # Deleting an annotation whose label was since replaced by another one leaves the newer label.
    assert send(annotation_event(3, "Positive", annotation_id=10, updated_at="a"))["status"] == "recorded"
    assert send(annotation_event(3, "Negative", annotation_id=11, updated_at="b"))["status"] == "recorded"
    assert send({**deleted, "annotations": [{"id": 10}]})["status"] == "skipped"
    assert item_of(db_url, pid, 3).label == "Negative"


def test_start_training_queues_the_retrain_and_answers_at_once(client, admin_headers, make_key, db_url):
    pid = create_project(client, admin_headers, schedule={"initial": 3, "rounds": [3], "budget": 10})
    ls = ls_key(make_key, pid)
    post(client, pid, "/predict", tasks_request([(i, text) for i, text in enumerate(TEXTS, start=1)]), ls)
    body = recorded("/webhook", "START_TRAINING")["request"]

    def train() -> dict:
        began = time.perf_counter()
        response = post(client, pid, "/webhook", body, ls)
        assert time.perf_counter() - began < 1.0  # Label Studio's webhook timeout
        assert response.status_code == 200, response.text
        return response.json()

    assert train()["status"] == "started"
    nothing = train()
    assert nothing["status"] == "ignored" and "nothing to train" in nothing["message"]
    assert count(db_url, t.Job, t.Job.project_id == pid) == 0
    task = next(tid for tid, item in mapping(db_url, pid).items() if item == queries_of(db_url, pid, 0)[0].item_id)
    post(client, pid, "/webhook", annotation_event(task, "Positive", annotation_id=1, updated_at="a"), ls)
    advanced = train()
    assert advanced["status"] == "advanced" and advanced["details"]["job_type"] == "select_round"
    with session_scope(db_url) as session:
        job = session.get(t.Job, advanced["details"]["job_id"])
        assert job.status == "queued"  # training is a queued job, never inline
        assert session.get(t.Project, pid).current_round == 1
    again = train()
    assert again["status"] == "ignored" and "being selected" in again["message"]
    assert count(db_url, t.Job, t.Job.project_id == pid) == 1


def test_unknown_events_are_acknowledged(client, admin_headers, make_key):
    pid = create_project(client, admin_headers)
    ls = ls_key(make_key, pid)
    for action in ("PROJECT_CREATED", "TASKS_DELETED", "SOMETHING_NEW"):
        response = post(client, pid, "/webhook", {"action": action, "tasks": [{"id": 4}]}, ls)
        assert response.status_code == 200
        assert response.json()["status"] == "ignored" and response.json()["action"] == action


def test_tasks_with_the_same_content_share_one_item(client, admin_headers, make_key, db_url):
    pid = create_project(client, admin_headers)
    ls = ls_key(make_key, pid)
    response = post(client, pid, "/predict", tasks_request([(1, "same words"), (2, "same words"), (3, "other")]), ls)
    assert response.status_code == 200
    scores = [r["score"] for r in response.json()["results"]]
    assert scores[0] == scores[1] != scores[2]
    tasks = mapping(db_url, pid)
    assert tasks[1] == tasks[2] != tasks[3]
    assert count(db_url, t.Item, t.Item.project_id == pid) == 2
    # Asking again imports nothing.
    post(client, pid, "/predict", tasks_request([(1, "same words"), (2, "same words"), (3, "other")]), ls)
    assert count(db_url, t.Item, t.Item.project_id == pid) == 2
    client.post(f"/projects/{pid}/start", headers=admin_headers)
    assert post(client, pid, "/webhook", annotation_event(2, "Neutral", annotation_id=3, updated_at="a"), ls).status_code == 200
    assert item_of(db_url, pid, 1).label == "Neutral"


def test_credentials(client, admin_headers, make_key):
    pid = create_project(client, admin_headers)
    other = create_project(client, admin_headers, name="other")
    ls = ls_key(make_key, pid)
    secret = make_key("annotator", "bearer", project_id=pid)["Authorization"].split(" ", 1)[1]

    no_key = client.get(f"/ls/{pid}/health")
    assert_error(no_key, 401, "unauthorized", "api key", "http://ls:<key>@")
    assert no_key.headers["www-authenticate"].startswith("Basic")
    assert_error(client.get(f"/ls/{pid}/health", headers={"Authorization": "Basic bm9wZQ=="}), 401, "unauthorized")
    assert_error(client.get(f"/ls/{pid}/health", headers={"Authorization": "Basic %%%"}), 401, "unauthorized", "malformed")
    assert_error(client.get(f"/ls/{other}/health", headers=ls), 403, "forbidden", "scoped")
    assert_error(client.get(f"/ls/999999/health", headers=admin_headers), 404, "not_found")
    for headers in (ls, {"Authorization": f"Bearer {secret}"}, {"X-API-Key": secret}):
        assert client.get(f"/ls/{pid}/health", headers=headers).status_code == 200
    as_user = base64.b64encode(f"{secret}:".encode()).decode()
    assert client.get(f"/ls/{pid}/health", headers={"Authorization": f"Basic {as_user}"}).status_code == 200
    # The key in the backend URL, as Label Studio's webhooks carry it.
    assert client.get(f"http://ls:{secret}@testserver/ls/{pid}/health").status_code == 200
    [bearer] = [k for k in client.get("/keys", headers=admin_headers).json() if k["name"] == "bearer"]
    assert client.delete(f"/keys/{bearer['id']}", headers=admin_headers).status_code == 200
    assert_error(client.get(f"/ls/{pid}/health", headers={"X-API-Key": secret}), 401, "unauthorized", "revoked")


def test_bad_input_is_a_4xx_and_writes_nothing(client, admin_headers, make_key, db_url):
    pid = create_project(client, admin_headers)
    ls = ls_key(make_key, pid)
    ner = "<View><Text name='t' value='$text'/><Labels name='ner' toName='t'><Label value='PER'/></Labels></View>"
    assert_error(post(client, pid, "/setup", {"schema": ner, "project": "1.1"}, ls), 422, "unprocessable", "labels")
    mismatch = recorded("/setup")["request"]["schema"].replace("Neutral", "Mixed")
    assert_error(post(client, pid, "/setup", {"schema": mismatch}, ls), 422, "unprocessable", "'Mixed'", "'Neutral'")
    assert_error(post(client, pid, "/setup", {"project": "1.1"}, ls), 422, "validation_error", "schema")
    assert count(db_url, t.LabelStudioLink) == 0

    # /predict before any /setup and without a label_config: nothing to map the tasks with.
    body = tasks_request([(1, "a text")])
    assert_error(post(client, pid, "/predict", {"tasks": body["tasks"]}, ls), 409, "conflict", "/setup")
    assert_error(post(client, pid, "/predict", {"tasks": "nope"}, ls), 422, "validation_error")
    assert_error(post(client, pid, "/predict", {**body, "tasks": [{"id": 0, "data": {}}]}, ls), 422, "validation_error")
    missing = tasks_request([(1, "fine"), (2, "also fine")])
    missing["tasks"][1]["data"] = {"body": "wrong key"}
    assert_error(post(client, pid, "/predict", missing, ls), 422, "unprocessable", "'text'", "'task': 2")
    not_text = tasks_request([(1, "fine")])
    not_text["tasks"][0]["data"]["text"] = 42
    assert_error(post(client, pid, "/predict", not_text, ls), 422, "unprocessable", "string")
    empty = tasks_request([(1, "   ")])
    assert_error(post(client, pid, "/predict", empty, ls), 422, "unprocessable", "'task': 1", "empty")
    assert count(db_url, t.Item, t.Item.project_id == pid) == 0
    assert count(db_url, t.LabelStudioTask) == 0

    assert_error(client.post(f"/ls/{pid}/webhook", content=b"{not json", headers={**ls, "Content-Type": "application/json"}),
                 422, "validation_error")
    assert_error(post(client, pid, "/webhook", {"annotation": {}}, ls), 422, "validation_error", "action")
    assert_error(post(client, pid, "/webhook", {"action": "ANNOTATION_CREATED", "annotation": {"id": 1}}, ls),
                 422, "unprocessable", "annotation")
    assert_error(post(client, pid, "/webhook", {"action": "ANNOTATIONS_DELETED", "annotations": 5}, ls),
                 422, "unprocessable", "list")
    post(client, pid, "/predict", tasks_request([(1, "a text"), (2, "b text")]), ls)
    client.post(f"/projects/{pid}/start", headers=admin_headers)
    assert_error(post(client, pid, "/webhook", annotation_event(99, "Positive", annotation_id=1, updated_at="a"), ls),
                 404, "not_found", "task 99")
    assert_error(post(client, pid, "/webhook", annotation_event(1, "Mixed", annotation_id=1, updated_at="a"), ls),
                 422, "unprocessable", "mixed")
    two = annotation_event(1, "Positive", annotation_id=1, updated_at="a")
    two["annotation"]["result"][0]["value"]["choices"] = ["Positive", "Negative"]
    assert_error(post(client, pid, "/webhook", two, ls), 422, "unprocessable", "one class")
    assert count(db_url, t.Annotation, t.Annotation.project_id == pid) == 0

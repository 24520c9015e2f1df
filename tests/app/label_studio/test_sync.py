"""After a webhook is answered, the service moves the connected Label Studio project to its current
model version: predictions are retrieved first (Label Studio accepts only a version that some
prediction carries), then the project's version is switched; failures are logged, never raised."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.db.session import session_scope
from app.services.label_studio import sync
from app.services.label_studio.predictions import store_predictions
from app.services.rounds import open_round
from tests.app._lifecycle import queries_of
from tests.app.label_studio._ls import annotation_event, create_project, ls_key, mapping, recorded, tasks_request

TOKEN = "legacy-token"


class FakeLabelStudioApi(BaseHTTPRequestHandler):
    state: dict = {}

    def _reply(self, code: int, body: dict | None = None) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.state["calls"].append((method, self.path, body))
        if self.headers.get("Authorization") != f"Token {self.state['token']}":
            return self._reply(401, {"detail": "legacy token authentication has been disabled"})
        if method == "GET" and self.path == "/api/projects/7":
            return self._reply(200, {"id": 7, "model_version": self.state["version"]})
        if method == "POST" and self.path.startswith("/api/dm/actions?id=retrieve_tasks_predictions&project=7"):
            self.state["retrieved"] = True
            return self._reply(200, {"processed_items": 3})
        if method == "PATCH" and self.path == "/api/projects/7":
            if not self.state["retrieved"]:  # Label Studio: no prediction carries that version yet
                return self._reply(400, {"model_version": ["Model version doesn't exist"]})
            self.state["version"] = body["model_version"]
            return self._reply(200, {"id": 7, "model_version": body["model_version"]})
        return self._reply(404)

    def do_GET(self):  # noqa: N802
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")

    def do_PATCH(self):  # noqa: N802
        self._handle("PATCH")

    def log_message(self, *args):
        pass


@pytest.fixture
def label_studio_api():
    FakeLabelStudioApi.state = {"calls": [], "version": "SVP", "retrieved": False, "token": TOKEN}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLabelStudioApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", FakeLabelStudioApi.state
    server.shutdown()
    server.server_close()


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_project_follows_the_model_version(client, admin_headers, make_key, db_url, label_studio_api, caplog,
                                           monkeypatch):
    monkeypatch.setattr(sync, "FOLLOW_POLL_S", 0.05)
    host, state = label_studio_api
    pid = create_project(client, admin_headers)
    ls = ls_key(make_key, pid)
    setup = {**recorded("/setup")["request"], "project": "7.1795903397", "hostname": host, "access_token": TOKEN}
    assert client.post(f"/ls/{pid}/setup", json=setup, headers=ls).status_code == 200
    client.post(f"/ls/{pid}/predict", json=tasks_request([(1, "one"), (2, "two"), (3, "three")]), headers=ls)
    assert state["calls"] == []  # only webhooks trigger the sync

    start = client.post(f"/ls/{pid}/webhook", json=recorded("/webhook", "START_TRAINING")["request"], headers=ls)
    assert start.json()["status"] == "started"
    version = client.get(f"/ls/{pid}/health", headers=ls).json()["model_version"]
    assert [(m, p.split("?")[0]) for m, p, _ in state["calls"]] == [
        ("GET", "/api/projects/7"), ("POST", "/api/dm/actions"), ("PATCH", "/api/projects/7")]
    assert state["calls"][1][2]["selectedItems"] == {"all": True, "excluded": []}
    assert state["version"] == version and version.endswith("-round-0")

    # Same version: nothing to do. New tasks: their predictions are retrieved, the version stays.
    state["calls"].clear()
    client.post(f"/ls/{pid}/webhook", json=recorded("/webhook", "PROJECT_UPDATED")["request"], headers=ls)
    assert state["calls"] == []
    created = recorded("/webhook", "TASKS_CREATED")["request"]
    assert client.post(f"/ls/{pid}/webhook", json=created, headers=ls).json()["status"] == "imported"
    assert [m for m, _, _ in state["calls"]] == ["GET", "POST"]

    # The round's last label queues the retrain; a watcher switches Label Studio to the new
    # version as soon as the retrained proxy publishes round 1 (here: what the job would write).
    task_of = {item: task for task, item in mapping(db_url, pid).items()}
    for n, query in enumerate(queries_of(db_url, pid, 0)):
        event = annotation_event(task_of[query.item_id], "Positive", annotation_id=n + 1, updated_at="a")
        assert client.post(f"/ls/{pid}/webhook", json=event, headers=ls).json()["status"] == "recorded"
    state["calls"].clear()
    state["retrieved"] = False
    time.sleep(0.3)
    assert state["calls"] == [] and state["version"] == version  # nothing published yet
    picked = [item for item in task_of if item not in {q.item_id for q in queries_of(db_url, pid, 0)}][:2]
    with session_scope(db_url) as session:
        open_round(session, project_id=pid, round_index=1, picks=[(i, None) for i in picked], timings={}, metrics={},
                   selector={})
        store_predictions(session, project_id=pid, round_index=1, item_ids=picked, class_indices=[0, 1],
                          confidences=[0.5, 0.6])
    wait_for(lambda: state["version"].endswith("-round-1"))
    assert state["version"] == client.get(f"/ls/{pid}/health", headers=ls).json()["model_version"]
    assert [m for m, _, _ in state["calls"]] == ["GET", "POST", "PATCH"]

    # A Label Studio that refuses the token: the webhook still succeeds, the reason is logged once.
    state["calls"].clear()
    state["token"] = "something-else"
    with caplog.at_level(logging.WARNING, logger="app.services.label_studio.sync"):
        for _ in range(2):
            response = client.post(f"/ls/{pid}/webhook", json=created, headers=ls)
            assert response.status_code == 200
    assert len(state["calls"]) == 1
    assert "legacy API tokens" in caplog.text

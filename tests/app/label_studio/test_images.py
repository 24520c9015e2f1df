"""Image projects: task images given inline (data: URIs), as Label Studio paths fetched from its
host with the /setup token, or as public URLs; webhooks never wait on a fetch."""

from __future__ import annotations

import base64
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from app.db import tables as t
from tests.app._lifecycle import assert_error
from tests.app.label_studio._ls import basic, count, mapping, recorded, secret_of

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="animal" toName="image" choice="single">
    <Choice value="cat"/><Choice value="dog"/>
  </Choices>
</View>"""
TOKEN = "ls-legacy-token-123"


def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


class FakeLabelStudio(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    seen: list[tuple[str, str | None]] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path.startswith("/api/"):  # the model-version sync (tested on its own)
            self.send_response(404)
            self.end_headers()
            return
        self.seen.append((self.path, self.headers.get("Authorization")))
        data = self.files.get(self.path)
        if self.path.startswith("/data/") and self.headers.get("Authorization") != f"Token {TOKEN}":
            self.send_response(401)
            self.end_headers()
            return
        if data is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def label_studio_host():
    FakeLabelStudio.files = {
        "/data/upload/1/cat.png": png((200, 10, 10)),
        "/public/dog.png": png((10, 10, 200)),
        "/public/notes.txt": b"not an image",
    }
    FakeLabelStudio.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLabelStudio)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def task(task_id: int, image: str) -> dict:
    body = recorded("/predict")["request"]["tasks"][0]
    return {**body, "id": task_id, "data": {"image": image}}


def test_image_tasks_inline_from_label_studio_and_public(client, admin_headers, make_key, db_url, label_studio_host):
    pid = client.post("/projects", headers=admin_headers, json={
        "name": "animals", "modality": "image", "classes": ["cat", "dog"], "proxy": "mlp", "target": "tinycnn",
    }).json()["id"]
    ls = basic(secret_of(make_key("annotator", "label-studio", project_id=pid)))
    setup = {**recorded("/setup")["request"], "schema": CONFIG, "hostname": label_studio_host, "access_token": TOKEN}
    assert client.post(f"/ls/{pid}/setup", json=setup, headers=ls).status_code == 200

    inline = png((10, 200, 10))
    inline_uri = "data:image/png;base64," + base64.b64encode(inline).decode()
    elsewhere = label_studio_host.replace("127.0.0.1", "localhost")  # another host name: no token for it
    tasks = [task(1, inline_uri), task(2, "/data/upload/1/cat.png"), task(3, f"{elsewhere}/public/dog.png")]
    created = client.post(f"/ls/{pid}/webhook", headers=ls, json={
        "action": "TASKS_CREATED", "tasks": tasks, "project": {"id": 1, "label_config": CONFIG}})
    assert created.status_code == 200
    assert created.json()["details"] == {"imported": 1, "deferred": [2, 3]}  # webhooks never fetch
    assert FakeLabelStudio.seen == []

    predicted = client.post(f"/ls/{pid}/predict", headers=ls, json={"tasks": tasks, "label_config": CONFIG})
    assert predicted.status_code == 200, predicted.text
    assert len(predicted.json()["results"]) == 3
    items = mapping(db_url, pid)
    expected = {1: inline, 2: FakeLabelStudio.files["/data/upload/1/cat.png"], 3: FakeLabelStudio.files["/public/dog.png"]}
    for task_id, data in expected.items():
        content = client.get(f"/projects/{pid}/items/{items[task_id]}/content", headers=admin_headers)
        assert content.status_code == 200 and content.content == data
    # The token went to Label Studio's host only.
    assert sorted(FakeLabelStudio.seen) == [("/data/upload/1/cat.png", f"Token {TOKEN}"), ("/public/dog.png", None)]


def test_unfetchable_images_are_named_and_nothing_is_written(client, admin_headers, make_key, db_url, label_studio_host):
    pid = client.post("/projects", headers=admin_headers, json={
        "name": "animals", "modality": "image", "classes": ["cat", "dog"], "proxy": "mlp", "target": "tinycnn",
    }).json()["id"]
    ls = basic(secret_of(make_key("annotator", "label-studio", project_id=pid)))
    setup = {**recorded("/setup")["request"], "schema": CONFIG, "hostname": label_studio_host, "access_token": "wrong"}
    client.post(f"/ls/{pid}/setup", json=setup, headers=ls)

    def predict(*images):
        tasks = [task(i + 1, image) for i, image in enumerate(images)]
        return client.post(f"/ls/{pid}/predict", headers=ls, json={"tasks": tasks})

    good = "data:image/png;base64," + base64.b64encode(png((1, 2, 3))).decode()
    assert_error(predict(good, "/data/upload/1/cat.png"), 422, "unprocessable", "'task': 2", "http 401")
    assert_error(predict(good, f"{label_studio_host}/public/none.png"), 422, "unprocessable", "http 404")
    assert_error(predict(good, "s3://bucket/cat.png"), 422, "unprocessable", "s3://")
    assert_error(predict(good, f"{label_studio_host}/public/notes.txt"), 422, "unprocessable", "'task': 2", "image")
    assert_error(predict(good, "data:image/png;base64,@@@"), 422, "unprocessable", "base64")
    assert count(db_url, t.Item, t.Item.project_id == pid) == 0
    assert count(db_url, t.LabelStudioTask) == 0

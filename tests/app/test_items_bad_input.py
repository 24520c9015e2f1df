"""Bad imports, on SQLite and PostgreSQL: each gets a 4xx with the JSON error body naming the
problem (and, for bad rows, every bad row), never a 500, and writes no item or annotation row."""

from __future__ import annotations

import base64
import contextlib
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from tests.app.importers.fixtures import (
    counts,
    image_bytes,
    jsonl_bytes,
    make_project,
    npz_bytes,
    pixels,
    zip_bytes,
)


def upload(client, headers, project_id, files, **form):
    return client.post(f"/projects/{project_id}/items/upload", data=form, files=files, headers=headers)


def post_json(client, headers, project_id, body):
    return client.post(f"/projects/{project_id}/items", json=body, headers=headers)


def rejected(response, status: int = 422) -> list[dict]:
    """The response's error details, after checking the status and the error shape."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] and error["message"]
    return error["details"]


def problems_of(details: list[dict]) -> dict:
    """{row or file or field: problem}."""
    out = {}
    for detail in details:
        key = next(k for k in ("row", "file", "field") if k in detail)
        out[detail[key]] = detail["problem"]
    return out


@pytest.fixture
def limited_client(settings):
    """limited_client(**settings_overrides): a client on the same database with other limits."""
    stack = contextlib.ExitStack()

    def make(**overrides) -> TestClient:
        return stack.enter_context(TestClient(create_app(settings.model_copy(update=overrides))))

    with stack:
        yield make


def nothing_written(settings, project_id=None) -> None:
    assert counts(settings, project_id) == (0, 0)


def no_blobs(settings) -> None:
    root = settings.resolved_blob_dir / "items"
    assert not root.exists() or not any(p.is_file() for p in root.rglob("*"))


# --- unknown class -----------------------------------------------------------------------------


def test_unknown_class_in_each_text_path(client, settings, admin_headers):
    pid = make_project(settings)
    body = {
        "split": "pool",
        "items": [{"text": "ok", "label": "pos"}, {"text": "b", "label": "meh"}, {"text": "c", "label": 5}],
    }
    found = problems_of(rejected(post_json(client, admin_headers, pid, body)))
    assert set(found) == {1, 2}
    assert "unknown class 'meh'" in found[1] and "out of range" in found[2]

    content = jsonl_bytes([{"text": "ok", "label": "neg"}, {"text": "x", "label": "Pos"}])
    found = problems_of(
        rejected(
            upload(client, admin_headers, pid, {"file": ("a.jsonl", content, "application/x-ndjson")}, split="pool")
        )
    )
    assert list(found) == [2] and "unknown class 'Pos'" in found[2]

    content = b"text,label\nfine,pos\nnot fine,neutral\n"
    found = problems_of(
        rejected(upload(client, admin_headers, pid, {"file": ("a.csv", content, "text/csv")}, split="pool"))
    )
    assert list(found) == [3] and "unknown class 'neutral'" in found[3]
    nothing_written(settings, pid)


def test_unknown_class_in_each_image_path(client, settings, admin_headers):
    pid = make_project(settings, modality="image")
    files = [("files", ("a.png", image_bytes(1), "image/png")), ("files", ("b.png", image_bytes(2), "image/png"))]
    found = problems_of(
        rejected(upload(client, admin_headers, pid, files, split="pool", labels='{"a.png": "cat", "b.png": "fish"}'))
    )
    assert list(found) == ["b.png"] and "unknown class 'fish'" in found["b.png"]

    archive = zip_bytes({"cat/1.png": image_bytes(1), "fish/2.png": image_bytes(2), "fish/3.png": image_bytes(3)})
    found = problems_of(
        rejected(upload(client, admin_headers, pid, {"file": ("a.zip", archive, "application/zip")}, split="pool"))
    )
    assert list(found) == ["fish/"] and "not a class" in found["fish/"]  # one problem per folder

    x = np.stack([pixels(i) for i in range(3)])
    data = npz_bytes(x=x, y=np.array([0, 3, -1]))
    found = problems_of(
        rejected(
            upload(client, admin_headers, pid, {"file": ("a.npz", data, "application/octet-stream")}, split="pool")
        )
    )
    assert set(found) == {1, 2} and all("out of range" in p for p in found.values())
    nothing_written(settings, pid)
    no_blobs(settings)


# --- corrupt and over-size content -------------------------------------------------------------


def test_corrupt_images_are_rejected_before_any_blob_is_written(client, settings, admin_headers):
    pid = make_project(settings, modality="image")
    good = image_bytes(1)
    truncated = image_bytes(2, size=(64, 64))[:200]
    files = [
        ("files", ("good.png", good, "image/png")),
        ("files", ("text.png", b"this is not an image", "image/png")),
        ("files", ("cut.png", truncated, "image/png")),
    ]
    found = problems_of(rejected(upload(client, admin_headers, pid, files, split="pool")))
    assert set(found) == {"text.png", "cut.png"}
    assert "not a readable image" in found["text.png"] and "corrupt" in found["cut.png"]

    archive = zip_bytes({"cat/good.png": good, "dog/cut.png": truncated})
    found = problems_of(
        rejected(upload(client, admin_headers, pid, {"file": ("a.zip", archive, "application/zip")}, split="pool"))
    )
    assert list(found) == ["dog/cut.png"] and "corrupt" in found["dog/cut.png"]

    body = {
        "split": "pool",
        "items": [{"image_base64": base64.b64encode(b"GIF89a garbage").decode()}, {"image_base64": "***"}],
    }
    found = problems_of(rejected(post_json(client, admin_headers, pid, body)))
    assert set(found) == {0, 1} and "base64" in found[1]

    not_zip = upload(
        client, admin_headers, pid, {"file": ("a.zip", b"PK but not really", "application/zip")}, split="pool"
    )
    assert "not a readable zip" in problems_of(rejected(not_zip))["a.zip"]
    nothing_written(settings, pid)
    no_blobs(settings)


def test_over_size_items_and_images(limited_client, settings, admin_headers):
    client = limited_client(max_item_bytes=100, max_image_pixels=32 * 32)
    text_project = make_project(settings)
    content = jsonl_bytes([{"text": "short"}, {"text": "é" * 51}])  # 102 bytes of UTF-8
    found = problems_of(
        rejected(
            upload(
                client,
                admin_headers,
                text_project,
                {"file": ("a.jsonl", content, "application/x-ndjson")},
                split="pool",
            )
        )
    )
    assert list(found) == [2] and "102 bytes, over the limit of 100" in found[2]

    image_project = make_project(settings, modality="image")
    big = image_bytes(1, size=(16, 16))  # random pixels: ~800 bytes of PNG
    files = [("files", ("big.png", big, "image/png"))]
    found = problems_of(rejected(upload(client, admin_headers, image_project, files, split="pool")))
    assert "over the limit of 100" in found["big.png"]
    archive = zip_bytes({"cat/big.png": big})
    found = problems_of(
        rejected(
            upload(client, admin_headers, image_project, {"file": ("a.zip", archive, "application/zip")}, split="pool")
        )
    )
    assert "over the limit of 100" in found["cat/big.png"]
    x = pixels(1, (16, 16))[None]
    found = problems_of(
        rejected(
            upload(
                client,
                admin_headers,
                image_project,
                {"file": ("a.npz", npz_bytes(x=x), "application/octet-stream")},
                split="pool",
            )
        )
    )
    assert "over the limit of 100" in found[0]

    wide = limited_client(max_image_pixels=15 * 15)
    found = problems_of(
        rejected(upload(wide, admin_headers, image_project, [("files", ("w.png", big, "image/png"))], split="pool"))
    )
    assert "16x16 pixels, over the limit of 225 pixels" in found["w.png"]
    nothing_written(settings)


def test_upload_over_the_limit_is_413(limited_client, settings, admin_headers):
    client = limited_client(max_upload_bytes=1000)
    pid = make_project(settings)
    content = jsonl_bytes({"text": f"row {i}"} for i in range(100))
    response = upload(client, admin_headers, pid, {"file": ("a.jsonl", content, "application/x-ndjson")}, split="pool")
    assert "limit of 1000" in response.json()["error"]["message"] and response.status_code == 413
    response = post_json(client, admin_headers, pid, {"split": "pool", "items": [{"text": "x" * 2000}]})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    # A body sent in chunks declares no length: it is cut off once it passes the limit.
    body = json.dumps({"split": "pool", "items": [{"text": "x" * 500}] * 4}).encode()
    chunks = iter([body[i : i + 256] for i in range(0, len(body), 256)])
    response = client.post(
        f"/projects/{pid}/items", content=chunks, headers=admin_headers | {"content-type": "application/json"}
    )
    assert response.status_code == 413 and "body is over the limit of 1000 bytes" in response.json()["error"]["message"]
    nothing_written(settings)


# --- malformed files ---------------------------------------------------------------------------


def test_malformed_jsonl_lines_are_all_listed(client, settings, admin_headers):
    pid = make_project(settings)
    content = b"\n".join(
        [
            b'{"text": "fine"}',
            b'{"text": "no closing brace"',
            b'["not", "an", "object"]',
            b'{"text": "t", "lable": "pos"}',
            b'{"text": "t", "meta": {"x": NaN}}',
            b'{"text": "   "}',
            b'{"text": 12}',
            b'{"label": "pos"}',
            b'{"text": "bad \\u0000 byte"}',
            b'{"text": "\\ud800 lone surrogate"}',
            b'{"text": "x", "meta": "not an object"}',
            b'{"text": "x", "external_id": ""}',
            b"\xff\xfe not utf-8",
        ]
    )
    response = upload(client, admin_headers, pid, {"file": ("a.jsonl", content, "application/x-ndjson")}, split="pool")
    found = problems_of(rejected(response))
    assert "12 problem(s)" in response.json()["error"]["message"]
    assert sorted(found) == list(range(2, 14))
    assert "malformed JSON" in found[2]
    assert "JSON object" in found[3]
    assert "'lable'" in found[4]
    assert "NaN" in found[5]
    assert "empty" in found[6]
    assert "string" in found[7]
    assert "missing 'text'" in found[8]
    assert "NUL" in found[9]
    assert "surrogate" in found[10]
    assert "meta must be a JSON object" in found[11]
    assert "external_id is empty" in found[12]
    assert "UTF-8" in found[13]
    nothing_written(settings, pid)


def test_malformed_csv(client, settings, admin_headers):
    pid = make_project(settings)
    no_text = upload(
        client, admin_headers, pid, {"file": ("a.csv", b"body,label\nhello,pos\n", "text/csv")}, split="pool"
    )
    assert "no 'text' column" in problems_of(rejected(no_text))[1]
    ragged = upload(
        client,
        admin_headers,
        pid,
        {"file": ("a.csv", b"text,label\nhello,pos,extra\nfine,neg\n", "text/csv")},
        split="pool",
    )
    assert "3 fields, the header has 2" in problems_of(rejected(ragged))[2]
    empty = upload(client, admin_headers, pid, {"file": ("a.csv", b"", "text/csv")}, split="pool")
    assert "empty" in problems_of(rejected(empty))[1]
    header_only = upload(client, admin_headers, pid, {"file": ("a.csv", b"text\n", "text/csv")}, split="pool")
    assert rejected(header_only) == [] and "nothing to import" in header_only.json()["error"]["message"]
    nothing_written(settings, pid)


def test_malformed_npz(client, settings, admin_headers):
    pid = make_project(settings, modality="image")

    def send(data: bytes) -> str:
        response = upload(
            client, admin_headers, pid, {"file": ("d.npz", data, "application/octet-stream")}, split="pool"
        )
        return problems_of(rejected(response))["d.npz"]

    assert "named 'x'" in send(npz_bytes(images=np.zeros((2, 4, 4), np.uint8)))
    assert "uint8" in send(npz_bytes(x=np.zeros((2, 4, 4), np.float32)))
    assert "shape" in send(npz_bytes(x=np.zeros((2, 4, 4, 2), np.uint8)))
    assert "'y' must have shape (2,)" in send(npz_bytes(x=np.zeros((2, 4, 4), np.uint8), y=np.array([0])))
    assert (
        "pickle"
        in send(npz_bytes(x=np.zeros((2, 4, 4), np.uint8), ids=np.array([{"a": 1}, None], dtype=object))).lower()
    )
    assert "not a readable .npz" in send(b"garbage")
    nothing_written(settings, pid)


# --- wrong formats, fields, splits -------------------------------------------------------------


def test_wrong_content_types_are_415(client, settings, admin_headers):
    text_project = make_project(settings)
    image_project = make_project(settings, modality="image")
    cases = [
        (text_project, ("notes.txt", b"hello", "text/plain")),
        (text_project, ("pool.zip", zip_bytes({"a.txt": b"x"}), "application/zip")),
        (text_project, ("a.png", image_bytes(1), "image/png")),
        (image_project, ("pool.jsonl", jsonl_bytes([{"text": "x"}]), "application/x-ndjson")),
        (image_project, ("doc.pdf", b"%PDF-1.4", "application/pdf")),
    ]
    for project_id, file in cases:
        response = upload(client, admin_headers, project_id, {"file": file}, split="pool")
        assert response.status_code == 415, (file[0], response.text)
        assert file[0] in response.json()["error"]["message"]
    response = client.post(
        f"/projects/{text_project}/items", content=b"text", headers=admin_headers | {"content-type": "text/plain"}
    )
    assert response.status_code == 415
    response = client.post(f"/projects/{text_project}/items/upload", json={"split": "pool"}, headers=admin_headers)
    assert response.status_code == 415 and "multipart" in response.json()["error"]["message"]
    nothing_written(settings)


def test_bad_split_missing_labels_and_bad_fields(client, settings, admin_headers):
    pid = make_project(settings)
    found = problems_of(rejected(post_json(client, admin_headers, pid, {"split": "train", "items": [{"text": "a"}]})))
    assert "'pool' or 'test'" in found["split"]
    no_split = upload(
        client, admin_headers, pid, {"file": ("a.jsonl", jsonl_bytes([{"text": "a"}]), "application/x-ndjson")}
    )
    assert "split" in problems_of(rejected(no_split))

    content = jsonl_bytes([{"text": "a", "label": "pos"}, {"text": "b"}, {"text": "c", "label": None}])
    found = problems_of(
        rejected(
            upload(client, admin_headers, pid, {"file": ("t.jsonl", content, "application/x-ndjson")}, split="test")
        )
    )
    assert set(found) == {2, 3} and all("need a label" in p for p in found.values())

    assert "items" in rejected(post_json(client, admin_headers, pid, {"split": "pool"}))[0]["field"]
    assert (
        "nothing to import"
        in post_json(client, admin_headers, pid, {"split": "pool", "items": []}).json()["error"]["message"]
    )
    malformed = client.post(
        f"/projects/{pid}/items", content=b"{oops", headers=admin_headers | {"content-type": "application/json"}
    )
    assert "malformed JSON" in problems_of(rejected(malformed))["body"]

    image_project = make_project(settings, modality="image")
    files = [("files", ("a.png", image_bytes(1), "image/png"))]
    bad_labels = upload(client, admin_headers, image_project, files, split="pool", labels="{not json")
    assert "labels" in problems_of(rejected(bad_labels))
    absent = upload(client, admin_headers, image_project, files, split="pool", labels='{"zzz.png": "cat"}')
    assert "zzz.png" in problems_of(rejected(absent))["labels"]
    root_missing = upload(
        client,
        admin_headers,
        image_project,
        {"file": ("a.zip", zip_bytes({"cat/1.png": image_bytes(1)}), "application/zip")},
        split="pool",
        root="nope",
    )
    assert "'nope'" in problems_of(rejected(root_missing))["root"]
    text_in_image_project = post_json(client, admin_headers, image_project, {"split": "pool", "items": [{"text": "a"}]})
    assert "image project" in problems_of(rejected(text_in_image_project))[0]
    nothing_written(settings)


def test_external_id_conflicts(client, settings, admin_headers):
    pid = make_project(settings)
    assert (
        post_json(
            client, admin_headers, pid, {"split": "pool", "items": [{"text": "first", "external_id": "a"}]}
        ).status_code
        == 201
    )

    body = {
        "split": "pool",
        "items": [
            {"text": "other", "external_id": "a"},
            {"text": "x", "external_id": "b"},
            {"text": "y", "external_id": "b"},
        ],
    }
    found = problems_of(rejected(post_json(client, admin_headers, pid, body)))
    assert set(found) == {0, 2}
    assert "already used by item" in found[0] and "repeated with other content" in found[2]
    assert counts(settings, pid) == (1, 0)


def test_a_conflict_found_after_earlier_batches_were_inserted_rolls_everything_back(client, settings, admin_headers):
    pid = make_project(settings)
    rows = [{"text": f"row {i}", "external_id": f"id-{i}", "label": "pos"} for i in range(2100)]
    rows.append({"text": "different content", "external_id": "id-3"})  # conflicts with row 4, 2,000+ rows back
    response = upload(
        client, admin_headers, pid, {"file": ("a.jsonl", jsonl_bytes(rows), "application/x-ndjson")}, split="pool"
    )
    found = problems_of(rejected(response))
    assert list(found) == [2101] and "'id-3'" in found[2101]
    nothing_written(settings, pid)


# --- who may import ----------------------------------------------------------------------------


def test_unknown_project_annotators_and_missing_keys(client, settings, admin_headers, make_key):
    content = {"file": ("a.jsonl", jsonl_bytes([{"text": "a"}]), "application/x-ndjson")}
    missing = post_json(client, admin_headers, 999, {"split": "pool", "items": [{"text": "a"}]})
    assert missing.status_code == 404 and "999" in missing.json()["error"]["message"]
    assert upload(client, admin_headers, 999, content, split="pool").status_code == 404

    pid = make_project(settings)
    annotator = make_key("annotator", project_id=pid)
    for response in (
        post_json(client, annotator, pid, {"split": "pool", "items": [{"text": "a"}]}),
        upload(client, annotator, pid, content, split="pool"),
    ):
        assert response.status_code == 403 and "admin" in response.json()["error"]["message"]
    assert post_json(client, {}, pid, {"split": "pool", "items": [{"text": "a"}]}).status_code == 401
    other_admin = make_key("admin", project_id=make_project(settings))
    assert post_json(client, other_admin, pid, {"split": "pool", "items": [{"text": "a"}]}).status_code == 403
    assert client.get(f"/projects/{pid}/items/12345", headers=admin_headers).status_code == 404
    assert client.get(f"/projects/{pid}/items/12345/content", headers=admin_headers).status_code == 404
    assert client.get(f"/projects/{pid}/items", params={"split": "train"}, headers=admin_headers).status_code == 422
    nothing_written(settings)


def test_pillow_png_decoder_sees_every_image(client, settings, admin_headers):
    """A PNG with a valid header but damaged pixel data fails only when decoded: it must be caught."""
    pid = make_project(settings, modality="image")
    buffer = io.BytesIO()
    Image.fromarray(pixels(9, (32, 32))).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    idat = data.index(b"IDAT")
    data[idat + 20 : idat + 40] = b"\x00" * 20  # corrupt the compressed stream, keep the header
    response = upload(client, admin_headers, pid, [("files", ("broken.png", bytes(data), "image/png"))], split="pool")
    assert "broken.png" in problems_of(rejected(response))
    nothing_written(settings, pid)


def test_an_insert_that_collides_with_a_concurrent_import_is_a_409(client, settings, admin_headers, monkeypatch):
    """Two imports of the same content racing: the loser's duplicate check saw nothing, so its insert
    hits the unique constraint. Simulated by blinding the duplicate check."""
    from sqlalchemy import false

    from app.services import items as service

    pid = make_project(settings)
    assert post_json(client, admin_headers, pid, {"split": "pool", "items": [{"text": "same"}]}).status_code == 201
    monkeypatch.setattr(service, "_one_of", lambda column, values, dialect: false())
    response = post_json(client, admin_headers, pid, {"split": "pool", "items": [{"text": "new"}, {"text": "same"}]})
    assert response.status_code == 409 and "concurrent" in response.json()["error"]["message"]
    assert counts(settings, pid) == (1, 0)

"""Projects API: create with defaults, validation (422, nothing written), counts and budget, list
scoping, update only while draft, delete with cascade."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.db import tables as t
from app.db.session import session_scope

IMAGE = {"name": "cifar", "modality": "image", "classes": ["cat", "dog", "frog"]}


def project_rows(settings) -> int:
    with session_scope(settings.resolved_database_url) as session:
        return session.scalar(select(func.count()).select_from(t.Project))


def add_items(settings, project_id: int, *, pool: int = 0, labeled: int = 0, test: int = 0, label: str = "cat") -> None:
    """Insert items directly (the import API is tested elsewhere): ``labeled`` of the pool carry a label."""
    with session_scope(settings.resolved_database_url) as session:
        start = session.scalar(select(func.count()).select_from(t.Item).where(t.Item.project_id == project_id))
        for i in range(pool + test):
            n = start + i
            split = t.SPLIT_POOL if i < pool else t.SPLIT_TEST
            has_label = i < labeled or split == t.SPLIT_TEST
            session.add(
                t.Item(
                    project_id=project_id,
                    external_id=f"x{n}",
                    split=split,
                    content_type="text/plain",
                    content_sha256=f"{n:064d}",
                    text=f"item {n}",
                    label=label if has_label else None,
                )
            )


def create(client, headers, **overrides):
    response = client.post("/projects", json={**IMAGE, **overrides}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_uses_paper_defaults_per_modality(client, admin_headers):
    image = create(client, admin_headers)
    assert image["status"] == "draft" and image["current_round"] is None
    assert image["proxy"]["arch"] == "preact20" and image["target"]["arch"] == "preact164"
    assert image["proxy"]["batch_size"] == 128 and image["proxy"]["augment"] == "auto"
    assert image["strategy"] == "least_confidence"
    assert image["schedule"] == {"initial": 0.02, "rounds": [0.08, 0.10], "budget": 0.5}
    assert image["seed"] == 0 and image["lease_seconds"] is None
    assert image["counts"] == {"pool": 0, "labeled": 0, "unlabeled": 0, "test": 0} and image["budget"] == 0
    assert image["classes"] == ["cat", "dog", "frog"]

    text = create(client, admin_headers, name="reviews", modality="text", classes=["neg", "pos"])
    assert text["proxy"]["arch"] == "fasttext" and text["target"]["arch"] == "vdcnn29"

    fetched = client.get(f"/projects/{image['id']}", headers=admin_headers).json()
    assert fetched == image


def test_full_spec_round_trips(client, admin_headers):
    body = {
        **IMAGE,
        "proxy": {"arch": "preact8", "epochs": 3, "schedule": [[1, 0.01], [2, 0.1]], "lr": 0.05, "augment": "flip"},
        "target": "resnet18",  # shorthand for {"arch": "resnet18"}
        "strategy": "kcenters",
        "schedule": {"initial": 10, "rounds": [0.25, 20], "budget": 1.0},
        "seed": 7,
        "lease_seconds": 30,
        "meta": {"owner": "vision team"},
    }
    created = create(client, admin_headers, **body)
    assert created["proxy"]["schedule"] == [[1, 0.01], [2, 0.1]]
    assert created["proxy"]["epochs"] == 3 and created["proxy"]["augment"] == "flip"
    assert created["target"]["arch"] == "resnet18"
    # Ints stay counts and floats stay fractions: 1.0 is the whole pool, not one item.
    assert created["schedule"] == {"initial": 10, "rounds": [0.25, 20], "budget": 1.0}
    assert isinstance(created["schedule"]["budget"], float) and isinstance(created["schedule"]["initial"], int)
    assert (created["strategy"], created["seed"], created["lease_seconds"]) == ("kcenters", 7, 30)
    assert created["meta"] == {"owner": "vision team"}


def test_duplicate_name_conflicts_and_writes_nothing(client, admin_headers, settings):
    create(client, admin_headers)
    response = client.post("/projects", json={**IMAGE, "classes": ["x", "y"]}, headers=admin_headers)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict" and "cifar" in response.json()["error"]["message"]
    assert project_rows(settings) == 1


BAD_BODIES = [
    ({"modality": "audio"}, "modality"),
    ({"classes": ["only"]}, "classes"),
    ({"classes": ["a", "a"]}, "classes"),
    ({"classes": ["a", ""]}, "classes"),
    ({"classes": ["a", "   "]}, "classes"),
    ({"classes": "a,b"}, "classes"),
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"proxy": {"arch": "fasttext"}}, "proxy"),  # a text model on an image project
    ({"target": {"arch": "resnet1000"}}, "target"),
    ({"proxy": {"arch": "preact20", "schedule": "warp_speed"}}, "proxy"),
    ({"proxy": {"arch": "preact20", "schedule": [[0, 0.1]]}}, "proxy"),
    ({"proxy": {"arch": "preact20", "schedule": [[5, -0.1]]}}, "proxy"),
    ({"proxy": {"arch": "preact20", "schedule": []}}, "proxy"),
    ({"proxy": {"arch": "preact20", "batch_size": 0}}, "proxy"),
    ({"proxy": {"arch": "preact20", "augment": "mixup"}}, "proxy"),
    ({"proxy": {"arch": "preact20", "momentum": 1.5}}, "proxy"),
    ({"proxy": {"arch": "preact20", "unknown_option": 1}}, "proxy"),
    ({"strategy": "badge"}, "strategy"),
    ({"schedule": {"initial": 1.5}}, "schedule"),
    ({"schedule": {"initial": 0}}, "schedule"),
    ({"schedule": {"initial": -0.1}}, "schedule"),
    ({"schedule": {"budget": "0.5"}}, "schedule"),
    ({"schedule": {"budget": True}}, "schedule"),
    ({"schedule": {"rounds": []}}, "schedule"),
    ({"schedule": {"rounds": [0.1, 2.5]}}, "schedule"),
    ({"schedule": {"initial": 0.02, "sizes": [1]}}, "schedule"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**40}, "seed"),
    ({"lease_seconds": 0}, "lease_seconds"),
    ({"colour": "blue"}, "colour"),
]


@pytest.mark.parametrize("overrides,field", BAD_BODIES, ids=[json.dumps(b) for b, _ in BAD_BODIES])
def test_bad_project_is_422_naming_the_field_and_writes_nothing(client, admin_headers, settings, overrides, field):
    response = client.post("/projects", json={**IMAGE, **overrides}, headers=admin_headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"], error
    assert any(field in detail["loc"] for detail in error["details"]), error
    assert project_rows(settings) == 0


@pytest.mark.parametrize("missing", ["name", "modality", "classes"])
def test_required_fields(client, admin_headers, settings, missing):
    body = {k: v for k, v in IMAGE.items() if k != missing}
    response = client.post("/projects", json=body, headers=admin_headers)
    assert response.status_code == 422
    assert any(missing in d["loc"] for d in response.json()["error"]["details"])
    assert project_rows(settings) == 0


def test_malformed_json_is_422(client, admin_headers, settings):
    headers = {**admin_headers, "Content-Type": "application/json"}
    response = client.post("/projects", content=b'{"name": "x", ', headers=headers)
    assert response.status_code == 422 and "error" in response.json()
    assert project_rows(settings) == 0


def test_counts_and_budget_follow_the_items(client, admin_headers, settings):
    project = create(client, admin_headers, schedule={"initial": 0.1, "rounds": [0.2], "budget": 0.25})
    add_items(settings, project["id"], pool=10, labeled=3, test=4)
    body = client.get(f"/projects/{project['id']}", headers=admin_headers).json()
    assert body["counts"] == {"pool": 10, "labeled": 3, "unlabeled": 7, "test": 4}
    assert body["budget"] == 3  # 0.25 * 10 = 2.5, rounded half up

    other = create(client, admin_headers, name="other", schedule={"initial": 1, "rounds": [1], "budget": 50})
    add_items(settings, other["id"], pool=20)
    listed = {p["name"]: p for p in client.get("/projects", headers=admin_headers).json()}
    assert listed["cifar"]["counts"]["pool"] == 10 and listed["cifar"]["budget"] == 3
    assert listed["other"]["counts"] == {"pool": 20, "labeled": 0, "unlabeled": 20, "test": 0}
    assert listed["other"]["budget"] == 20  # an absolute budget is capped at the pool


def test_list_is_scoped_for_project_keys(client, admin_headers, make_key):
    a = create(client, admin_headers, name="a")
    b = create(client, admin_headers, name="b")
    assert [p["name"] for p in client.get("/projects", headers=admin_headers).json()] == ["a", "b"]
    scoped = make_key("annotator", project_id=b["id"])
    assert [p["id"] for p in client.get("/projects", headers=scoped).json()] == [b["id"]]
    assert client.get(f"/projects/{b['id']}", headers=scoped).status_code == 200
    assert client.get(f"/projects/{a['id']}", headers=scoped).status_code == 403


def test_unknown_project_is_404_and_bad_id_422(client, admin_headers):
    for method in ("get", "patch", "delete"):
        kwargs = {"json": {"seed": 1}} if method == "patch" else {}
        response = getattr(client, method)("/projects/999", headers=admin_headers, **kwargs)
        assert response.status_code == 404, (method, response.text)
        assert response.json()["error"]["code"] == "not_found"
    assert client.get("/projects/0", headers=admin_headers).status_code == 422
    assert client.get("/projects/abc", headers=admin_headers).status_code == 422


def test_patch_changes_only_given_fields(client, admin_headers):
    project = create(client, admin_headers, seed=3, lease_seconds=60)
    response = client.patch(
        f"/projects/{project['id']}",
        json={"strategy": "entropy", "schedule": {"initial": 5, "rounds": [10], "budget": 40}, "lease_seconds": None},
        headers=admin_headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["strategy"] == "entropy"
    assert body["schedule"] == {"initial": 5, "rounds": [10], "budget": 40}
    assert body["lease_seconds"] is None  # null clears the override
    assert body["seed"] == 3 and body["proxy"] == project["proxy"] and body["name"] == project["name"]
    # An empty patch changes nothing.
    again = client.patch(f"/projects/{project['id']}", json={}, headers=admin_headers)
    assert again.status_code == 200 and again.json()["strategy"] == "entropy"


def test_patch_modality_revalidates_the_models(client, admin_headers):
    project = create(client, admin_headers)
    url = f"/projects/{project['id']}"
    # The stored image models do not fit a text project: 422 and nothing changes.
    response = client.patch(url, json={"modality": "text"}, headers=admin_headers)
    assert response.status_code == 422
    assert {tuple(d["loc"]) for d in response.json()["error"]["details"]} >= {("body", "proxy"), ("body", "target")}
    assert client.get(url, headers=admin_headers).json()["modality"] == "image"
    # Null resets a model to the modality's default.
    response = client.patch(url, json={"modality": "text", "proxy": None, "target": "vdcnn9"}, headers=admin_headers)
    assert response.status_code == 200, response.text
    assert (response.json()["proxy"]["arch"], response.json()["target"]["arch"]) == ("fasttext", "vdcnn9")


@pytest.mark.parametrize(
    "patch",
    [{"name": None}, {"classes": ["one"]}, {"schedule": {"budget": 2.0}}, {"strategy": None}, {"status": "active"}],
    ids=["null-name", "one-class", "budget-fraction-over-1", "null-strategy", "status-not-writable"],
)
def test_bad_patch_is_422_and_changes_nothing(client, admin_headers, patch):
    project = create(client, admin_headers)
    response = client.patch(f"/projects/{project['id']}", json=patch, headers=admin_headers)
    assert response.status_code == 422, response.text
    assert "error" in response.json()
    after = client.get(f"/projects/{project['id']}", headers=admin_headers).json()
    assert after == project


def test_patch_conflicts(client, admin_headers, settings):
    first = create(client, admin_headers, name="first")
    second = create(client, admin_headers, name="second")
    url = f"/projects/{second['id']}"
    assert client.patch(url, json={"name": "first"}, headers=admin_headers).status_code == 409

    add_items(settings, second["id"], pool=3, labeled=1, label="dog")
    response = client.patch(url, json={"classes": ["cat", "frog"]}, headers=admin_headers)
    assert response.status_code == 409 and response.json()["error"]["details"] == [{"label": "dog"}]
    assert client.patch(url, json={"classes": ["dog", "cat", "bird"]}, headers=admin_headers).status_code == 200
    response = client.patch(url, json={"modality": "text", "proxy": None, "target": None}, headers=admin_headers)
    assert response.status_code == 409 and "modality" in response.json()["error"]["message"]

    with session_scope(settings.resolved_database_url) as session:
        session.get(t.Project, first["id"]).status = t.PROJECT_ACTIVE
    response = client.patch(f"/projects/{first['id']}", json={"seed": 9}, headers=admin_headers)
    assert response.status_code == 409 and "draft" in response.json()["error"]["message"]
    assert client.get(f"/projects/{first['id']}", headers=admin_headers).json()["seed"] == 0
    assert client.get(url, headers=admin_headers).json()["name"] == "second"


def test_delete_removes_the_project_and_what_hangs_off_it(client, admin_headers, make_key, settings):
    keep = create(client, admin_headers, name="keep")
    gone = create(client, admin_headers, name="gone")
    add_items(settings, gone["id"], pool=4, labeled=2, test=1)
    add_items(settings, keep["id"], pool=2)
    scoped = make_key("annotator", project_id=gone["id"])
    with session_scope(settings.resolved_database_url) as session:
        session.add(t.Job(project_id=gone["id"], type=t.JOB_SELECT_ROUND))

    response = client.delete(f"/projects/{gone['id']}", headers=admin_headers)
    assert response.status_code == 204 and response.content == b""
    assert client.get(f"/projects/{gone['id']}", headers=admin_headers).status_code == 404
    assert client.get("/projects", headers=scoped).status_code == 401  # its scoped key went with it
    with session_scope(settings.resolved_database_url) as session:
        items = dict(session.execute(select(t.Item.project_id, func.count()).group_by(t.Item.project_id)).all())
        assert items == {keep["id"]: 2}
        assert session.scalar(select(func.count()).select_from(t.Job)) == 0
    assert [p["name"] for p in client.get("/projects", headers=admin_headers).json()] == ["keep"]


def test_name_race_at_the_unique_index_is_409_not_500(client, admin_headers, settings, monkeypatch):
    # Two creates that both pass the pre-check meet at the database's unique index.
    from app.services import projects as service

    create(client, admin_headers, name="race")
    monkeypatch.setattr(service, "_check_name_free", lambda *args, **kwargs: None)
    response = client.post("/projects", json={**IMAGE, "name": "race"}, headers=admin_headers)
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"
    other = create(client, admin_headers, name="other")
    response = client.patch(f"/projects/{other['id']}", json={"name": "race", "seed": 4}, headers=admin_headers)
    assert response.status_code == 409
    assert client.get(f"/projects/{other['id']}", headers=admin_headers).json()["seed"] == 0  # rolled back
    assert project_rows(settings) == 2

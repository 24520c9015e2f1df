"""Authentication and authorization over every route, enumerated from the app so that new routes are
covered automatically; key management; the OpenAPI document."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import func, select

from app.db import tables as t
from app.db.session import session_scope
from app.deps import require_admin

PUBLIC = {"/health", "/ready", "/metrics"}  # probes and monitoring scrapes
PARAM = re.compile(r"{(\w+)(?::[^}]*)?}")
KNOWN_ADMIN = {
    ("POST", "/keys"),
    ("GET", "/keys"),
    ("DELETE", "/keys/{key_id}"),
    ("POST", "/projects"),
    ("PATCH", "/projects/{project_id}"),
    ("DELETE", "/projects/{project_id}"),
    ("POST", "/jobs/{job_id}/cancel"),
    ("POST", "/jobs/{job_id}/retry"),
}


def _dependency_calls(dependant):
    for dep in dependant.dependencies:
        yield dep.call
        yield from _dependency_calls(dep)


def _api_routes(app):
    """(path, methods, dependant) of every API route, through included routers."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before included-router contexts: routes are flat
        for route in app.routes:
            if isinstance(route, APIRoute):
                yield route.path, route.methods, route.dependant
        return
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            yield context.path, context.methods, context.dependant


def operations(app):
    """(method, path template, needs admin) for every API route."""
    for path, methods, dependant in _api_routes(app):
        admin = require_admin in set(_dependency_calls(dependant))
        for method in sorted(set(methods) - {"HEAD", "OPTIONS"}):
            yield method, path, admin


def fill(path: str, **values) -> str:
    return PARAM.sub(lambda m: str(values.get(m.group(1), 1)), path)


def call(client, method: str, url: str, headers: dict[str, str] | None = None):
    kwargs = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    return client.request(method, url, headers=headers or {}, **kwargs)


@pytest.fixture
def world(settings):
    """Two projects, a job in each, and the id of an unrelated key."""
    with session_scope(settings.resolved_database_url) as session:
        a = t.Project(name="a", modality="text", classes=["x", "y"], proxy={"arch": "fasttext"},
                      target={"arch": "vdcnn29"}, strategy="random", schedule={"initial": 1, "rounds": [1], "budget": 2})
        b = t.Project(name="b", modality="text", classes=["x", "y"], proxy={"arch": "fasttext"},
                      target={"arch": "vdcnn29"}, strategy="random", schedule={"initial": 1, "rounds": [1], "budget": 2})
        session.add_all([a, b])
        session.flush()
        job_a = t.Job(project_id=a.id, type=t.JOB_SELECT_ROUND)
        job_b = t.Job(project_id=b.id, type=t.JOB_SELECT_ROUND)
        session.add_all([job_a, job_b])
        session.flush()
        return {"a": a.id, "b": b.id, "job_a": job_a.id, "job_b": job_b.id}


def project_count(settings) -> int:
    with session_scope(settings.resolved_database_url) as session:
        return session.scalar(select(func.count()).select_from(t.Project))


def test_route_enumeration_finds_the_admin_routes(app):
    ops = {(m, p): admin for m, p, admin in operations(app)}
    assert KNOWN_ADMIN <= {op for op, admin in ops.items() if admin}
    assert ops[("GET", "/projects")] is False and ops[("GET", "/jobs/{job_id}")] is False
    assert ("GET", "/health") in ops


def test_health_needs_no_key(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_every_route_but_health_needs_a_valid_key(client, app, admin_headers, world, settings):
    revoked = client.post("/keys", json={"role": "admin", "name": "old"}, headers=admin_headers).json()
    assert client.delete(f"/keys/{revoked['id']}", headers=admin_headers).status_code == 200
    bad_headers = [
        {},
        {"Authorization": "Bearer svp_not-a-key"},
        {"X-API-Key": "svp_not-a-key"},
        {"Authorization": f"Basic {revoked['secret']}"},  # right secret, wrong scheme
        {"Authorization": "Bearer "},
        {"Authorization": f"Bearer {revoked['secret']}"},
        {"X-API-Key": revoked["secret"]},
    ]
    checked = 0
    for method, path, _ in operations(app):
        if path in PUBLIC:
            continue
        url = fill(path, project_id=world["a"], job_id=world["job_a"], key_id=revoked["id"])
        for headers in bad_headers:
            response = call(client, method, url, headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
            checked += 1
    assert checked >= 7 * len(KNOWN_ADMIN)
    assert project_count(settings) == 2


def test_both_header_styles_work(client, make_key):
    bearer = make_key("annotator")
    secret = bearer["Authorization"].removeprefix("Bearer ")
    assert client.get("/projects", headers=bearer).status_code == 200
    assert client.get("/projects", headers={"X-API-Key": secret}).status_code == 200
    assert client.get("/projects", headers={"Authorization": f"bearer {secret}"}).status_code == 200


def test_annotators_get_403_on_every_admin_route(client, app, make_key, world, settings):
    annotator = make_key("annotator")
    admin_ops = [(m, p) for m, p, admin in operations(app) if admin]
    for method, path in admin_ops:
        url = fill(path, project_id=world["a"], job_id=world["job_a"], key_id=1)
        response = call(client, method, url, annotator)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["code"] == "forbidden"
    assert project_count(settings) == 2
    with session_scope(settings.resolved_database_url) as session:
        assert session.get(t.Job, world["job_a"]).status == t.JOB_QUEUED  # not cancelled


def test_admins_get_past_authorization_on_admin_routes(client, app, admin_headers):
    # Ids that do not exist, and empty bodies: admins reach the handler (404/422...), never 401/403,
    # and nothing can be changed.
    for method, path, admin in operations(app):
        if admin:
            response = call(client, method, fill(path, project_id=999_999, job_id=999_999, key_id=999_999), admin_headers)
            assert response.status_code not in (401, 403), (method, path, response.text)


def test_project_scoped_keys_get_403_on_other_projects(client, app, make_key, world):
    scoped_annotator = make_key("annotator", project_id=world["a"])
    scoped_admin = make_key("admin", project_id=world["a"])
    project_ops = [(m, p) for m, p, _ in operations(app) if "{project_id}" in p or "{job_id}" in p]
    assert len(project_ops) >= 5
    for headers in (scoped_annotator, scoped_admin):
        for method, path in project_ops:
            response = call(client, method, fill(path, project_id=world["b"], job_id=world["job_b"]), headers)
            assert response.status_code == 403, (method, path, response.text)
        # ...while their own project is visible.
        assert client.get(f"/projects/{world['a']}", headers=headers).status_code == 200
        assert client.get(f"/jobs/{world['job_a']}", headers=headers).status_code == 200


def test_scoped_admins_cannot_manage_keys_or_create_projects(client, make_key, world, settings):
    scoped_admin = make_key("admin", project_id=world["a"])
    response = client.post("/keys", json={"role": "admin", "name": "escalate"}, headers=scoped_admin)
    assert response.status_code == 403
    assert client.get("/keys", headers=scoped_admin).status_code == 403
    response = client.post("/projects", json={"name": "c", "modality": "text", "classes": ["x", "y"]}, headers=scoped_admin)
    assert response.status_code == 403
    assert project_count(settings) == 2
    # Within its project it is an admin.
    assert client.patch(f"/projects/{world['a']}", json={"seed": 5}, headers=scoped_admin).json()["seed"] == 5


def test_key_lifecycle(client, admin_headers, world, settings):
    response = client.post("/keys", json={"role": "annotator", "name": "alice", "project_id": world["a"]},
                           headers=admin_headers)
    assert response.status_code == 201
    created = response.json()
    secret = created["secret"]
    assert secret.startswith(created["prefix"]) and len(secret) > 30
    assert (created["role"], created["name"], created["project_id"], created["revoked_at"]) == (
        "annotator", "alice", world["a"], None)

    listed = client.get("/keys", headers=admin_headers).json()
    mine = next(k for k in listed if k["id"] == created["id"])
    assert set(mine) == {"id", "prefix", "role", "name", "project_id", "created_at", "revoked_at"}
    assert secret not in repr(listed)

    alice = {"X-API-Key": secret}
    assert client.get(f"/projects/{world['a']}", headers=alice).status_code == 200
    revoked = client.delete(f"/keys/{created['id']}", headers=admin_headers)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert client.get(f"/projects/{world['a']}", headers=alice).status_code == 401
    again = client.delete(f"/keys/{created['id']}", headers=admin_headers)
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]
    assert client.delete("/keys/999999", headers=admin_headers).status_code == 404


@pytest.mark.parametrize(
    "body,status",
    [
        ({"role": "owner", "name": "x"}, 422),
        ({"role": "admin"}, 422),
        ({"role": "admin", "name": ""}, 422),
        ({"role": "admin", "name": "x", "project_id": 0}, 422),
        ({"role": "admin", "name": "x", "extra": 1}, 422),
        ({"role": "annotator", "name": "x", "project_id": 999_999}, 404),
    ],
)
def test_bad_key_requests_write_nothing(client, admin_headers, settings, body, status):
    response = client.post("/keys", json=body, headers=admin_headers)
    assert response.status_code == status and "error" in response.json()
    with session_scope(settings.resolved_database_url) as session:
        assert session.scalar(select(func.count()).select_from(t.ApiKey)) == 1  # the admin's own


def test_openapi_documents_every_route(client, app):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    operations_seen = 0
    for path, item in spec["paths"].items():
        for method, op in item.items():
            operations_seen += 1
            assert op.get("summary"), f"{method.upper()} {path} has no summary"
            if path not in PUBLIC:
                assert "401" in op["responses"], f"{method.upper()} {path} does not document 401"
    assert operations_seen == sum(1 for _ in operations(app))

    schemas = spec["components"]["schemas"]
    for path, method in [("/projects", "post"), ("/projects/{project_id}", "patch"), ("/keys", "post")]:
        ref = spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert schemas[ref.rsplit("/", 1)[-1]].get("examples"), f"{method} {path} body has no examples"

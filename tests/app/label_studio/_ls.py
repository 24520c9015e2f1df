"""Helpers for the Label Studio backend tests: the recorded requests (trimmed from what a real
Label Studio 1.23.2 sent, see fixtures/), a project whose classes match their label config, and
the credentials Label Studio presents (HTTP Basic, the key as password)."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from app.db import tables as t
from app.db.session import session_scope

FIXTURES = Path(__file__).parent / "fixtures"
CLASSES = ["Positive", "Negative", "Neutral"]  # the recorded config's choices


def exchanges() -> list[dict[str, Any]]:
    with open(FIXTURES / "exchanges-1.23.2.jsonl") as f:
        return [json.loads(line) for line in f]


def recorded(path: str, action: str | None = None, *, index: int = 0) -> dict[str, Any]:
    """A deep copy of the ``index``-th recorded exchange to ``path`` (and webhook ``action``)."""
    found = [
        e for e in exchanges()
        if e["path"] == path and (action is None or (e["request"] or {}).get("action") == action)
    ]
    return copy.deepcopy(found[index])


def label_config() -> str:
    return recorded("/setup")["request"]["schema"]


def basic(secret: str, user: str = "label-studio") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def secret_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].split(" ", 1)[1]


def create_project(client, admin_headers, **overrides) -> int:
    body = {
        "name": overrides.pop("name", "ls-project"),
        "modality": "text",
        "classes": CLASSES,
        "proxy": {"arch": "fasttext"},
        "target": {"arch": "fasttext"},
        "schedule": {"initial": 2, "rounds": [2], "budget": 5},
        **overrides,
    }
    response = client.post("/projects", json=body, headers=admin_headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def ls_key(make_key, project_id: int) -> dict[str, str]:
    """Basic-auth headers with a project-scoped annotator key, as Label Studio sends them."""
    return basic(secret_of(make_key("annotator", "label-studio", project_id=project_id)))


def annotation_event(task_id: int, choice: str | None, *, annotation_id: int, updated_at: str,
                     action: str = "ANNOTATION_CREATED", cancelled: bool = False) -> dict[str, Any]:
    """The recorded ANNOTATION_CREATED body, re-targeted at another task / choice / annotation."""
    body = recorded("/webhook", "ANNOTATION_CREATED")["request"]
    body["action"] = action
    annotation = body["annotation"]
    annotation.update(id=annotation_id, task=task_id, updated_at=updated_at, was_cancelled=cancelled)
    if choice is None:
        annotation["result"] = []
    else:
        annotation["result"][0]["value"]["choices"] = [choice]
    return body


def tasks_request(tasks: list[tuple[int, str]]) -> dict[str, Any]:
    """The recorded 5-task /predict body with other tasks (id, text) in the recorded task shape."""
    body = recorded("/predict")["request"]
    template = body["tasks"][0]
    body["tasks"] = [{**copy.deepcopy(template), "id": task_id, "inner_id": task_id, "data": {"text": text}}
                     for task_id, text in tasks]
    return body


def count(url: str, table, *where) -> int:
    with session_scope(url) as session:
        return session.scalar(select(func.count()).select_from(table).where(*where))


def mapping(url: str, project_id: int) -> dict[int, int]:
    with session_scope(url) as session:
        return dict(
            session.execute(
                select(t.LabelStudioTask.task_id, t.LabelStudioTask.item_id).where(
                    t.LabelStudioTask.project_id == project_id
                )
            ).all()
        )

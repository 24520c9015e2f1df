"""Helpers for the queries / labels / round-lifecycle tests: projects and items written straight to
the database, so these tests depend on nothing but the data model."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from sqlalchemy import func, select

from app.db import tables as t
from app.db.session import session_scope


def make_project(
    url: str,
    *,
    pool: int = 20,
    test: int = 0,
    classes: tuple[str, ...] = ("cat", "dog"),
    schedule: dict[str, Any] | None = None,
    seed: int = 0,
    lease_seconds: int | None = None,
    strategy: str = "least_confidence",
) -> tuple[int, list[int], list[int]]:
    """A draft text project with ``pool`` unlabeled pool items and ``test`` labeled test items.

    Returns (project id, pool item ids, test item ids), ids ascending.
    """
    tag = uuid.uuid4().hex[:8]
    with session_scope(url) as session:
        project = t.Project(
            name=f"p-{tag}",
            modality="text",
            classes=list(classes),
            proxy={"arch": "fasttext"},
            target={"arch": "fasttext"},
            strategy=strategy,
            schedule=schedule or {"initial": 5, "rounds": [5], "budget": 15},
            seed=seed,
            lease_seconds=lease_seconds,
        )
        session.add(project)
        session.flush()
        rows = []
        for split, count in (("pool", pool), ("test", test)):
            for i in range(count):
                text = f"{split} text {i} {tag}"
                rows.append(
                    t.Item(
                        project_id=project.id,
                        external_id=f"{split}-{i}",
                        split=split,
                        content_type="text/plain",
                        content_sha256=hashlib.sha256(text.encode()).hexdigest(),
                        text=text,
                        size_bytes=len(text),
                        label=classes[i % len(classes)] if split == "test" else None,
                    )
                )
        session.add_all(rows)
        session.flush()
        pool_ids = sorted(r.id for r in rows if r.split == "pool")
        test_ids = sorted(r.id for r in rows if r.split == "test")
        return project.id, pool_ids, test_ids


def count(url: str, table, *where) -> int:
    with session_scope(url) as session:
        return session.scalar(select(func.count()).select_from(table).where(*where))


def queries_of(url: str, project_id: int, round_index: int) -> list[t.Query]:
    with session_scope(url) as session:
        return list(
            session.scalars(
                select(t.Query)
                .where(t.Query.project_id == project_id, t.Query.round_index == round_index)
                .order_by(t.Query.rank)
            )
        )


def get(url: str, model, key):
    with session_scope(url) as session:
        return session.get(model, key)


def assert_error(response, status: int, code: str, *words: str) -> dict:
    """The response is the service's JSON error with this status and code, naming ``words``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    text = (body["error"]["message"] + " " + str(body["error"]["details"])).lower()
    for word in words:
        assert word.lower() in text, (word, body)
    return body

"""Helpers shared by the item import tests: projects inserted directly, generated images and
archives, row counts."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Iterable

import numpy as np
from PIL import Image
from sqlalchemy import func, select

from app.config import Settings
from app.db import tables as t
from app.db.session import session_scope

TEXT_CLASSES = ["neg", "pos"]
IMAGE_CLASSES = ["cat", "dog", "bird"]


def make_project(
    settings: Settings, *, modality: str = "text", classes: Iterable[str] | None = None, status: str = t.PROJECT_DRAFT
) -> int:
    if classes is None:
        classes = TEXT_CLASSES if modality == "text" else IMAGE_CLASSES
    with session_scope(settings.resolved_database_url) as session:
        project = t.Project(
            name=f"p-{uuid.uuid4().hex[:8]}",
            modality=modality,
            classes=list(classes),
            proxy={"arch": "mlp"},
            target={"arch": "mlp"},
            strategy="least_confidence",
            schedule={"initial": 0.02, "rounds": [0.08], "budget": 0.5},
            status=status,
        )
        session.add(project)
        session.flush()
        return project.id


def counts(settings: Settings, project_id: int | None = None) -> tuple[int, int]:
    """(items, annotations), in one project or in all."""
    with session_scope(settings.resolved_database_url) as session:
        items = select(func.count()).select_from(t.Item)
        annotations = select(func.count()).select_from(t.Annotation)
        if project_id is not None:
            items = items.where(t.Item.project_id == project_id)
            annotations = annotations.where(t.Annotation.project_id == project_id)
        return session.scalar(items), session.scalar(annotations)


def items_of(settings: Settings, project_id: int) -> list[t.Item]:
    with session_scope(settings.resolved_database_url) as session:
        return list(session.scalars(select(t.Item).where(t.Item.project_id == project_id).order_by(t.Item.id)))


def annotations_of(settings: Settings, project_id: int) -> list[t.Annotation]:
    with session_scope(settings.resolved_database_url) as session:
        query = select(t.Annotation).where(t.Annotation.project_id == project_id).order_by(t.Annotation.item_id)
        return list(session.scalars(query))


def pixels(seed: int, size: tuple[int, int] = (8, 8), channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], channels) if channels > 1 else (size[1], size[0])
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def image_bytes(seed: int, fmt: str = "PNG", size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels(seed, size)).save(buffer, format=fmt)
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def jsonl_bytes(rows: Iterable[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8")

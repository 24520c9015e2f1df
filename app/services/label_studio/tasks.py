"""Label Studio tasks -> service items: look them up, import the unknown ones into the pool.

A task is imported through the service's normal import path (``app.services.items.import_json``:
the same checks, deduplication and storage as any import) with ``external_id`` ``ls:<task id>``.
The task -> item mapping is kept in ``label_studio_task`` because several tasks with the same
content share one item (the import deduplicates by content).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import tables as t
from app.errors import Unprocessable
from app.services.importers import ImportContext, Prepared, RawRow, prepare
from app.services.items import import_json
from app.services.label_studio.config import ChoicesConfig
from app.services.label_studio.media import MediaSource, fetch_image, is_inline
from app.storage import BlobStore

log = logging.getLogger(__name__)

EXTERNAL_ID_PREFIX = "ls:"
CHUNK = 5_000
FETCH_THREADS = 8


@dataclass(frozen=True)
class TaskIn:
    """The parts of a Label Studio task the service reads."""

    id: int
    data: dict[str, Any] | None


@dataclass
class Resolution:
    items: dict[int, int]  # task id -> item id, for every task that has (now) an item
    imported: int = 0  # tasks whose content was imported by this call (new items or duplicates)
    deferred: list[int] | None = None  # image tasks left for /predict (webhooks do not fetch)


def external_id(task_id: int) -> str:
    return f"{EXTERNAL_ID_PREFIX}{task_id}"


def known_items(session: Session, *, project_id: int, task_ids: Iterable[int]) -> dict[int, int]:
    ids = sorted(set(task_ids))
    found: dict[int, int] = {}
    for start in range(0, len(ids), CHUNK):
        found.update(
            session.execute(
                select(t.LabelStudioTask.task_id, t.LabelStudioTask.item_id).where(
                    t.LabelStudioTask.project_id == project_id,
                    t.LabelStudioTask.task_id.in_(ids[start : start + CHUNK]),
                )
            ).all()
        )
    return found


def _value(task: TaskIn, config: ChoicesConfig) -> Any:
    if not isinstance(task.data, dict):
        raise ValueError("the task has no data object")
    if config.value_key not in task.data:
        present = ", ".join(repr(k) for k in list(task.data)[:10])
        raise ValueError(f"the task's data has no {config.value_key!r} (the config reads ${config.value_key}; found {present})")
    return task.data[config.value_key]


def _rows(
    tasks: Sequence[TaskIn], *, config: ChoicesConfig, source: MediaSource, settings: Settings, fetch_urls: bool
) -> tuple[list[tuple[TaskIn, dict[str, Any]]], list[int], list[dict[str, Any]]]:
    """(import rows, deferred task ids, problems) for the given unknown tasks."""
    rows: list[tuple[TaskIn, dict[str, Any]]] = []
    deferred: list[int] = []
    problems: list[dict[str, Any]] = []
    to_fetch: list[tuple[TaskIn, str]] = []
    for task in tasks:
        base = {"external_id": external_id(task.id), "meta": {"label_studio": {"task_id": task.id}}}
        try:
            value = _value(task, config)
            if not isinstance(value, str):
                raise ValueError(f"the task's {config.value_key!r} must be a string, not {type(value).__name__}")
        except ValueError as exc:
            problems.append({"task": task.id, "problem": str(exc)})
            continue
        if config.modality == "text":
            rows.append((task, {**base, "text": value}))
        elif is_inline(value) or fetch_urls:
            to_fetch.append((task, value))
        else:
            deferred.append(task.id)

    def load(entry: tuple[TaskIn, str]) -> tuple[TaskIn, bytes | str]:
        task, value = entry
        try:
            return task, fetch_image(value, source, max_bytes=settings.max_item_bytes)
        except ValueError as exc:
            return task, str(exc)

    if to_fetch:
        with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, len(to_fetch))) as pool:
            for task, data in pool.map(load, to_fetch):
                if isinstance(data, str):
                    problems.append({"task": task.id, "problem": data})
                else:
                    base = {"external_id": external_id(task.id), "meta": {"label_studio": {"task_id": task.id}}}
                    rows.append((task, {**base, "image_base64": base64.b64encode(data).decode("ascii")}))
    return rows, deferred, problems


def _content_sha(row: dict[str, Any], ctx: ImportContext) -> str:
    data = base64.b64decode(row["image_base64"]) if "image_base64" in row else None
    prepared = prepare(RawRow(ref={}, text=row.get("text"), data=data), ctx, decode=False)
    assert isinstance(prepared, Prepared), prepared  # the import accepted this very row
    return prepared.sha256


def _insert_mapping(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert task -> item rows; a task mapped meanwhile by a concurrent request keeps its row."""
    table = t.LabelStudioTask.__table__
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(table).on_conflict_do_nothing(index_elements=["project_id", "task_id"])
    for start in range(0, len(rows), CHUNK):
        session.execute(statement, rows[start : start + CHUNK])


def resolve_tasks(
    session: Session,
    *,
    project: t.Project,
    config: ChoicesConfig,
    source: MediaSource,
    tasks: Sequence[TaskIn],
    blobs: BlobStore,
    settings: Settings,
    fetch_urls: bool = True,
) -> Resolution:
    """Map tasks to items, importing unknown ones (all or nothing: a bad task is a 422 naming it).

    A completed project takes no items: its unknown tasks stay unmapped. With ``fetch_urls`` off,
    image tasks given by URL are left for later (``deferred``).
    """
    mapping = known_items(session, project_id=project.id, task_ids=[task.id for task in tasks])
    unknown: dict[int, TaskIn] = {}
    for task in tasks:
        if task.id not in mapping:
            unknown.setdefault(task.id, task)
    if not unknown or project.status == t.PROJECT_COMPLETED:
        return Resolution(items=mapping, deferred=[])
    rows, deferred, problems = _rows(
        list(unknown.values()), config=config, source=source, settings=settings, fetch_urls=fetch_urls
    )
    if problems:
        raise Unprocessable(
            f"{len(problems)} Label Studio task(s) cannot be imported: {problems[0]['problem']}", details=problems
        )
    if not rows:
        return Resolution(items=mapping, deferred=deferred)
    try:
        import_json(
            session, project=project, split=t.SPLIT_POOL, items=[row for _, row in rows], blobs=blobs, settings=settings
        )
    except Unprocessable as exc:
        # Name the tasks, not the rows of the import built from them.
        details = [
            {"task": rows[d["row"]][0].id, "problem": d.get("problem")} if isinstance(d, dict) and "row" in d else d
            for d in exc.details
        ]
        raise Unprocessable(f"Label Studio tasks cannot be imported: {exc.message}", details=details) from None

    ctx = ImportContext(
        modality=project.modality,
        classes=tuple(str(c) for c in project.classes),
        split=t.SPLIT_POOL,
        max_item_bytes=settings.max_item_bytes,
        max_image_pixels=settings.max_image_pixels,
    )
    sha_by_task = {task.id: _content_sha(row, ctx) for task, row in rows}
    shas = sorted(set(sha_by_task.values()))
    item_by_sha: dict[str, int] = {}
    for start in range(0, len(shas), CHUNK):
        item_by_sha.update(
            session.execute(
                select(t.Item.content_sha256, t.Item.id).where(
                    t.Item.project_id == project.id, t.Item.content_sha256.in_(shas[start : start + CHUNK])
                )
            ).all()
        )
    _insert_mapping(
        session,
        [{"project_id": project.id, "task_id": task_id, "item_id": item_by_sha[sha]} for task_id, sha in sha_by_task.items()],
    )
    mapping.update(known_items(session, project_id=project.id, task_ids=sha_by_task))
    log.info("project %s: %d Label Studio task(s) mapped to items", project.id, len(sha_by_task))
    return Resolution(items=mapping, imported=len(sha_by_task), deferred=deferred)

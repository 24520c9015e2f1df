"""Projects: create, list, read with counts, update while draft, delete."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import tables as t
from app.errors import Conflict, Unprocessable
from app.schemas.projects import ProjectCounts, ProjectCreate, ProjectRead, ProjectUpdate
from app.services.schedule import budget_count

log = logging.getLogger(__name__)

# Columns that hold the user's settings: exactly the fields of ProjectCreate.
SETTING_FIELDS: tuple[str, ...] = tuple(ProjectCreate.model_fields)


def _check_name_free(session: Session, name: str, *, except_id: int | None = None) -> None:
    query = select(t.Project.id).where(t.Project.name == name)
    if except_id is not None:
        query = query.where(t.Project.id != except_id)
    if session.scalar(query) is not None:
        raise Conflict(f"a project named {name!r} already exists")


def _flush_unique_name(session: Session, name: str) -> None:
    # The pre-check above answers the common case; two concurrent creates meet at the unique index.
    # Raising makes the request's session roll back, so nothing is written.
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"a project named {name!r} already exists") from exc


def create_project(session: Session, *, spec: ProjectCreate) -> t.Project:
    _check_name_free(session, spec.name)
    project = t.Project(**spec.model_dump(mode="json"), status=t.PROJECT_DRAFT)
    session.add(project)
    _flush_unique_name(session, spec.name)
    log.info("created project %s (%s)", project.id, project.name)
    return project


def project_counts(session: Session, project_ids: Iterable[int]) -> dict[int, ProjectCounts]:
    """Pool / labeled / unlabeled / test counts of several projects in one grouped query."""
    ids = list(project_ids)
    raw: dict[int, dict[str, tuple[int, int]]] = {pid: {} for pid in ids}
    if ids:
        rows = session.execute(
            select(t.Item.project_id, t.Item.split, func.count(), func.count(t.Item.label))
            .where(t.Item.project_id.in_(ids))
            .group_by(t.Item.project_id, t.Item.split)
        )
        for project_id, split, total, labeled in rows:
            raw[project_id][split] = (total, labeled)
    counts = {}
    for pid, splits in raw.items():
        pool, labeled = splits.get(t.SPLIT_POOL, (0, 0))
        test, _ = splits.get(t.SPLIT_TEST, (0, 0))
        counts[pid] = ProjectCounts(pool=pool, labeled=labeled, unlabeled=pool - labeled, test=test)
    return counts


def _read(project: t.Project, counts: ProjectCounts) -> ProjectRead:
    data: dict[str, Any] = {name: getattr(project, name) for name in ProjectRead.model_fields if hasattr(project, name)}
    return ProjectRead.model_validate(
        {**data, "counts": counts, "budget": budget_count(project.schedule, counts.pool)}
    )


def describe_project(session: Session, *, project: t.Project) -> ProjectRead:
    return _read(project, project_counts(session, [project.id])[project.id])


def list_projects(session: Session, *, scope_project_id: int | None = None) -> list[ProjectRead]:
    """Every project, or only the one a project-scoped key may see."""
    query = select(t.Project).order_by(t.Project.id)
    if scope_project_id is not None:
        query = query.where(t.Project.id == scope_project_id)
    projects = list(session.scalars(query))
    counts = project_counts(session, [p.id for p in projects])
    return [_read(p, counts[p.id]) for p in projects]


def _validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def update_project(session: Session, *, project: t.Project, changes: ProjectUpdate) -> t.Project:
    """Apply a partial update to a draft project; the merged settings must validate as a whole."""
    if project.status != t.PROJECT_DRAFT:
        raise Conflict(f"project {project.id} is {project.status}; settings can only change while it is a draft")
    patch = changes.model_dump(mode="json", exclude_unset=True)
    if not patch:
        return project
    merged = {name: getattr(project, name) for name in SETTING_FIELDS} | patch
    try:
        # Re-validating the whole keeps cross-field rules (architecture vs modality) true after a patch.
        settings = ProjectCreate.model_validate(merged).model_dump(mode="json")
    except ValidationError as exc:
        raise Unprocessable("the updated project settings are invalid", details=_validation_details(exc)) from exc

    if settings["modality"] != project.modality and session.scalar(
        select(t.Item.id).where(t.Item.project_id == project.id).limit(1)
    ):
        raise Conflict("the modality cannot change once items are imported")
    if settings["classes"] != project.classes:
        used = set(
            session.scalars(
                select(t.Item.label)
                .where(t.Item.project_id == project.id, t.Item.label.is_not(None))
                .distinct()
            )
        )
        missing = sorted(used - set(settings["classes"]))
        if missing:
            raise Conflict(
                "items already carry labels that the new classes would drop",
                details=[{"label": label} for label in missing],
            )
    if settings["name"] != project.name:
        _check_name_free(session, settings["name"], except_id=project.id)

    for name, value in settings.items():
        if getattr(project, name) != value:
            setattr(project, name, value)
    _flush_unique_name(session, settings["name"])
    return project


def delete_project(session: Session, *, project: t.Project) -> None:
    """Delete a project and, through ON DELETE CASCADE, its items, rounds, jobs and scoped keys.

    Item content in the blob store is content-addressed and may be shared, so it is left in place.
    """
    session.delete(project)
    session.flush()
    log.info("deleted project %s (%s)", project.id, project.name)

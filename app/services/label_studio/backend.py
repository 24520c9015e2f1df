"""Label Studio's ML-backend calls other than the webhook: ``/setup`` and ``/predict``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.config import Settings
from app.db import tables as t
from app.db.base import utcnow
from app.errors import Conflict
from app.services.label_studio.config import ChoicesConfig, check_against_project, parse_label_config
from app.services.label_studio.media import MediaSource
from app.services.label_studio.scoring import LAST, current_model_version, score_items
from app.services.rounds import current_round
from app.services.label_studio.tasks import TaskIn, resolve_tasks
from app.storage import BlobStore


@dataclass(frozen=True)
class TaskPrediction:
    result: list[dict[str, Any]]  # [] when no proxy has scored the task's item yet
    score: float


def project_config(project: t.Project, label_config: str) -> ChoicesConfig:
    """Parse a label config and check that it fits the project (422 naming every problem)."""
    config = parse_label_config(label_config)
    check_against_project(config, modality=project.modality, classes=list(project.classes))
    return config


def get_link(session: Session, *, project_id: int) -> t.LabelStudioLink | None:
    return session.get(t.LabelStudioLink, project_id)


def media_source(link: t.LabelStudioLink | None) -> MediaSource:
    return MediaSource() if link is None else MediaSource(hostname=link.hostname, access_token=link.access_token)


def link_config(session: Session, *, project: t.Project, label_config: str | None) -> tuple[ChoicesConfig, t.LabelStudioLink | None]:
    """The config sent with the request, else the one stored by the last /setup."""
    link = get_link(session, project_id=project.id)
    if label_config:
        return project_config(project, label_config), link
    if link is None:
        raise Conflict(
            f"project {project.id} has no Label Studio label config yet: connect the backend (Label Studio calls /setup)"
        )
    return project_config(project, link.label_config), link


def setup(
    session: Session,
    *,
    project: t.Project,
    label_config: str,
    ls_project: str | None,
    hostname: str | None,
    access_token: str | None,
) -> str:
    """Check the label config against the project, remember where Label Studio is, and return the
    current model version (Label Studio fetches new predictions when it changes)."""
    project_config(project, label_config)
    link = get_link(session, project_id=project.id)
    if link is None:
        link = t.LabelStudioLink(project_id=project.id, label_config=label_config)
        session.add(link)
    link.label_config = label_config
    link.ls_project = ls_project[:200] if ls_project else None
    link.hostname = hostname[:2048] if hostname else None
    link.access_token = access_token or None
    link.updated_at = utcnow()
    session.flush()
    return current_model_version(session, project=project)


def predict(
    session: Session,
    *,
    project: t.Project,
    tasks: Sequence[TaskIn],
    label_config: str | None,
    blobs: BlobStore,
    settings: Settings,
) -> tuple[str, list[TaskPrediction]]:
    """One prediction per task, in request order: the proxy's class as a ``choices`` result, and a
    score that makes "Uncertainty sampling" serve the service's order (see ``scoring``). Unknown
    tasks are imported first."""
    config, link = link_config(session, project=project, label_config=label_config)
    resolution = resolve_tasks(
        session, project=project, config=config, source=media_source(link), tasks=tasks, blobs=blobs, settings=settings
    )
    version, scores = score_items(session, project=project, item_ids=resolution.items.values())
    classes = list(project.classes)
    predictions = []
    for task in tasks:
        item_id = resolution.items.get(task.id)
        scored = scores.get(item_id) if item_id is not None else None
        if scored is None:  # not importable now (a completed project takes no items)
            predictions.append(TaskPrediction(result=[], score=LAST))
            continue
        result = [] if scored.class_index is None else [config.result(classes[scored.class_index])]
        predictions.append(TaskPrediction(result=result, score=scored.score))
    return version, predictions


def standing(session: Session, *, project_id: int) -> tuple[str, bool]:
    """(current model version, whether a round is being selected: a new version is coming)."""
    project = session.get(t.Project, project_id, populate_existing=True)
    if project is None:
        return "", False
    round_ = current_round(session, project=project)
    selecting = project.status == t.PROJECT_ACTIVE and round_ is not None and round_.status == t.ROUND_SELECTING
    return current_model_version(session, project=project), selecting

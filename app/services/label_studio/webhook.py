"""Label Studio's webhook events, mapped onto the service's own paths.

Label Studio waits 1 s for a webhook and sends them synchronously, so every handler here does a
few indexed reads and writes and returns; training is only ever queued (the round lifecycle
creates the job, a worker runs it).

- ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED``: the choice is recorded through the normal label
  path (``add_labels``) with idempotency key ``ls:<annotation id>:<updated_at>``: a webhook
  delivered twice is a replay, an update is a new label. A cancelled (skipped) annotation, or one
  without a choice for the config's control, records nothing.
- ``ANNOTATIONS_DELETED``: retracts the item's label if its latest label came from that annotation.
- ``TASKS_CREATED``: imports the tasks (image URLs are fetched later, by ``/predict``).
- ``START_TRAINING``: starts a draft project (round 0), or advances the open round (a
  ``select_round`` job retrains the proxy); otherwise says why nothing happened.
- anything else: acknowledged, nothing done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import tables as t
from app.errors import Conflict, NotFound, Unprocessable
from app.schemas.label_studio import IdRef, LSAnnotation, LSTask
from app.services.labels import LabelInput, add_labels, retract_label
from app.services.label_studio.backend import link_config, media_source, project_config
from app.services.label_studio.config import ChoicesConfig
from app.services.label_studio.scoring import current_model_version
from app.services.label_studio.tasks import TaskIn, known_items, resolve_tasks
from app.services.rounds import advance_round, current_round, lock_project, pool_counts, start_project
from app.storage import BlobStore

ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
KEY_PREFIX = "ls:"
_UNSAFE = re.compile(r"[^0-9A-Za-z:.+\-_]")


@dataclass
class Outcome:
    status: str
    action: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def _parse(model: type[BaseModel], value: Any, where: str) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        details = [{"loc": [where, *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise Unprocessable(f"the webhook's {where!r} is malformed", details=details) from None


def _parse_list(model: type[BaseModel], value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise Unprocessable(f"the webhook's {where!r} must be a list", details=[{"loc": [where], "msg": "not a list"}])
    return [_parse(model, entry, f"{where}[{i}]") for i, entry in enumerate(value)]


def _payload_config(session: Session, project: t.Project, payload: dict[str, Any]) -> ChoicesConfig:
    """The label config the event was made with (sent along with the project), else /setup's."""
    ls_project = payload.get("project")
    sent = ls_project.get("label_config") if isinstance(ls_project, dict) else None
    if isinstance(sent, str) and sent.strip():
        return project_config(project, sent)
    return link_config(session, project=project, label_config=None)[0]


def _choice(annotation: LSAnnotation, config: ChoicesConfig) -> str | None:
    """The single choice the annotation makes with the config's Choices control, or None."""
    for entry in annotation.result:
        if not isinstance(entry, dict) or entry.get("from_name") != config.from_name:
            continue
        if str(entry.get("type", "choices")).lower() != "choices":
            continue
        value = entry.get("value")
        choices = value.get("choices") if isinstance(value, dict) else None
        if not isinstance(choices, list) or not choices:
            return None
        if len(choices) != 1 or not isinstance(choices[0], str):
            raise Unprocessable(
                f"annotation {annotation.id} selects {choices!r}; the service records one class per item",
                details=[{"annotation": annotation.id, "choices": choices}],
            )
        return choices[0]
    return None


def annotation_key(annotation: LSAnnotation) -> str:
    """Same annotation state -> same key (a re-delivery replays); an update -> a new key."""
    version = _UNSAFE.sub("", annotation.updated_at or annotation.created_at or "")
    return f"{KEY_PREFIX}{annotation.id}:{version}"[:200]


def _annotator(prefix: str, annotation: LSAnnotation) -> str:
    return f"{prefix}:ls-user-{_UNSAFE.sub('', annotation.user)[:40]}"[:200]


def _record(session: Session, project: t.Project, payload: dict[str, Any], action: str, annotator: str) -> Outcome:
    annotation = _parse(LSAnnotation, payload.get("annotation"), "annotation")
    if annotation.was_cancelled:
        return Outcome("skipped", action, f"annotation {annotation.id} was cancelled (skipped): nothing recorded")
    config = _payload_config(session, project, payload)
    choice = _choice(annotation, config)
    if choice is None:
        return Outcome("skipped", action, f"annotation {annotation.id} makes no choice with {config.from_name!r}: nothing recorded")
    item_id = known_items(session, project_id=project.id, task_ids=[annotation.task_id]).get(annotation.task_id)
    if item_id is None:
        raise NotFound(
            f"Label Studio task {annotation.task_id} is not known to project {project.id}: "
            "import it first (Label Studio's 'Retrieve Predictions', or its TASKS_CREATED webhook)"
        )
    entry = LabelInput(
        label=choice,
        item_id=item_id,
        idempotency_key=annotation_key(annotation),
        meta={"label_studio": {"annotation_id": annotation.id, "task_id": annotation.task_id, "user": annotation.user}},
    )
    [outcome] = add_labels(session, project=project, annotator=_annotator(annotator, annotation), entries=[entry])
    return Outcome(
        "replayed" if outcome.replayed else "recorded",
        action,
        f"item {item_id} labeled {choice!r}" + (" (already recorded)" if outcome.replayed else ""),
        {"item_id": item_id, "label": choice, "annotation_id": outcome.annotation.id,
         "project_status": project.status, "current_round": project.current_round},
    )


def _latest(session: Session, item_id: int) -> t.Annotation | None:
    return session.scalar(
        select(t.Annotation)
        .where(t.Annotation.item_id == item_id)
        .order_by(t.Annotation.created_at.desc(), t.Annotation.id.desc())
        .limit(1)
    )


def _retract(session: Session, project: t.Project, payload: dict[str, Any], action: str, annotator: str) -> Outcome:
    refs = _parse_list(IdRef, payload.get("annotations"), "annotations")
    retracted: list[int] = []
    for ref in refs:
        prefix = f"{KEY_PREFIX}{ref.id}:"
        item_ids = session.scalars(
            select(t.Annotation.item_id)
            .where(t.Annotation.project_id == project.id, t.Annotation.idempotency_key.like(prefix + "%"))
            .distinct()
        ).all()
        for item_id in item_ids:
            latest = _latest(session, item_id)
            # Only the label this annotation gave is withdrawn: a later label (another annotator,
            # another tool) stays, and a second delivery finds nothing left to retract.
            if latest is not None and latest.label is not None and (latest.idempotency_key or "").startswith(prefix):
                retract_label(session, project=project, item_id=item_id, annotator=f"{annotator}:ls")
                retracted.append(item_id)
    if not retracted:
        return Outcome("skipped", action, "no current label came from these annotations: nothing retracted",
                       {"annotations": [r.id for r in refs]})
    return Outcome("retracted", action, f"{len(retracted)} label(s) retracted", {"item_ids": retracted})


def _import(
    session: Session, project: t.Project, payload: dict[str, Any], action: str, blobs: BlobStore, settings: Settings
) -> Outcome:
    tasks = _parse_list(LSTask, payload.get("tasks"), "tasks")
    if project.status == t.PROJECT_COMPLETED:
        return Outcome("ignored", action, f"project {project.id} is completed; it takes no more items")
    config = _payload_config(session, project, payload)
    link = session.get(t.LabelStudioLink, project.id)
    resolution = resolve_tasks(
        session,
        project=project,
        config=config,
        source=media_source(link),
        tasks=[TaskIn(id=task.id, data=task.data) for task in tasks],
        blobs=blobs,
        settings=settings,
        fetch_urls=False,  # fetching images could outlast Label Studio's 1 s; /predict fetches them
    )
    deferred = resolution.deferred or []
    message = f"{resolution.imported} task(s) imported, {len(tasks) - resolution.imported - len(deferred)} already known"
    if deferred:
        message += f", {len(deferred)} image task(s) left for /predict to fetch"
    return Outcome("imported", action, message, {"imported": resolution.imported, "deferred": deferred})


def _train(session: Session, project: t.Project, action: str) -> Outcome:
    project = lock_project(session, project.id)
    if project.status == t.PROJECT_DRAFT:
        try:
            round0 = start_project(session, project_id=project.id)
        except Conflict as exc:
            return Outcome("ignored", action, f"the project cannot start: {exc.message}")
        return Outcome("started", action, f"project started: round 0 holds {round0.size} items",
                       {"current_round": 0, "model_version": current_model_version(session, project=project)})
    if project.status != t.PROJECT_ACTIVE:
        return Outcome("ignored", action, f"project {project.id} is {project.status}; no proxy is retrained any more")
    round_ = current_round(session, project=project)
    if round_ is None or round_.status != t.ROUND_OPEN:
        return Outcome("ignored", action, f"round {project.current_round} is already being selected (the proxy is training)",
                       {"current_round": project.current_round, "job_id": None if round_ is None else round_.job_id})
    if pool_counts(session, project_id=project.id)[1] == 0:
        return Outcome("ignored", action, "no item is labeled yet: there is nothing to train the proxy on")
    labeled_in_round = session.scalar(
        select(func.count()).select_from(t.Query).where(
            t.Query.project_id == project.id, t.Query.round_index == round_.index, t.Query.labeled_at.is_not(None)
        )
    )
    project, job = advance_round(session, project_id=project.id)
    return Outcome(
        "advanced", action,
        f"round {round_.index} closed with {labeled_in_round} of {round_.size} labeled; job {job.id} ({job.type}) queued",
        {"job_id": job.id, "job_type": job.type, "current_round": project.current_round},
    )


def handle_webhook(
    session: Session,
    *,
    project: t.Project,
    payload: dict[str, Any],
    annotator: str,
    blobs: BlobStore,
    settings: Settings,
) -> Outcome:
    """Act on one webhook event; ``annotator`` names the caller (its API key) in the label history."""
    action = str(payload.get("action", ""))
    if action in ANNOTATION_ACTIONS:
        return _record(session, project, payload, action, annotator)
    if action == "ANNOTATIONS_DELETED":
        return _retract(session, project, payload, action, annotator)
    if action == "TASKS_CREATED":
        return _import(session, project, payload, action, blobs, settings)
    if action == "START_TRAINING":
        return _train(session, project, action)
    if action == "TASKS_DELETED":
        return Outcome("ignored", action, "items stay in the service's pool (labels and rounds refer to them)")
    return Outcome("ignored", action, f"the service does not act on {action}")

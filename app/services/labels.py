"""Labels from annotators: validation, idempotency, history, retraction (DESIGN.md sections 4-5).

Every accepted label appends an ``annotation`` row (the history) and mirrors the latest one onto
the item (``label``, ``labeled_at``, ``label_round``), marks the current round's query of that item
labeled and frees its lease; then the round lifecycle runs in the same transaction. A request is a
replay, and writes nothing, when it carries an idempotency key already used in this project or
when the item's latest annotation is the same annotator giving the same label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app.db import tables as t
from app.db.base import utcnow
from app.errors import Conflict, NotFound, Unprocessable
from app.observability import count_new_labels
from app.services.rounds import after_labels, is_sqlite, write_lock

# Labels are accepted while annotation is meaningful: before start nothing is asked, after
# completion the target is trained. During training_target a late label is still recorded.
_LABELING_STATUSES = (t.PROJECT_ACTIVE, t.PROJECT_TRAINING_TARGET)


@dataclass(frozen=True)
class LabelInput:
    label: str
    item_id: int | None = None
    external_id: str | None = None
    meta: dict[str, Any] | None = None
    idempotency_key: str | None = None

    @property
    def reference(self) -> str:
        return f"item {self.item_id}" if self.item_id is not None else f"item with external_id {self.external_id!r}"


@dataclass
class LabelOutcome:
    annotation: t.Annotation
    item: t.Item
    replayed: bool


@dataclass
class _Problem:
    index: int
    entry: LabelInput
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_detail(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "item_id": self.entry.item_id,
            "external_id": self.entry.external_id,
            "code": self.code,
            "message": self.message,
            **self.details,
        }


def _check_status(project: t.Project) -> None:
    if project.status == t.PROJECT_DRAFT:
        raise Conflict(f"project {project.id} has not been started; labels are accepted once it is active")
    if project.status not in _LABELING_STATUSES:
        raise Conflict(f"project {project.id} is {project.status}; it accepts no more labels")


def _items_statement(*, by_id: bool, by_external: bool, lock: bool):
    refs = []
    if by_id:
        refs.append(t.Item.id.in_(bindparam("b_ids", expanding=True)))
    if by_external:
        refs.append(t.Item.external_id.in_(bindparam("b_external_ids", expanding=True)))
    stmt = (
        select(t.Item)
        .where(t.Item.project_id == bindparam("b_project"), or_(*refs))
        .order_by(t.Item.id)
        .execution_options(populate_existing=True)
    )
    return stmt.with_for_update(key_share=True) if lock else stmt


# Labeling is on the annotation hot path: its statements are built once (building one per call
# cost more CPU than running it) and take bound parameters.
_ITEMS = {
    (by_id, by_external, lock): _items_statement(by_id=by_id, by_external=by_external, lock=lock)
    for by_id, by_external in ((True, False), (False, True), (True, True))
    for lock in (False, True)
}


def _load_items(session: Session, project_id: int, entries: list[LabelInput]) -> tuple[dict[int, t.Item], dict[str, t.Item]]:
    """The referenced items of this project, locked (PostgreSQL) in id order so that concurrent
    labels of one item serialize and two bulk requests cannot deadlock."""
    ids = sorted({e.item_id for e in entries if e.item_id is not None})
    external_ids = sorted({e.external_id for e in entries if e.external_id is not None})
    stmt = _ITEMS[(bool(ids), bool(external_ids), not is_sqlite(session))]
    items = list(session.scalars(stmt, {"b_project": project_id, "b_ids": ids, "b_external_ids": external_ids}))
    return {item.id: item for item in items}, {item.external_id: item for item in items}


def _find(entry: LabelInput, by_id: dict[int, t.Item], by_external: dict[str, t.Item]) -> t.Item | None:
    if entry.item_id is not None:
        return by_id.get(entry.item_id)
    return by_external.get(entry.external_id)  # type: ignore[arg-type]


def _problem(index: int, entry: LabelInput, item: t.Item | None, project: t.Project) -> _Problem | None:
    if item is None:
        return _Problem(index, entry, "not_found", f"{entry.reference} does not exist in project {project.id}")
    if item.split != t.SPLIT_POOL:
        return _Problem(
            index, entry, "test_item", f"item {item.id} is in the {item.split} split; its ground truth comes with the import"
        )
    if entry.label not in project.classes:
        return _Problem(
            index,
            entry,
            "unknown_class",
            f"label {entry.label!r} is not one of the project's classes",
            {"classes": list(project.classes)},
        )
    return None


def _by_key(session: Session, project_id: int, keys: list[str]) -> dict[str, t.Annotation]:
    if not keys:
        return {}
    rows = session.scalars(
        select(t.Annotation).where(t.Annotation.project_id == project_id, t.Annotation.idempotency_key.in_(keys))
    )
    return {row.idempotency_key: row for row in rows}  # type: ignore[misc]


def _latest_annotation(session: Session, item_id: int) -> t.Annotation | None:
    return session.scalar(
        select(t.Annotation)
        .where(t.Annotation.item_id == item_id)
        .order_by(t.Annotation.created_at.desc(), t.Annotation.id.desc())
        .limit(1)
    )


_Q = t.Query.__table__
_ROUND = t.Round.__table__
# A round's id, for lookups of its queries by item: query's index on (round_id, item_id) finds
# them directly, where (project_id, round_index) would walk the whole round.
_ROUND_ID = (
    select(_ROUND.c.id)
    .where(_ROUND.c.project_id == bindparam("b_project"), _ROUND.c["index"] == bindparam("b_round"))
    .scalar_subquery()
)
# The current round's queries of these items, still unlabeled: mark them labeled, free their leases.
_MARK_QUERIES = (
    update(_Q)
    .where(
        _Q.c.round_id == _ROUND_ID,
        _Q.c.project_id == bindparam("b_project"),
        _Q.c.item_id.in_(bindparam("b_items", expanding=True)),
        _Q.c.labeled_at.is_(None),
    )
    .values(labeled_at=bindparam("b_now"), leased_to=None, lease_expires_at=None)
    .returning(_Q.c.item_id)
)
# The latest round whose batch held each of these items.
_LATEST_ROUNDS = (
    select(_Q.c.item_id, func.max(_Q.c.round_index))
    .where(_Q.c.project_id == bindparam("b_project"), _Q.c.item_id.in_(bindparam("b_items", expanding=True)))
    .group_by(_Q.c.item_id)
)


def _mark_queries(session: Session, project: t.Project, item_ids: list[int], now: datetime) -> dict[int, int]:
    """Mark the current round's queries of the items labeled; return, per item, the round that
    requested it (the current one, else the latest round whose batch held it; absent: none)."""
    connection = session.connection()
    requested: dict[int, int] = {}
    if project.current_round is not None:
        params = {"b_project": project.id, "b_round": project.current_round, "b_items": item_ids, "b_now": now}
        requested = dict.fromkeys(connection.execute(_MARK_QUERIES, params).scalars(), project.current_round)
    missing = [item_id for item_id in item_ids if item_id not in requested]
    if missing:
        requested.update(connection.execute(_LATEST_ROUNDS, {"b_project": project.id, "b_items": missing}).all())
    return requested


_ANNOTATION = t.Annotation.__table__
_INSERT_ANNOTATIONS = insert(_ANNOTATION).returning(_ANNOTATION.c.id, sort_by_parameter_order=True)
_MIRROR_ON_ITEM = (
    update(t.Item.__table__)
    .where(t.Item.__table__.c.id == bindparam("b_item"))
    .values(label=bindparam("b_label"), labeled_at=bindparam("b_now"), label_round=bindparam("b_round"))
)


def _write(session: Session, project: t.Project, new: list[tuple[t.Item, t.Annotation]], now: datetime) -> None:
    """Insert the annotations and mirror them on their items with one statement per kind of write,
    whatever the number of labels (Core statements: the ORM's unit of work cost more CPU than the
    writes). The annotation objects get their ids, the loaded items their new state."""
    requested = _mark_queries(session, project, sorted({item.id for item, _ in new}), now)
    for item, annotation in new:
        annotation.round_index = requested.get(item.id)
    connection = session.connection()
    rows = [
        {"project_id": a.project_id, "item_id": a.item_id, "label": a.label, "annotator": a.annotator,
         "round_index": a.round_index, "idempotency_key": a.idempotency_key, "meta": a.meta, "created_at": a.created_at}
        for _, a in new
    ]
    try:
        ids = connection.execute(_INSERT_ANNOTATIONS, rows).scalars().all()
    except IntegrityError as exc:
        # Two requests racing with one key for different items meet on the unique constraint.
        keys = [a.idempotency_key for _, a in new if a.idempotency_key is not None]
        if not keys:
            raise
        which = f"idempotency key {keys[0]!r} is" if len(keys) == 1 else f"one of the idempotency keys {keys!r} is"
        raise Conflict(f"{which} already used for another label") from exc
    for (_, annotation), annotation_id in zip(new, ids):
        annotation.id = annotation_id
    count_new_labels(session, len(new))
    # The last label of an item in this request is its effective one.
    final = {item.id: (item, annotation) for item, annotation in new}
    connection.execute(
        _MIRROR_ON_ITEM,
        [{"b_item": item_id, "b_label": a.label, "b_now": now, "b_round": a.round_index}
         for item_id, (_, a) in sorted(final.items())],
    )
    for item, annotation in final.values():
        set_committed_value(item, "label", annotation.label)
        set_committed_value(item, "labeled_at", now)
        set_committed_value(item, "label_round", annotation.round_index)


def _replay_of_key(entry: LabelInput, previous: t.Annotation, item: t.Item | None) -> bool:
    same_item = item is not None and previous.item_id == item.id
    if not same_item or previous.label != entry.label:
        raise Conflict(
            f"idempotency key {entry.idempotency_key!r} was used for a different label "
            f"(item {previous.item_id}, label {previous.label!r})"
        )
    return True


def add_labels(
    session: Session,
    *,
    project: t.Project,
    annotator: str,
    entries: list[LabelInput],
    bulk: bool = False,
) -> list[LabelOutcome]:
    """Validate and write ``entries``, all or nothing, then run the round lifecycle.

    A single label (``bulk=False``) with an unknown item is a 404; otherwise every bad entry is
    listed in one 422 and nothing is written.
    """
    _check_status(project)
    write_lock(session)
    by_id, by_external = _load_items(session, project.id, entries)
    previous_by_key = _by_key(session, project.id, [e.idempotency_key for e in entries if e.idempotency_key])

    problems: list[_Problem] = []
    plan: list[tuple[LabelInput, t.Item, t.Annotation | None]] = []
    for index, entry in enumerate(entries):
        item = _find(entry, by_id, by_external)
        previous = previous_by_key.get(entry.idempotency_key) if entry.idempotency_key else None
        if previous is not None and _replay_of_key(entry, previous, item):
            plan.append((entry, item, previous))  # type: ignore[arg-type]
            continue
        problem = _problem(index, entry, item, project)
        if problem is not None:
            problems.append(problem)
        else:
            plan.append((entry, item, None))  # type: ignore[arg-type]
    if problems:
        if not bulk and problems[0].code == "not_found":
            raise NotFound(problems[0].message)
        message = problems[0].message if not bulk else f"{len(problems)} of {len(entries)} labels are invalid"
        raise Unprocessable(message, details=[p.as_detail() for p in problems])

    now = utcnow()
    outcomes: list[LabelOutcome] = []
    new: list[tuple[t.Item, t.Annotation]] = []
    written_keys: dict[str | None, t.Annotation] = {}
    # An item's latest annotation is this request's, when it wrote one, or the database's.
    written: dict[int, t.Annotation] = {}
    for entry, item, previous in plan:
        if previous is None and entry.idempotency_key in written_keys:  # the same key twice in one request
            previous = written_keys[entry.idempotency_key]
            _replay_of_key(entry, previous, item)
        label = written[item.id].label if item.id in written else item.label
        if previous is None and label == entry.label:
            latest = written[item.id] if item.id in written else _latest_annotation(session, item.id)
            if latest is not None and latest.annotator == annotator and latest.label == entry.label:
                previous = latest
        if previous is not None:
            outcomes.append(LabelOutcome(annotation=previous, item=item, replayed=True))
            continue
        annotation = t.Annotation(
            project_id=project.id,
            item_id=item.id,
            label=entry.label,
            annotator=annotator,
            idempotency_key=entry.idempotency_key,
            meta=entry.meta or {},
            created_at=now,
        )
        written[item.id] = annotation
        if entry.idempotency_key is not None:
            written_keys[entry.idempotency_key] = annotation
        new.append((item, annotation))
        outcomes.append(LabelOutcome(annotation=annotation, item=item, replayed=False))
    if new:
        _write(session, project, new, now)
    touched_round = any(annotation.round_index == project.current_round for _, annotation in new)
    if touched_round and project.status == t.PROJECT_ACTIVE:
        after_labels(session, project_id=project.id, round_index=project.current_round)
    return outcomes


def _project_item(session: Session, project: t.Project, item_id: int) -> t.Item:
    item = session.get(t.Item, item_id)
    if item is None or item.project_id != project.id:
        raise NotFound(f"item {item_id} does not exist in project {project.id}")
    return item


def retract_label(session: Session, *, project: t.Project, item_id: int, annotator: str) -> t.Annotation:
    """Admin: withdraw the item's label. History keeps a retraction row; the current round's query
    of the item, if any, is open again."""
    _check_status(project)
    write_lock(session)
    item = _project_item(session, project, item_id)
    if not is_sqlite(session):
        # Serialize with concurrent labels of the same item, then decide on its latest state.
        session.execute(select(t.Item.id).where(t.Item.id == item.id).with_for_update(key_share=True))
        session.refresh(item)
    if item.split != t.SPLIT_POOL:
        raise Unprocessable(f"item {item_id} is in the {item.split} split; its ground truth cannot be retracted")
    if item.label is None:
        raise Conflict(f"item {item_id} has no label to retract")
    annotation = t.Annotation(
        project_id=project.id, item_id=item.id, label=None, annotator=annotator, round_index=item.label_round, meta={}
    )
    session.add(annotation)
    item.label = None
    item.labeled_at = None
    item.label_round = None
    if project.current_round is not None:
        session.execute(
            update(t.Query)
            .where(
                t.Query.project_id == project.id,
                t.Query.round_index == project.current_round,
                t.Query.item_id == item.id,
            )
            .values(labeled_at=None, leased_to=None, lease_expires_at=None),
            execution_options={"synchronize_session": False},
        )
    session.flush()
    return annotation


def label_history(session: Session, *, project: t.Project, item_id: int) -> list[t.Annotation]:
    """Every annotation of the item, newest first (retractions have label None)."""
    item = _project_item(session, project, item_id)
    return list(
        session.scalars(
            select(t.Annotation)
            .where(t.Annotation.item_id == item.id)
            .order_by(t.Annotation.created_at.desc(), t.Annotation.id.desc())
        )
    )

"""Leasing the current round's queries to annotators (DESIGN.md section 5, step 3).

A query is free when it is unlabeled and its lease is absent or expired. ``lease_next`` first
renews what the caller already holds (so a retried call returns the same items), then leases the
lowest-ranked free queries. Two annotators never hold the same item while a lease is live:
PostgreSQL picks rows with ``FOR UPDATE SKIP LOCKED`` (concurrent callers take different rows
instead of waiting on each other), SQLite serializes writers on its write lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.db import tables as t
from app.db.base import utcnow
from app.services.rounds import is_sqlite, write_lock

STATUS_OK = "ok"
STATUS_SELECTING = "selecting"
STATUS_ALL_LEASED = "all_leased"
STATUS_TRAINING_TARGET = "training_target"
STATUS_COMPLETED = "completed"
STATUS_NOT_STARTED = "not_started"
STATUS_FAILED = "failed"

# Statuses after which asking again is pointless: no Retry-After.
FINAL_STATUSES = (STATUS_COMPLETED, STATUS_FAILED)

_PROJECT_REASONS = {
    t.PROJECT_DRAFT: (STATUS_NOT_STARTED, "the project has not been started"),
    t.PROJECT_TRAINING_TARGET: (STATUS_TRAINING_TARGET, "the labeling budget is reached; the target model is training"),
    t.PROJECT_COMPLETED: (STATUS_COMPLETED, "the project is complete; nothing is left to label"),
    t.PROJECT_FAILED: (STATUS_FAILED, "the project failed; an admin must look at its jobs"),
}


@dataclass(frozen=True)
class LeasedQuery:
    item_id: int
    external_id: str
    rank: int
    score: float | None
    lease_expires_at: datetime
    content_url: str
    text: str | None


@dataclass
class LeaseBatch:
    round: int | None
    status: str
    reason: str | None = None
    items: list[LeasedQuery] = field(default_factory=list)


def content_url(project_id: int, item_id: int) -> str:
    return f"/projects/{project_id}/items/{item_id}/content"


def _lease(session: Session, *, conditions: list, limit: int, annotator: str, expires: datetime) -> list[tuple]:
    """Lease up to ``limit`` rows matching ``conditions``, lowest rank first, in one statement."""
    candidates = select(t.Query.id).where(*conditions).order_by(t.Query.rank).limit(limit)
    if not is_sqlite(session):
        candidates = candidates.with_for_update(skip_locked=True)
    stmt = (
        update(t.Query)
        .where(t.Query.id.in_(candidates.scalar_subquery()))
        .values(leased_to=annotator, lease_expires_at=expires)
        .returning(t.Query.item_id, t.Query.rank, t.Query.score)
    )
    return list(session.execute(stmt, execution_options={"synchronize_session": False}))


def lease_next(
    session: Session,
    *,
    project: t.Project,
    annotator: str,
    limit: int,
    lease_seconds: int,
    now: datetime | None = None,
) -> LeaseBatch:
    """Lease up to ``limit`` queries of the current round to ``annotator`` for ``lease_seconds``."""
    if project.status != t.PROJECT_ACTIVE:
        status, reason = _PROJECT_REASONS.get(project.status, (STATUS_FAILED, f"project is {project.status}"))
        return LeaseBatch(round=project.current_round, status=status, reason=reason)
    index = project.current_round
    # Only the status is needed on this hot path; loading the whole round row (JSON metrics) is not.
    status = None if index is None else session.scalar(
        select(t.Round.status).where(t.Round.project_id == project.id, t.Round.index == index)
    )
    if status != t.ROUND_OPEN:
        return LeaseBatch(
            round=project.current_round,
            status=STATUS_SELECTING,
            reason=f"round {project.current_round} is being selected; ask again shortly",
        )
    write_lock(session)
    now = now or utcnow()
    expires = now + timedelta(seconds=lease_seconds)
    in_round = [
        t.Query.project_id == project.id,
        t.Query.round_index == index,
        t.Query.labeled_at.is_(None),
    ]
    # Renew what the caller already holds first: a retried call gets the same items back.
    rows = _lease(
        session,
        conditions=[*in_round, t.Query.leased_to == annotator, t.Query.lease_expires_at > now],
        limit=limit,
        annotator=annotator,
        expires=expires,
    )
    if len(rows) < limit:
        free = or_(t.Query.lease_expires_at.is_(None), t.Query.lease_expires_at <= now)
        rows += _lease(
            session, conditions=[*in_round, free], limit=limit - len(rows), annotator=annotator, expires=expires
        )
    if not rows:
        return _nothing_free(session, project.id, index)
    items = {
        item_id: (external_id, text)
        for item_id, external_id, text in session.execute(
            select(t.Item.id, t.Item.external_id, t.Item.text).where(t.Item.id.in_([row[0] for row in rows]))
        )
    }
    leased = [
        LeasedQuery(
            item_id=item_id,
            external_id=items[item_id][0],
            rank=rank,
            score=score,
            lease_expires_at=expires,
            content_url=content_url(project.id, item_id),
            text=items[item_id][1],
        )
        for item_id, rank, score in sorted(rows, key=lambda row: row[1])
    ]
    return LeaseBatch(round=index, status=STATUS_OK, items=leased)


def _nothing_free(session: Session, project_id: int, index: int) -> LeaseBatch:
    unlabeled = session.scalar(
        select(t.Query.id)
        .where(
            t.Query.project_id == project_id,
            t.Query.round_index == index,
            t.Query.labeled_at.is_(None),
        )
        .limit(1)
    )
    if unlabeled is not None:
        return LeaseBatch(
            round=index,
            status=STATUS_ALL_LEASED,
            reason=f"every unlabeled item of round {index} is leased to another annotator",
        )
    # Everything is labeled: the round is completing; the next one is being selected.
    return LeaseBatch(round=index, status=STATUS_SELECTING, reason=f"round {index} is complete")


def release(session: Session, *, project: t.Project, annotator: str, item_ids: list[int]) -> list[int]:
    """Give back the caller's live leases on ``item_ids`` in the current round; returns those released."""
    if project.current_round is None or not item_ids:
        return []
    write_lock(session)
    stmt = (
        update(t.Query)
        .where(
            t.Query.project_id == project.id,
            t.Query.round_index == project.current_round,
            t.Query.item_id.in_(sorted(set(item_ids))),
            t.Query.leased_to == annotator,
            t.Query.labeled_at.is_(None),
        )
        .values(leased_to=None, lease_expires_at=None)
        .returning(t.Query.item_id)
    )
    return sorted(session.scalars(stmt, execution_options={"synchronize_session": False}))

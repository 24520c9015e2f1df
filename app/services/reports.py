"""Read views of what workers record: rounds (sizes, progress, timings, metrics) and jobs."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db import tables as t
from app.errors import NotFound
from app.schemas.rounds import RoundRead, RoundTimings


def _labeled_per_round(session: Session, round_ids: list[int]) -> dict[int, int]:
    if not round_ids:
        return {}
    rows = session.execute(
        select(t.Query.round_id, func.count())
        .where(t.Query.round_id.in_(round_ids), t.Query.labeled_at.is_not(None))
        .group_by(t.Query.round_id)
    )
    return {round_id: count for round_id, count in rows}


def _read(row: t.Round, labeled: int) -> RoundRead:
    return RoundRead(
        index=row.index,
        status=row.status,
        strategy=row.strategy,
        selector=row.selector,
        size=row.size,
        labeled_at_start=row.labeled_at_start,
        labeled=labeled,
        job_id=row.job_id,
        timings=RoundTimings(train_s=row.train_s, inference_s=row.inference_s, ranking_s=row.ranking_s, total_s=row.total_s),
        metrics=row.metrics or {},
        created_at=row.created_at,
        opened_at=row.opened_at,
        finished_at=row.finished_at,
    )


def list_rounds(session: Session, *, project_id: int) -> list[RoundRead]:
    rows = list(session.scalars(select(t.Round).where(t.Round.project_id == project_id).order_by(t.Round.index)))
    labeled = _labeled_per_round(session, [r.id for r in rows])
    return [_read(r, labeled.get(r.id, 0)) for r in rows]


def get_round(session: Session, *, project_id: int, index: int) -> RoundRead:
    row = session.scalar(select(t.Round).where(t.Round.project_id == project_id, t.Round.index == index))
    if row is None:
        raise NotFound(f"project {project_id} has no round {index}")
    return _read(row, _labeled_per_round(session, [row.id]).get(row.id, 0))


def list_jobs(
    session: Session,
    *,
    project_id: int,
    status: str | None = None,
    type: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[t.Job]:
    """A project's jobs, newest first."""
    query = select(t.Job).where(t.Job.project_id == project_id)
    if status is not None:
        query = query.where(t.Job.status == status)
    if type is not None:
        query = query.where(t.Job.type == type)
    return list(session.scalars(query.order_by(t.Job.id.desc()).limit(limit).offset(offset)))

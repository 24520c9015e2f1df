"""The active-learning round lifecycle (DESIGN.md section 5).

start -> round 0 (seeded random sample, open at once) -> labels -> round complete -> either the
next round (``selecting`` until a ``select_round`` job publishes it with :func:`open_round`) or,
once the budget is reached, ``training_target`` with one ``train_target`` job.

Concurrency: every decision that creates a round or a job is taken while holding the project row
(``FOR NO KEY UPDATE`` on PostgreSQL, the database write lock on SQLite), re-reading the state under
that lock; the round's unique (project, index) and the job's dedup key back this up, so two
annotators finishing a round at the same moment produce one next round and one job.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.orm import Session

from app.db import tables as t
from app.db.base import utcnow
from app.errors import Conflict, NotFound, Unprocessable
from app.services.jobs import create_job, request_cancel
from app.services.schedule import budget_count, round_size

log = logging.getLogger(__name__)

RANDOM_STRATEGY = "random"
TIMING_KEYS = ("train_s", "inference_s", "ranking_s", "total_s")
ID_CHUNK = 10_000


# -- locking helpers (shared by the queries and labels services) ---------------------------------


def is_sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def write_lock(session: Session) -> None:
    """On SQLite, take the database write lock now.

    pysqlite opens a deferred transaction at the first write, so reads done before it may be stale
    by the time the write lock is granted, and two such transactions fail to upgrade instead of
    waiting. ``BEGIN IMMEDIATE`` before the first read that decides a write makes writers queue on
    the busy timeout and see the latest committed state. PostgreSQL uses row locks; nothing to do.
    """
    if not is_sqlite(session):
        return
    connection = session.connection()
    raw = connection.connection.driver_connection
    if not raw.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def lock_project(session: Session, project_id: int) -> t.Project:
    """The project row, re-read under a lock that serializes lifecycle decisions for this project.

    ``FOR NO KEY UPDATE`` rather than ``FOR UPDATE``: inserting rows that reference the project
    (annotations, queries) takes a key-share lock on it, which must not wait on this one.
    """
    write_lock(session)
    stmt = select(t.Project).where(t.Project.id == project_id).execution_options(populate_existing=True)
    if not is_sqlite(session):
        stmt = stmt.with_for_update(key_share=True)
    project = session.scalar(stmt)
    if project is None:
        raise NotFound(f"project {project_id} does not exist")
    return project


# -- reads ---------------------------------------------------------------------------------------


def pool_counts(session: Session, *, project_id: int) -> tuple[int, int]:
    """(pool size, labeled pool items). The labeled count is what the budget is measured in."""
    row = session.execute(
        select(func.count(), func.count(t.Item.label)).where(
            t.Item.project_id == project_id, t.Item.split == t.SPLIT_POOL
        )
    ).one()
    return int(row[0]), int(row[1])


def get_round(session: Session, *, project_id: int, index: int | None) -> t.Round | None:
    if index is None:
        return None
    return session.scalar(select(t.Round).where(t.Round.project_id == project_id, t.Round.index == index))


def current_round(session: Session, *, project: t.Project) -> t.Round | None:
    return get_round(session, project_id=project.id, index=project.current_round)


def _has_unlabeled_queries(session: Session, round_: t.Round) -> bool:
    stmt = select(t.Query.id).where(
        t.Query.project_id == round_.project_id,
        t.Query.round_index == round_.index,
        t.Query.labeled_at.is_(None),
    )
    return session.scalar(stmt.limit(1)) is not None


def _insert_queries(session: Session, round_: t.Round, picks: list[tuple[int, float | None]], labeled_at: dict[int, Any]) -> None:
    if not picks:
        return
    rows = [
        {
            "project_id": round_.project_id,
            "round_id": round_.id,
            "round_index": round_.index,
            "item_id": item_id,
            "rank": rank,
            "score": score,
            "labeled_at": labeled_at.get(item_id),
        }
        for rank, (item_id, score) in enumerate(picks)
    ]
    session.execute(insert(t.Query), rows)


# -- start ---------------------------------------------------------------------------------------


def draw_initial_sample(item_ids: list[int], *, size: int, seed: int) -> list[int]:
    """Round 0: a seeded uniform sample of ``size`` ids, in draw order.

    The ids are sorted first so the sample depends only on the pool and the seed, never on the
    order the database returned them in.
    """
    ordered = sorted(item_ids)
    permutation = np.random.default_rng(seed).permutation(len(ordered))
    return [ordered[i] for i in permutation[:size]]


def start_project(session: Session, *, project_id: int) -> t.Round:
    """Draw round 0 and open it; the project becomes active. A second start is a 409."""
    project = lock_project(session, project_id)
    if project.status != t.PROJECT_DRAFT:
        raise Conflict(f"project {project_id} is already started (status {project.status})")
    pool_size, labeled = pool_counts(session, project_id=project_id)
    if pool_size < 2:
        raise Conflict(f"project {project_id} has {pool_size} pool item(s); import at least 2 before starting")
    unlabeled_ids = list(
        session.scalars(
            select(t.Item.id).where(
                t.Item.project_id == project_id, t.Item.split == t.SPLIT_POOL, t.Item.label.is_(None)
            )
        )
    )
    size = min(round_size(project.schedule, round_index=0, pool_size=pool_size, labeled=labeled), len(unlabeled_ids))
    if size < 1:
        raise Conflict(f"project {project_id} has no unlabeled pool item left within its budget")
    picks = draw_initial_sample(unlabeled_ids, size=size, seed=project.seed)
    now = utcnow()
    round0 = t.Round(
        project_id=project_id,
        index=0,
        status=t.ROUND_OPEN,
        strategy=RANDOM_STRATEGY,
        size=size,
        labeled_at_start=labeled,
        opened_at=now,
        metrics={},
    )
    session.add(round0)
    session.flush()
    _insert_queries(session, round0, [(item_id, None) for item_id in picks], {})
    project.status = t.PROJECT_ACTIVE
    project.current_round = 0
    session.flush()
    log.info("project %s started: round 0 with %s of %s pool items", project_id, size, pool_size)
    return round0


# -- completion ----------------------------------------------------------------------------------


def _queue_train_target(session: Session, project: t.Project) -> t.Job:
    project.status = t.PROJECT_TRAINING_TARGET
    job = create_job(session, project_id=project.id, type=t.JOB_TRAIN_TARGET, dedup_key=f"train_target:{project.id}")
    log.info("project %s reached its budget: train_target job %s", project.id, job.id)
    return job


def _close_round(round_: t.Round, now: datetime) -> None:
    # Unlabeled leftovers of an early advance keep their (now meaningless) leases: only the current
    # round is ever handed out, and touching those rows here could wait on a labeling transaction
    # that itself waits for this project lock.
    round_.status = t.ROUND_COMPLETED
    round_.finished_at = now


def _finish_round(session: Session, project: t.Project, round_: t.Round) -> t.Job:
    """Complete ``round_`` and queue what comes next: the next round's selection or the target."""
    now = utcnow()
    _close_round(round_, now)
    pool_size, labeled = pool_counts(session, project_id=project.id)
    next_index = round_.index + 1
    size = round_size(project.schedule, round_index=next_index, pool_size=pool_size, labeled=labeled)
    if labeled >= budget_count(project.schedule, pool_size) or labeled >= pool_size or size < 1:
        return _queue_train_target(session, project)
    next_round = t.Round(
        project_id=project.id,
        index=next_index,
        status=t.ROUND_SELECTING,
        strategy=project.strategy,
        size=size,
        labeled_at_start=labeled,
        metrics={},
    )
    session.add(next_round)
    session.flush()
    job = create_job(
        session,
        project_id=project.id,
        type=t.JOB_SELECT_ROUND,
        params={"round_index": next_index},
        dedup_key=f"select_round:{project.id}:{next_index}",
    )
    next_round.job_id = job.id
    project.current_round = next_index
    session.flush()
    log.info("project %s: round %s completed, round %s selecting (job %s)", project.id, round_.index, next_index, job.id)
    return job


def _round_may_be_complete(session: Session, *, project_id: int, round_index: int) -> bool:
    """Cheap pre-check, without the project lock, of whether the round might be fully labeled.

    On PostgreSQL an unlabeled query that no concurrent transaction is writing proves the round
    is not complete, so most labels never touch the project lock. Rows being labeled right now
    are locked by their writers and skipped (``FOR SHARE SKIP LOCKED``): if only such rows remain,
    the caller takes the lock and decides on committed data. On SQLite the write lock is already
    held, so the plain answer is exact.
    """
    # Runs after every label: the statements are built once (building one per call cost more CPU
    # than running it), on the Core table.
    stmt = _UNLABELED_PROBE[not is_sqlite(session)]
    session.flush()  # the probe runs on the connection: it must see this transaction's labels
    return session.connection().scalar(stmt, {"b_project": project_id, "b_round": round_index}) is None


def _unlabeled_probe(postgres: bool):
    q = t.Query.__table__
    # Highest rank first: those rows are the last to be leased, so the probe rarely meets a row
    # that an annotator is about to label.
    stmt = (
        select(q.c.id)
        .where(q.c.project_id == bindparam("b_project"), q.c.round_index == bindparam("b_round"), q.c.labeled_at.is_(None))
        .order_by(q.c.rank.desc())
        .limit(1)
    )
    return stmt.with_for_update(read=True, skip_locked=True) if postgres else stmt


_UNLABELED_PROBE = {postgres: _unlabeled_probe(postgres) for postgres in (False, True)}


def after_labels(session: Session, *, project_id: int, round_index: int | None) -> t.Job | None:
    """Called in the labeling transaction after labels are written: completes the round when its
    last query is labeled and queues what follows. Returns the job queued, if any."""
    if round_index is None or not _round_may_be_complete(session, project_id=project_id, round_index=round_index):
        return None
    project = lock_project(session, project_id)
    if project.status != t.PROJECT_ACTIVE or project.current_round != round_index:
        return None  # someone else already moved the project on
    round_ = current_round(session, project=project)
    if round_ is None or round_.status != t.ROUND_OPEN or _has_unlabeled_queries(session, round_):
        return None
    return _finish_round(session, project, round_)


def advance_round(session: Session, *, project_id: int) -> tuple[t.Project, t.Job]:
    """Admin: complete the current open round now, labeled or not, and queue what comes next."""
    project = lock_project(session, project_id)
    if project.status != t.PROJECT_ACTIVE:
        raise Conflict(f"project {project_id} is {project.status}; only an active project has a round to advance")
    round_ = current_round(session, project=project)
    if round_ is None or round_.status != t.ROUND_OPEN:
        state = "missing" if round_ is None else round_.status
        raise Conflict(f"round {project.current_round} of project {project_id} is {state}, not open")
    job = _finish_round(session, project, round_)
    return project, job


def request_train_target(session: Session, *, project_id: int) -> tuple[t.Project, t.Job]:
    """Admin: stop selecting and queue the target training now (idempotent once queued)."""
    project = lock_project(session, project_id)
    if project.status == t.PROJECT_TRAINING_TARGET:
        return project, _queue_train_target(session, project)  # the dedup key returns the same job
    if project.status != t.PROJECT_ACTIVE:
        raise Conflict(f"project {project_id} is {project.status}; the target can be trained only once it is active")
    round_ = current_round(session, project=project)
    if round_ is not None and round_.status != t.ROUND_COMPLETED:
        if round_.status == t.ROUND_SELECTING and round_.job_id is not None:
            job = session.get(t.Job, round_.job_id)
            if job is not None and job.status not in t.JOB_FINISHED:
                request_cancel(session, job=job)
        # A completed round can no longer be published by its (possibly running) selection job.
        _close_round(round_, utcnow())
    if _count_labeled(session, project_id=project_id) == 0:
        raise Conflict(f"project {project_id} has no labeled pool item to train the target on")
    return project, _queue_train_target(session, project)


def _count_labeled(session: Session, *, project_id: int) -> int:
    return pool_counts(session, project_id=project_id)[1]


# -- publishing a computed round (called by the select_round worker) -----------------------------


def open_round(
    session: Session,
    *,
    project_id: int,
    round_index: int,
    picks: list[tuple[int, float | None]],
    timings: dict[str, Any],
    metrics: dict[str, Any],
    selector: dict[str, Any],
) -> t.Round:
    """Write a selected round's queries (rank = order of ``picks``) and open it, in the caller's
    transaction. Refuses (409) a round that is not ``selecting``, so a re-delivered job never
    writes the queries twice."""
    project = lock_project(session, project_id)
    round_ = get_round(session, project_id=project_id, index=round_index)
    if round_ is None:
        raise NotFound(f"round {round_index} of project {project_id} does not exist")
    if round_.status != t.ROUND_SELECTING:
        raise Conflict(f"round {round_index} of project {project_id} is {round_.status}, not selecting")
    if project.status != t.PROJECT_ACTIVE or project.current_round != round_index:
        raise Conflict(f"project {project_id} is {project.status} at round {project.current_round}")
    if not picks:
        raise Unprocessable(f"round {round_index} of project {project_id}: no items picked")
    item_ids = [int(item_id) for item_id, _ in picks]
    if len(set(item_ids)) != len(item_ids):
        raise Unprocessable("picks contain the same item more than once")
    found: dict[int, Any] = {}
    # In chunks: a round can hold more items than a statement may have parameters (SQLite 32766,
    # PostgreSQL 65535), e.g. 10% of an ImageNet-sized pool.
    for start in range(0, len(item_ids), ID_CHUNK):
        chunk = item_ids[start : start + ID_CHUNK]
        found.update(
            session.execute(
                select(t.Item.id, t.Item.labeled_at).where(
                    t.Item.project_id == project_id, t.Item.split == t.SPLIT_POOL, t.Item.id.in_(chunk)
                )
            ).all()
        )
    missing = [item_id for item_id in item_ids if item_id not in found]
    if missing:
        raise Unprocessable(
            f"{len(missing)} picked item(s) are not pool items of project {project_id}", details=missing[:100]
        )
    # An item labeled while the job ran (labels outside the batch are allowed) is not asked again.
    labeled_at = {item_id: at for item_id, at in found.items() if at is not None}
    _insert_queries(session, round_, [(int(item_id), score) for item_id, score in picks], labeled_at)
    round_.status = t.ROUND_OPEN
    round_.opened_at = utcnow()
    round_.size = len(picks)
    round_.selector = dict(selector)
    round_.metrics = dict(metrics)
    for key in TIMING_KEYS:
        if timings.get(key) is not None:
            setattr(round_, key, float(timings[key]))
    session.flush()
    if len(labeled_at) == len(picks):
        _finish_round(session, project, round_)
    log.info("project %s: round %s opened with %s queries", project_id, round_index, len(picks))
    return round_

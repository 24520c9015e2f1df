"""Prediction scores that make Label Studio's "Uncertainty sampling" serve the service's selection.

Label Studio serves, among the tasks whose prediction carries the project's current
``model_version``, the one with the lowest ``score`` first. A score is therefore an encoding of the
service's order, in bands that never overlap:

- ``[0, 0.3)``: items of the published round's batch (its queries), in rank order;
- ``[0.3, 0.7]``: other items the round's proxy scored, least confident first (``0.3 + 0.4·max p``);
- ``(0.7, 1)``: items no proxy has scored (before the first proxy, or imported since), in a seeded
  random order: before any proxy exists this continues round 0's random draw;
- ``1``: items that already have a label in the service (or are not pool items).

The published round is the latest one whose batch was written; the model version names it, so it
changes exactly when a retrained proxy publishes a new batch, and every score of one version is
computed from the same state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import tables as t
from app.services.label_studio.predictions import predictions_for

QUERY_BAND = (0.0, 0.3)
PROXY_BAND = (0.3, 0.7)
UNSCORED_BAND = (0.71, 0.99)
LAST = 1.0
TIE_EPSILON = 1e-9  # orders exact confidence ties by item id (the selection's tie rule), nothing else
MAX_ID = 2**31
CHUNK = 5_000


@dataclass(frozen=True)
class ItemScore:
    score: float
    class_index: int | None  # the proxy's predicted class, when a proxy scored the item


def seeded_uniform(seed: int, item_id: int) -> float:
    """A number in [0, 1) fixed by (seed, item): a random order that never changes with the pool."""
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def band_score(
    *, item_id: int, seed: int, labeled: bool, rank: int | None, round_size: int, confidence: float | None
) -> float:
    """The score of one item (see the module docstring); lower is served first."""
    if labeled:
        return LAST
    if rank is not None:
        low, high = QUERY_BAND
        return low + (high - low) * rank / max(round_size, rank + 1)
    if confidence is not None:
        low, high = PROXY_BAND
        return low + (high - low) * min(max(confidence, 0.0), 1.0) + TIE_EPSILON * item_id / MAX_ID
    low, high = UNSCORED_BAND
    return low + (high - low) * seeded_uniform(seed, item_id)


def published_round(session: Session, *, project_id: int) -> t.Round | None:
    """The latest round whose batch has been written (opened), or None before the project starts."""
    return session.scalar(
        select(t.Round)
        .where(t.Round.project_id == project_id, t.Round.opened_at.is_not(None))
        .order_by(t.Round.index.desc())
        .limit(1)
    )


def model_version(project: t.Project, round_index: int | None) -> str:
    """``svp-<project>.<created>-round-<k>``: new for every published round, never reused by another
    project (the creation time guards against an id reused after a deletion)."""
    base = f"svp-{project.id}.{int(project.created_at.timestamp())}"
    return f"{base}-draft" if round_index is None else f"{base}-round-{round_index}"


def current_model_version(session: Session, *, project: t.Project) -> str:
    round_ = published_round(session, project_id=project.id)
    return model_version(project, None if round_ is None else round_.index)


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def score_items(session: Session, *, project: t.Project, item_ids: Iterable[int]) -> tuple[str, dict[int, ItemScore]]:
    """(model version, item id -> score and predicted class), read in one consistent pass."""
    ids = sorted(set(item_ids))
    round_ = published_round(session, project_id=project.id)
    version = model_version(project, None if round_ is None else round_.index)
    labeled: dict[int, bool] = {}
    ranks: dict[int, int] = {}
    for chunk in _chunks(ids):
        for item_id, label, split in session.execute(
            select(t.Item.id, t.Item.label, t.Item.split).where(t.Item.project_id == project.id, t.Item.id.in_(chunk))
        ):
            labeled[item_id] = label is not None or split != t.SPLIT_POOL
        if round_ is not None:
            ranks.update(
                session.execute(
                    select(t.Query.item_id, t.Query.rank).where(
                        t.Query.project_id == project.id,
                        t.Query.round_index == round_.index,
                        t.Query.item_id.in_(chunk),
                    )
                ).all()
            )
    predicted = {} if round_ is None else predictions_for(
        session, project_id=project.id, round_index=round_.index, item_ids=ids
    )
    round_size = 0 if round_ is None else round_.size
    scores: dict[int, ItemScore] = {}
    for item_id in ids:
        class_index, confidence = predicted.get(item_id, (None, None))
        score = band_score(
            item_id=item_id,
            seed=project.seed,
            labeled=labeled.get(item_id, True),
            rank=ranks.get(item_id),
            round_size=round_size,
            confidence=confidence,
        )
        scores[item_id] = ItemScore(score=score, class_index=class_index)
    return version, scores

"""The proxy's per-item predictions (class and confidence), written by the ``select_round`` job and
read back to answer Label Studio's ``/predict``.

Only the latest selecting round's rows are kept: the job replaces the previous round's in the
transaction that publishes its round, so readers see either the old round with its predictions or
the new one with its own, never a mix, and storage stays at one row per pool item.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from app.db import tables as t

CHUNK = 5_000


def store_predictions(
    session: Session,
    *,
    project_id: int,
    round_index: int,
    item_ids: Sequence[int],
    class_indices: Sequence[int],
    confidences: Sequence[float],
) -> int:
    """Replace the project's predictions with this round's; returns the number of rows written."""
    if not (len(item_ids) == len(class_indices) == len(confidences)):
        raise ValueError("item_ids, class_indices and confidences must have the same length")
    session.execute(
        delete(t.Prediction).where(t.Prediction.project_id == project_id),
        execution_options={"synchronize_session": False},
    )
    rows = []
    for item_id, class_index, confidence in zip(item_ids, class_indices, confidences):
        confidence = float(confidence)
        if not math.isfinite(confidence):
            confidence = 0.0  # a diverged proxy knows nothing about the item: least confident
        rows.append(
            {
                "project_id": project_id,
                "round_index": round_index,
                "item_id": int(item_id),
                "class_index": int(class_index),
                "confidence": min(max(confidence, 0.0), 1.0),
            }
        )
    for start in range(0, len(rows), CHUNK):
        session.execute(insert(t.Prediction), rows[start : start + CHUNK])
    return len(rows)


def predictions_for(
    session: Session, *, project_id: int, round_index: int, item_ids: Iterable[int]
) -> dict[int, tuple[int, float]]:
    """item id -> (class index, confidence) for the items the round's proxy scored."""
    ids = sorted(set(item_ids))
    found: dict[int, tuple[int, float]] = {}
    for start in range(0, len(ids), CHUNK):
        rows = session.execute(
            select(t.Prediction.item_id, t.Prediction.class_index, t.Prediction.confidence).where(
                t.Prediction.project_id == project_id,
                t.Prediction.round_index == round_index,
                t.Prediction.item_id.in_(ids[start : start + CHUNK]),
            )
        )
        found.update({item_id: (class_index, confidence) for item_id, class_index, confidence in rows})
    return found

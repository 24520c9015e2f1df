"""Uncertainty scores over class probabilities and a deterministic top-k.

Every score is a pure function of an ``(n, classes)`` probability array (rows are softmax outputs
of a model in eval mode on un-augmented inputs). Ranking is done by :func:`top_k`, which breaks
ties by the lower index so that a run is reproducible bit for bit.
"""

from __future__ import annotations

import numpy as np

__all__ = ["entropy", "least_confidence", "margin", "top_k"]


def _as_probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"probs must be a 2-D (n, classes) array, got shape {p.shape}")
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    if p.size and not np.isfinite(p).all():
        raise ValueError("probs contain NaN or infinite values")
    if p.size and (p < 0).any():
        raise ValueError("probs contain negative values")
    return p


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """``1 - max_y p(y|x)`` per row; the most uncertain items have the highest score."""
    p = _as_probs(probs)
    return 1.0 - p.max(axis=1)


def margin(probs: np.ndarray) -> np.ndarray:
    """``p1 - p2`` (best minus second best) per row; the most uncertain have the lowest score."""
    p = _as_probs(probs)
    if p.shape[1] < 2:
        raise ValueError("margin needs at least two classes")
    # partition puts the two largest values in the last two columns, in order.
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def entropy(probs: np.ndarray) -> np.ndarray:
    """``-sum_y p log p`` per row (natural log) with ``0 log 0 = 0``.

    Exact zeros are masked before the log rather than clipped, so a row like ``[1, 0]`` scores
    exactly 0 and no score is ever NaN (NaN would sort unpredictably in a ranking).
    """
    p = _as_probs(probs)
    positive = p > 0
    logs = np.log(np.where(positive, p, 1.0))
    terms = np.where(positive, p * logs, 0.0)
    # -0.0 from an all-certain row reads oddly in reports; adding 0.0 normalises it to +0.0.
    return -terms.sum(axis=1) + 0.0


def top_k(
    scores: np.ndarray,
    k: int,
    *,
    descending: bool = True,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the ``k`` best scores, best first; ties go to the lower index.

    ``mask`` (boolean, same length) restricts the choice to the ``True`` positions, e.g. the
    unlabeled items. ``+inf``/``-inf`` are ordinary extreme values; NaN is rejected because it has
    no place in an order.
    """
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if np.issubdtype(s.dtype, np.floating) and np.isnan(s).any():
        raise ValueError("scores contain NaN")
    if mask is None:
        cand = np.arange(s.shape[0])
    else:
        m = np.asarray(mask, dtype=bool)
        if m.shape != s.shape:
            raise ValueError(f"mask shape {m.shape} does not match scores shape {s.shape}")
        cand = np.flatnonzero(m)
    k = int(k)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k > cand.shape[0]:
        raise ValueError(f"k={k} exceeds the {cand.shape[0]} selectable items")
    key = s[cand]
    if descending:
        # Negating keeps the sort ascending so a stable sort leaves equal keys in index order;
        # integer scores are widened first so that negation cannot overflow.
        key = -(key.astype(np.float64) if not np.issubdtype(key.dtype, np.floating) else key)
    order = np.argsort(key, kind="stable")[:k]
    return cand[order]

"""Ranking by forgetting events (Toneva et al. 2019): most forgotten first.

Counts come from the training loop: the number of correct -> incorrect transitions per example,
``+inf`` for examples that were never predicted correctly (they rank first).
"""

from __future__ import annotations

import numpy as np

from worker.selection.uncertainty import top_k

__all__ = ["rank_all", "rank_by_forgetting"]


def _as_counts(counts: np.ndarray) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1:
        raise ValueError(f"counts must be 1-D, got shape {c.shape}")
    if np.isnan(c).any():
        raise ValueError("forgetting counts contain NaN")
    if (c < 0).any():
        raise ValueError("forgetting counts must be >= 0 (or +inf for never learned)")
    return c


def rank_by_forgetting(counts: np.ndarray, k: int, *, mask: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` most forgotten examples: ``+inf`` first, then descending counts,
    ties by the lower index."""
    return top_k(_as_counts(counts), k, descending=True, mask=mask)


def rank_all(counts: np.ndarray, *, mask: np.ndarray | None = None) -> np.ndarray:
    """The full ranking (every selectable index), in the order of :func:`rank_by_forgetting`."""
    c = _as_counts(counts)
    total = c.shape[0] if mask is None else int(np.count_nonzero(mask))
    return top_k(c, total, descending=True, mask=mask)

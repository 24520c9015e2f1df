"""Spearman rank correlation: the paper's diagnostic of how well a proxy's ranking matches the
target's (or another proxy's)."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import spearmanr

__all__ = ["ranks_from_order", "spearman", "spearman_orders"]


def spearman(scores_a: np.ndarray, scores_b: np.ndarray) -> float:
    """Spearman's rho between two score vectors over the same items (ties get average ranks).

    Returns NaN when either side is constant: a correlation is undefined there, and a made-up 0
    would read as a real measurement.
    """
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"need two 1-D arrays of one length, got shapes {a.shape} and {b.shape}")
    if a.shape[0] < 2:
        raise ValueError("spearman needs at least two items")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("scores contain NaN")
    if np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(spearmanr(a, b).statistic)


def ranks_from_order(order: np.ndarray, n: int | None = None) -> np.ndarray:
    """Position of each item in ``order`` (a permutation of ``range(n)``, best first)."""
    o = np.asarray(order, dtype=np.int64)
    size = o.shape[0] if n is None else int(n)
    if o.ndim != 1 or o.shape[0] != size or not np.array_equal(np.sort(o), np.arange(size)):
        raise ValueError("order must be a permutation of range(n)")
    ranks = np.empty(size, dtype=np.int64)
    ranks[o] = np.arange(size)
    return ranks


def spearman_orders(order_a: np.ndarray, order_b: np.ndarray) -> float:
    """Spearman's rho between two full rankings of the same items, each given as the item indices
    best first (e.g. two forgetting rankings, or two k-centers pick orders)."""
    a = np.asarray(order_a)
    b = np.asarray(order_b)
    if a.shape != b.shape:
        raise ValueError(f"orders differ in length: {a.shape} vs {b.shape}")
    return spearman(ranks_from_order(a), ranks_from_order(b))

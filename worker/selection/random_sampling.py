"""Seeded uniform random selection (the paper's round 0 and the random baseline)."""

from __future__ import annotations

import numpy as np

__all__ = ["random_sample"]


def random_sample(n: int, k: int, *, seed: int, mask: np.ndarray | None = None) -> np.ndarray:
    """``k`` distinct indices drawn uniformly from ``range(n)`` (or from the ``True`` positions
    of ``mask``), in draw order. The same ``seed`` always gives the same draw."""
    n = int(n)
    k = int(k)
    if n < 0 or k < 0:
        raise ValueError(f"n and k must be >= 0, got n={n}, k={k}")
    if mask is None:
        cand = np.arange(n)
    else:
        m = np.asarray(mask, dtype=bool)
        if m.shape != (n,):
            raise ValueError(f"mask shape {m.shape} does not match n={n}")
        cand = np.flatnonzero(m)
    if k > cand.shape[0]:
        raise ValueError(f"k={k} exceeds the {cand.shape[0]} selectable items")
    rng = np.random.default_rng(seed)
    return cand[rng.choice(cand.shape[0], size=k, replace=False)]

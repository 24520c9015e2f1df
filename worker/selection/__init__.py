"""Selection strategies as pure numpy functions (DESIGN.md section 6).

:func:`select` is the one entry point the pipelines use: it maps a strategy name to its scoring
and ranking, restricted to the unlabeled items. The modules below it can be used directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.selection.kcenter import k_centers
from worker.selection.random_sampling import random_sample
from worker.selection.uncertainty import entropy, least_confidence, margin, top_k

__all__ = ["STRATEGIES", "select"]

# name -> (score function, pick the highest scores first)
_UNCERTAINTY = {
    "least_confidence": (least_confidence, True),
    "entropy": (entropy, True),
    "margin": (margin, False),
}
STRATEGIES = (*_UNCERTAINTY, "kcenters", "random")


def select(
    strategy: str,
    *,
    k: int,
    probs: np.ndarray | None = None,
    features: np.ndarray | None = None,
    labeled_mask: np.ndarray | None = None,
    seed: int = 0,
    device: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose ``k`` unlabeled items; returns ``(indices, scores)``, best first.

    Indices are positions in the arrays given. ``labeled_mask`` (boolean, one entry per item)
    marks items that are already labeled: they are never picked, and for ``kcenters`` they are
    the initial centers. Scores are each strategy's own score of the pick:

    - ``least_confidence`` (``probs``): ``1 - max p``, highest first;
    - ``entropy`` (``probs``): ``-sum p log p``, highest first;
    - ``margin`` (``probs``): ``p1 - p2``, lowest first;
    - ``kcenters`` (``features``): distance to the nearest center at pick time (``inf`` for the
      first pick when nothing is labeled: that pick is a seeded random one);
    - ``random``: no natural score, NaN (store as NULL).

    Ties go to the lower index. ``device`` only matters for ``kcenters``. Raises ValueError for an
    unknown strategy, a missing or malformed input, or ``k`` above the number of unlabeled items.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    n = _item_count(probs, features, labeled_mask)
    labeled = np.zeros(n, dtype=bool) if labeled_mask is None else np.asarray(labeled_mask)
    if labeled.shape != (n,) or labeled.dtype != np.bool_:
        raise ValueError(f"labeled_mask must be a boolean array of shape ({n},)")
    unlabeled = ~labeled

    if strategy in _UNCERTAINTY:
        if probs is None:
            raise ValueError(f"strategy {strategy!r} needs probs")
        score_fn, highest_first = _UNCERTAINTY[strategy]
        scores = score_fn(probs)
        idx = top_k(scores, k, descending=highest_first, mask=unlabeled)
        return idx, scores[idx].astype(np.float64)
    if strategy == "kcenters":
        if features is None:
            raise ValueError("strategy 'kcenters' needs features")
        res = k_centers(
            features, k=k, initial=np.flatnonzero(labeled), candidates=unlabeled, seed=seed, device=device
        )
        return res.picks, res.pick_distances
    idx = random_sample(n, k, seed=seed, mask=unlabeled)
    return idx, np.full(idx.shape[0], np.nan)


def _item_count(*arrays: np.ndarray | None) -> int:
    sizes = {np.shape(a)[0] for a in arrays if a is not None and np.ndim(a) >= 1}
    if not sizes:
        raise ValueError("select needs probs, features or labeled_mask to know the number of items")
    if len(sizes) > 1:
        raise ValueError(f"probs, features and labeled_mask disagree on the number of items: {sorted(sizes)}")
    return sizes.pop()

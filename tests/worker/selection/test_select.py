"""select(): one entry point per strategy, restricted to unlabeled items."""

from __future__ import annotations

import numpy as np
import pytest

from worker.selection import select


@pytest.fixture
def probs():
    return np.array([[0.5, 0.5], [0.9, 0.1], [0.55, 0.45], [1.0, 0.0], [0.6, 0.4], [0.5, 0.5]])


def test_uncertainty_strategies_skip_labeled_and_return_pick_scores(probs):
    labeled = np.array([True, False, False, False, False, False])
    for strategy in ("least_confidence", "entropy", "margin"):
        idx, scores = select(strategy, k=3, probs=probs, labeled_mask=labeled)
        np.testing.assert_array_equal(idx, [5, 2, 4], err_msg=strategy)
        assert scores.shape == (3,) and np.isfinite(scores).all()
    _, lc = select("least_confidence", k=3, probs=probs, labeled_mask=labeled)
    np.testing.assert_allclose(lc, [0.5, 0.45, 0.4])
    _, mg = select("margin", k=3, probs=probs, labeled_mask=labeled)
    np.testing.assert_allclose(mg, [0.0, 0.1, 0.2])


def test_kcenters_uses_labeled_points_as_centers():
    x = np.array([[0.0], [1.0], [10.0], [4.0], [9.0]])
    labeled = np.array([True, False, True, False, False])
    idx, scores = select("kcenters", k=3, features=x, labeled_mask=labeled)
    # nearest-center distances: 1 -> 1, 3 -> 4, 4 -> 1; after 3: 1 -> 1, 4 -> 1 (tie: 1 first)
    np.testing.assert_array_equal(idx, [3, 1, 4])
    np.testing.assert_allclose(scores, [4.0, 1.0, 1.0])


def test_kcenters_without_labels_starts_at_a_seeded_random_point():
    x = np.random.default_rng(0).standard_normal((30, 4))
    a, sa = select("kcenters", k=5, features=x, seed=1)
    b, _ = select("kcenters", k=5, features=x, seed=1)
    np.testing.assert_array_equal(a, b)
    assert sa[0] == np.inf and np.isfinite(sa[1:]).all()


def test_random_is_seeded_and_skips_labeled(probs):
    labeled = np.array([True, True, False, False, False, False])
    idx, scores = select("random", k=4, probs=probs, labeled_mask=labeled, seed=3)
    assert sorted(idx.tolist()) == [2, 3, 4, 5]
    assert np.isnan(scores).all()
    np.testing.assert_array_equal(idx, select("random", k=4, labeled_mask=labeled, seed=3)[0])


def test_errors(probs):
    with pytest.raises(ValueError, match="unknown selection strategy"):
        select("badge", k=1, probs=probs)
    with pytest.raises(ValueError, match="needs probs"):
        select("entropy", k=1, features=np.zeros((6, 2)))
    with pytest.raises(ValueError, match="needs features"):
        select("kcenters", k=1, probs=probs)
    with pytest.raises(ValueError, match="disagree"):
        select("entropy", k=1, probs=probs, labeled_mask=np.zeros(5, dtype=bool))
    with pytest.raises(ValueError, match="exceeds"):
        select("margin", k=6, probs=probs, labeled_mask=np.eye(6, dtype=bool)[0])
    with pytest.raises(ValueError, match="boolean"):
        select("margin", k=1, probs=probs, labeled_mask=np.zeros(6))

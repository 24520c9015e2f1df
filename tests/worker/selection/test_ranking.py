"""Random sampling, forgetting-event ranking and Spearman correlation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from worker.selection.correlation import ranks_from_order, spearman, spearman_orders
from worker.selection.forgetting import rank_all, rank_by_forgetting
from worker.selection.random_sampling import random_sample


def test_random_sample_is_seeded_distinct_and_masked():
    a = random_sample(1000, 50, seed=7)
    np.testing.assert_array_equal(a, random_sample(1000, 50, seed=7))
    assert not np.array_equal(a, random_sample(1000, 50, seed=8))
    assert np.unique(a).size == 50 and a.min() >= 0 and a.max() < 1000
    mask = np.zeros(1000, dtype=bool)
    mask[::10] = True
    b = random_sample(1000, 100, seed=1, mask=mask)
    assert mask[b].all() and np.unique(b).size == 100
    with pytest.raises(ValueError, match="exceeds"):
        random_sample(1000, 101, seed=1, mask=mask)


def test_random_sample_is_roughly_uniform():
    counts = np.bincount(np.concatenate([random_sample(10, 3, seed=s) for s in range(3000)]), minlength=10)
    assert counts.min() > 800 and counts.max() < 1000  # expectation 900 each


def test_forgetting_order_inf_first_then_descending_ties_by_index():
    counts = np.array([2.0, np.inf, 0.0, 5.0, 2.0, np.inf, 5.0])
    np.testing.assert_array_equal(rank_all(counts), [1, 5, 3, 6, 0, 4, 2])
    np.testing.assert_array_equal(rank_by_forgetting(counts, 3), [1, 5, 3])
    mask = np.array([True, False, True, True, True, True, False])
    np.testing.assert_array_equal(rank_all(counts, mask=mask), [5, 3, 0, 4, 2])
    with pytest.raises(ValueError, match="NaN"):
        rank_all(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match=">= 0"):
        rank_all(np.array([1.0, -1.0]))


def test_spearman_matches_scipy_and_known_values():
    rng = np.random.default_rng(0)
    a = rng.random(100)
    b = a + 0.3 * rng.random(100)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert math.isnan(spearman(a, np.ones(100)))
    with pytest.raises(ValueError):
        spearman(a, b[:50])


def test_spearman_of_orders():
    order = np.array([3, 0, 2, 1])
    np.testing.assert_array_equal(ranks_from_order(order), [1, 3, 2, 0])
    assert spearman_orders(order, order) == pytest.approx(1.0)
    assert spearman_orders(order, order[::-1]) == pytest.approx(-1.0)
    # one swap of adjacent items among 4: rho = 1 - 6*2/(4*15)
    assert spearman_orders(order, np.array([0, 3, 2, 1])) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="permutation"):
        spearman_orders(np.array([0, 0, 1]), np.array([0, 1, 2]))

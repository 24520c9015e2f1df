"""Uncertainty scores and the deterministic top-k."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from worker.selection.uncertainty import entropy, least_confidence, margin, top_k


def test_known_values():
    p = np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(least_confidence(p), [0.3, 2 / 3, 0.5])
    np.testing.assert_allclose(margin(p), [0.5, 0.0, 0.0], atol=1e-15)
    expected = [-(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)), math.log(3), math.log(2)]
    np.testing.assert_allclose(entropy(p), expected)


def test_entropy_with_exact_zeros_and_ones_is_never_nan():
    p = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    h = entropy(p)
    assert not np.isnan(h).any()
    np.testing.assert_array_equal(h[:3], [0.0, 0.0, 0.0])
    assert not np.signbit(h[:3]).any()  # +0.0, not -0.0
    assert h[3] == pytest.approx(math.log(2))
    # float32 rows with zeros too
    assert not np.isnan(entropy(p.astype(np.float32))).any()


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 20), st.integers(2, 6)), elements=st.sampled_from([0.0, 1.0, 0.25, 1e-300, 0.5])))
def test_scores_are_finite_and_bounded(raw):
    p = raw / np.maximum(raw.sum(axis=1, keepdims=True), 1e-300)
    h = entropy(p)
    assert np.isfinite(h).all() and (h >= 0).all() and (h <= math.log(p.shape[1]) + 1e-12).all()
    assert np.isfinite(least_confidence(p)).all()
    assert np.isfinite(margin(p)).all() and (margin(p) >= 0).all()


@pytest.mark.parametrize("score_fn, descending", [(least_confidence, True), (entropy, True), (margin, False)])
def test_ties_go_to_lower_index_for_every_score(score_fn, descending):
    # Rows 1, 2 and 4 are identical (the most uncertain); row 3 is the next one.
    p = np.array([[0.9, 0.1], [0.5, 0.5], [0.5, 0.5], [0.6, 0.4], [0.5, 0.5], [1.0, 0.0]])
    idx = top_k(score_fn(p), 4, descending=descending)
    np.testing.assert_array_equal(idx, [1, 2, 4, 3])


def test_top_k_with_mask_and_infinities():
    s = np.array([3.0, np.inf, 3.0, -np.inf, 5.0, np.inf])
    np.testing.assert_array_equal(top_k(s, 6), [1, 5, 4, 0, 2, 3])
    np.testing.assert_array_equal(top_k(s, 3, descending=False), [3, 0, 2])
    mask = np.array([True, False, True, True, False, True])
    np.testing.assert_array_equal(top_k(s, 3, mask=mask), [5, 0, 2])
    assert top_k(s, 0).shape == (0,)
    np.testing.assert_array_equal(top_k(np.array([2, 7, 7, 1]), 2), [1, 2])  # integer scores


def test_top_k_matches_a_sorted_reference():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 200).astype(float)  # many ties
    ref = sorted(range(200), key=lambda i: (-s[i], i))[:50]
    np.testing.assert_array_equal(top_k(s, 50), ref)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.array([1.0, np.nan]), 1)
    with pytest.raises(ValueError, match="exceeds"):
        top_k(np.array([1.0, 2.0]), 2, mask=np.array([True, False]))
    with pytest.raises(ValueError, match="mask"):
        top_k(np.array([1.0, 2.0]), 1, mask=np.array([True]))
    with pytest.raises(ValueError, match="2-D"):
        entropy(np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="NaN"):
        least_confidence(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="negative"):
        entropy(np.array([[1.5, -0.5]]))
    with pytest.raises(ValueError, match="two classes"):
        margin(np.array([[1.0]]))

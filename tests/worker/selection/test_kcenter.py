"""Greedy k-centers against a naive reference that materialises the full distance matrix."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.selection import kcenter
from worker.selection.kcenter import greedy_k_centers, k_centers


def naive_k_centers(features, k, initial=(), candidates=None, seed=0):
    """Textbook greedy on the full n×n Euclidean matrix: (picks, pick distances, radii)."""
    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0]
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1))
    pickable = np.ones(n, dtype=bool) if candidates is None else np.array(candidates, dtype=bool)
    centers = sorted(set(int(i) for i in np.asarray(initial, dtype=np.int64).ravel()))
    pickable[centers] = False
    picks, pick_d, radii = [], [], []
    for j in range(k):
        nearest = dist[:, centers].min(axis=1) if centers else np.full(n, np.inf)
        if not centers:
            pool = np.flatnonzero(pickable)
            p = int(pool[np.random.default_rng(seed).integers(pool.size)])
        else:
            p = int(np.argmax(np.where(pickable, nearest, -1.0)))  # first maximum: lower index
        picks.append(p)
        pick_d.append(nearest[p])
        centers.append(p)
        pickable[p] = False
        radii.append(dist[:, centers].min(axis=1).max())
    return np.array(picks, dtype=np.int64), np.array(pick_d), np.array(radii)


@pytest.fixture(params=[None, 1, 3], ids=["frontier-default", "frontier-1", "frontier-3"])
def frontier(request, monkeypatch):
    """Small frontiers force the rebuild logic to run on small inputs (default: all points fit)."""
    if request.param is not None:
        monkeypatch.setattr(kcenter, "_FRONTIER_MIN", request.param)
        monkeypatch.setattr(kcenter, "_FRONTIER_SCALE", 0.0)
    return request.param


@st.composite
def integer_problems(draw):
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 4))
    hi = draw(st.sampled_from([1, 2, 3, 10]))  # small ranges give many exact ties
    x = np.array(draw(st.lists(st.integers(-hi, hi), min_size=n * d, max_size=n * d))).reshape(n, d)
    initial = draw(st.lists(st.integers(0, n - 1), max_size=n))  # repeats allowed
    masked = draw(st.booleans())
    cand = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))) if masked else None
    pickable = np.ones(n, dtype=bool) if cand is None else cand.copy()
    pickable[initial] = False
    k = draw(st.integers(0, int(pickable.sum())))
    return x, k, initial, cand, draw(st.integers(0, 2**16)), draw(st.sampled_from([None, 1, 2, 7]))


@pytest.mark.parametrize("fmin", [1, 2, 512])
@settings(max_examples=150, deadline=None)
@given(problem=integer_problems())
def test_identical_to_naive_on_integer_features(fmin, problem):
    x, k, initial, cand, seed, chunk = problem
    old = kcenter._FRONTIER_MIN, kcenter._FRONTIER_SCALE
    kcenter._FRONTIER_MIN, kcenter._FRONTIER_SCALE = fmin, 0.0
    try:
        res = k_centers(x, k=k, initial=initial, candidates=cand, seed=seed, chunk_size=chunk)
    finally:
        kcenter._FRONTIER_MIN, kcenter._FRONTIER_SCALE = old
    picks, pick_d, radii = naive_k_centers(x, k, initial, cand, seed)
    np.testing.assert_array_equal(res.picks, picks)
    np.testing.assert_array_equal(res.pick_distances, pick_d)
    np.testing.assert_array_equal(res.radii, radii)


def test_ties_go_to_lower_index():
    # Points 1 and 3 are both 2 away from the center at 0: 1 goes first, then 3 (still 2 away);
    # then 2 and 4 are both 1 away: 2 goes first.
    x = np.array([[0.0], [2.0], [1.0], [-2.0], [-1.0]])
    picks, radii = greedy_k_centers(x, k=4, initial=[0])
    np.testing.assert_array_equal(picks, [1, 3, 2, 4])
    np.testing.assert_allclose(radii, [2.0, 1.0, 1.0, 0.0])


def test_tie_between_frontier_and_outside_bound_goes_to_lower_index(monkeypatch):
    # Frontier of one point: after picking 10, point 3 (at 7) drops to exactly the bound of
    # point 1 (at -3, 3 away from the center at 0). Point 1 must win the tie although only
    # point 3 is in the frontier at that moment.
    monkeypatch.setattr(kcenter, "_FRONTIER_MIN", 1)
    monkeypatch.setattr(kcenter, "_FRONTIER_SCALE", 0.0)
    x = np.array([[0], [-3], [10], [7]])
    res = k_centers(x, k=3, initial=[0])
    np.testing.assert_array_equal(res.picks, [2, 1, 3])
    np.testing.assert_array_equal(res.pick_distances, [10.0, 3.0, 3.0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_init", [0, 5, 300])
def test_covering_radius_matches_naive_on_float_features(frontier, dtype, n_init):
    rng = np.random.default_rng(n_init + (dtype == np.float32))
    x = rng.standard_normal((600, 8)).astype(dtype)
    initial = rng.choice(600, n_init, replace=False)
    res = k_centers(x, k=120, initial=initial, seed=4, chunk_size=97)
    _, pick_d, radii = naive_k_centers(x, 120, initial, seed=4)
    np.testing.assert_allclose(res.radii, radii, rtol=1e-5)
    np.testing.assert_allclose(res.pick_distances[n_init == 0 :], pick_d[n_init == 0 :], rtol=1e-5)
    assert np.unique(res.picks).size == 120
    assert not np.isin(res.picks, initial).any()
    # The greedy covering radius never grows, and it ends well below where it started.
    assert np.all(np.diff(res.radii) <= 1e-6 * res.radii[0])
    assert res.radii[-1] < 0.8 * res.radii[0]


def test_clustered_features_exercise_frontier_rebuilds(frontier):
    # Tight clusters: each new center empties a whole neighbourhood at once.
    rng = np.random.default_rng(7)
    means = rng.integers(-50, 50, size=(12, 3))
    x = means[rng.integers(0, 12, 900)] + rng.integers(-3, 4, size=(900, 3))
    initial = rng.choice(900, 20, replace=False)
    res = k_centers(x, k=200, initial=initial)
    picks, pick_d, radii = naive_k_centers(x, 200, initial)
    np.testing.assert_array_equal(res.picks, picks)
    np.testing.assert_array_equal(res.radii, radii)


def test_candidates_mask_is_respected(frontier):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 20, size=(300, 3))
    cand = rng.random(300) < 0.3
    initial = np.flatnonzero(~cand)[:10]
    k = int(cand.sum())  # every candidate, so the order is fully checked
    res = k_centers(x, k=k, initial=initial, candidates=cand)
    assert cand[res.picks].all()
    assert np.unique(res.picks).size == k
    picks, _, radii = naive_k_centers(x, k, initial, cand)
    np.testing.assert_array_equal(res.picks, picks)
    # The radius covers every point, including the non-candidates nobody may pick.
    np.testing.assert_array_equal(res.radii, radii)
    assert res.radii[-1] > 0


def test_empty_start_is_a_seeded_random_pick():
    x = np.random.default_rng(0).standard_normal((50, 2))
    firsts = {int(k_centers(x, k=1, seed=s).picks[0]) for s in range(20)}
    assert len(firsts) > 5  # the seed matters
    a, b = k_centers(x, k=10, seed=3), k_centers(x, k=10, seed=3)
    np.testing.assert_array_equal(a.picks, b.picks)
    assert a.pick_distances[0] == np.inf
    assert np.isfinite(a.pick_distances[1:]).all()


def test_duplicates_and_exhausting_the_pool():
    x = np.array([[0, 0], [0, 0], [1, 1], [1, 1], [0, 0]])
    res = k_centers(x, k=4, initial=[0])
    picks, pick_d, radii = naive_k_centers(x, 4, [0])
    np.testing.assert_array_equal(res.picks, picks)
    np.testing.assert_array_equal(res.radii, radii)
    assert res.radii[-1] == 0.0


def test_k_zero_and_bad_input():
    x = np.zeros((4, 2))
    assert k_centers(x, k=0).picks.shape == (0,)
    with pytest.raises(ValueError, match="exceeds"):
        k_centers(x, k=3, initial=[0, 1])
    with pytest.raises(ValueError, match="2-D"):
        k_centers(np.zeros(4), k=1)
    with pytest.raises(ValueError, match="NaN"):
        k_centers(np.array([[0.0], [np.nan]]), k=1)
    with pytest.raises(ValueError, match="infinite"):
        k_centers(np.array([[0.0], [-np.inf]], dtype=np.float32), k=1)
    # Huge but finite values overflow a plain sum: still accepted.
    big = np.full((3, 1), 1e308)
    assert k_centers(big, k=1, initial=[0]).picks.tolist() == [1]
    assert k_centers(x, k=1, initial=None).picks.shape == (1,)
    with pytest.raises(ValueError, match="initial"):
        k_centers(x, k=1, initial=[4])
    with pytest.raises(ValueError, match="candidates"):
        k_centers(x, k=1, candidates=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="k must be"):
        k_centers(x, k=-1)


def test_larger_pool_matches_incremental_reference():
    # Beyond the size where the frontier holds everything; the reference keeps the n-vector of
    # nearest-center distances (no n×n matrix at this size).
    rng = np.random.default_rng(11)
    x = rng.integers(-8, 9, size=(4000, 6))
    initial = rng.choice(4000, 40, replace=False)
    res = k_centers(x, k=300, initial=initial)
    xf = x.astype(np.float64)
    near = np.min([((xf - xf[c]) ** 2).sum(axis=1) for c in initial], axis=0)
    pickable = np.ones(4000, dtype=bool)
    pickable[initial] = False
    for j in range(300):
        p = int(np.argmax(np.where(pickable, near, -1.0)))
        assert res.picks[j] == p, f"pick {j}"
        pickable[p] = False
        near = np.minimum(near, ((xf - xf[p]) ** 2).sum(axis=1))
        assert res.radii[j] == np.sqrt(near.max())


def test_torch_cpu_device_gives_the_same_picks():
    pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    for trial in range(15):
        n = int(rng.integers(2, 120))
        x = rng.integers(0, 5, size=(n, 3))
        initial = rng.choice(n, int(rng.integers(0, n // 2 + 1)), replace=False)
        cand = rng.random(n) < 0.8
        k = int(rng.integers(0, (cand & ~np.isin(np.arange(n), initial)).sum() + 1))
        a = k_centers(x, k=k, initial=initial, candidates=cand, seed=trial)
        b = k_centers(x, k=k, initial=initial, candidates=cand, seed=trial, device="cpu", chunk_size=16)
        np.testing.assert_array_equal(a.picks, b.picks)
        np.testing.assert_allclose(a.radii, b.radii, rtol=1e-6)
        np.testing.assert_allclose(a.pick_distances, b.pick_distances, rtol=1e-6)


def test_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, numpy as np, worker.selection as s; s.select('kcenters', k=2, features=np.eye(3)); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

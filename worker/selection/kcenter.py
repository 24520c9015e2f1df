"""Greedy k-centers (Sener & Savarese 2018; Algorithm 1 of the paper) in O(n·d + n) memory.

Semantics (DESIGN.md section 6): Euclidean distance on the given features; the labeled points
(``initial``) are the starting centers; each step adds the pickable point farthest from its nearest
center; ties go to the lower index. With no initial center, the first pick is seeded and random:
``np.random.default_rng(seed)`` draws one position uniformly from the pickable indices (in
increasing order), i.e. ``pickable[rng.integers(len(pickable))]``.

How it stays fast and small. The reference implementation fills an (|s|+b)×n distance matrix, one
scipy ``cdist`` row per step, and so touches every point at every step. Here every point keeps one
number: the exact minimum of its squared distance over a prefix of the center list (the centers it
has been compared with so far). That is an upper bound of its distance to the nearest center, and
it only goes down as centers are added. A small *frontier* (the points with the largest bounds,
about 4·sqrt(n) of them) is kept exact at every step with one vectorised pass over its rows. Every
point outside the frontier is bounded by ``theta``, the largest bound left outside; so whenever the
frontier's best exact value is strictly above ``theta`` it is the true farthest point, and ties
resolve to the lowest index (the frontier is kept in index order, and outside points are strictly
below). When that no longer holds the frontier is rebuilt from the largest bounds and its new
members are compared with the centers they have not seen yet, in blocked matrix products.

Greedy k-centers rarely moves many points at once (a new center becomes the nearest center of only
its neighbours), so most bounds stay exact, few points ever reach the frontier, and each step costs
about frontier·d instead of n·d. Memory is O(n) next to the features, plus a frontier copy and
blocks of a few tens of MB (``chunk_size`` rows at most). The result is the plain greedy
algorithm's: the same picks whenever distances are exact.

Distances are computed from direct differences ``x - c`` (relative accuracy even for close points).
The ``|x|² - 2x·c + |c|²`` expansion is only used inside matrix products that *choose* the nearest
of many centers (for the labeled set, and when the frontier is rebuilt); the chosen center's
distance is then recomputed directly. For float features a near tie within rounding there can
leave a distance larger than the true minimum by about one float rounding of |x|².

Integer features are computed in float64 (exact while squared norms stay below 2**53, hence
exactly the naive picks);
float32 features stay float32 (no float64 copy of the pool); other floats run in float64.

On a torch ``device`` the same greedy runs with float32 tensors as a plain full pass per step (no
frontier: its data-dependent sizes would cost a host synchronisation per step, while a full pass
is cheap on an accelerator), and the loop never waits for the device until the end. float32 is
exact for integer features whose squared distances stay below 2**24.
"""

from __future__ import annotations

import logging
import math
from typing import Any, NamedTuple

import numpy as np

__all__ = ["KCentersResult", "greedy_k_centers", "k_centers"]

log = logging.getLogger(__name__)

# Target number of elements in a temporary block (rows × columns); bounds extra memory to a few
# tens of MB whatever n is.
_BLOCK_ELEMS = 1 << 22
_CENTER_BLOCK = 512
# Frontier size: max(_FRONTIER_MIN, _FRONTIER_SCALE·sqrt(n)) points are kept exact at every step.
_FRONTIER_MIN = 512
_FRONTIER_SCALE = 4.0


class KCentersResult(NamedTuple):
    picks: np.ndarray
    """int64 (k,): indices into ``features``, in pick order."""
    pick_distances: np.ndarray
    """float64 (k,): each pick's distance to its nearest center when it was picked (``inf`` for a
    first pick made with no center at all)."""
    radii: np.ndarray
    """float64 (k,): covering radius after each pick (max over all points of the distance to the
    nearest center)."""


def greedy_k_centers(
    features: np.ndarray,
    *,
    k: int,
    initial: Any = (),
    candidates: np.ndarray | None = None,
    seed: int = 0,
    device: Any = None,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-centers; returns ``(picks, radii)``. See :func:`k_centers` for the arguments."""
    res = k_centers(
        features, k=k, initial=initial, candidates=candidates, seed=seed, device=device, chunk_size=chunk_size
    )
    return res.picks, res.radii


def k_centers(
    features: np.ndarray,
    *,
    k: int,
    initial: Any = (),
    candidates: np.ndarray | None = None,
    seed: int = 0,
    device: Any = None,
    chunk_size: int | None = None,
) -> KCentersResult:
    """Pick ``k`` new centers greedily.

    features: (n, d) real array. initial: indices that are already centers (may be empty; order and
    repeats do not matter). candidates: optional boolean (n,) mask of the points that may be
    picked (initial centers are never picked again). seed: only used for the first pick when there
    is no initial center. device: ``None`` for numpy, else a torch device (e.g. ``"cuda"``).
    chunk_size: most rows of ``features`` handled in one block (bounds temporary memory).

    Raises ValueError on malformed input or when ``k`` exceeds the number of pickable points.
    """
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D (n, d) array, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
        raise ValueError(f"features must be real numbers, got dtype {x.dtype}")
    n, d = x.shape
    dtype = np.float32 if x.dtype in (np.float16, np.float32) else np.float64
    x = np.ascontiguousarray(x, dtype=dtype)
    if not _all_finite(x):
        raise ValueError("features contain NaN or infinite values")

    if initial is None or np.size(initial) == 0:
        init = np.empty(0, dtype=np.int64)
    else:
        init = np.asarray(initial, dtype=np.int64).ravel()
    if init.size and (init.min() < 0 or init.max() >= n):
        raise ValueError(f"initial indices must lie in [0, {n})")
    init = np.unique(init)

    pickable = np.ones(n, dtype=bool)
    if candidates is not None:
        cand = np.asarray(candidates)
        if cand.shape != (n,) or cand.dtype != np.bool_:
            raise ValueError(f"candidates must be a boolean mask of shape ({n},)")
        pickable &= cand
    pickable[init] = False

    k = int(k)
    n_pickable = int(np.count_nonzero(pickable))
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k > n_pickable:
        raise ValueError(f"k={k} exceeds the {n_pickable} pickable points")
    if k == 0:
        empty = np.empty(0, dtype=np.float64)
        return KCentersResult(np.empty(0, dtype=np.int64), empty, empty.copy())

    first = -1
    if init.size == 0:
        pool = np.flatnonzero(pickable)
        first = int(pool[np.random.default_rng(seed).integers(pool.size)])

    rows = _rows_per_block(d, chunk_size)
    if device is not None:
        return _torch_greedy(x, k, init, pickable, first, device, rows, chunk_size)
    return _numpy_greedy(x, k, init, pickable, first, rows)


def _all_finite(x: np.ndarray) -> bool:
    # One float64 sum is NaN/inf if any element is, without an n×d boolean temporary; only an
    # overflowing sum of huge finite values needs the element-wise check, row block by row block.
    with np.errstate(over="ignore", invalid="ignore"):
        total = x.sum(dtype=np.float64)
    if np.isfinite(total):
        return True
    rows = _rows_per_block(x.shape[1], None)
    return all(np.isfinite(x[lo : lo + rows]).all() for lo in range(0, x.shape[0], rows))


def _rows_per_block(d: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return int(chunk_size)
    return max(256, _BLOCK_ELEMS // max(d, _CENTER_BLOCK))


def _sq_to(x: np.ndarray, c: np.ndarray, rows: int) -> np.ndarray:
    """Squared distances (float64) from every row of ``x`` to ``c``, from direct differences,
    ``rows`` at a time so that temporaries stay small."""
    n = x.shape[0]
    out = np.empty(n, dtype=np.float64)
    for lo in range(0, n, rows):
        diff = x[lo : lo + rows] - c
        out[lo : lo + rows] = np.einsum("ij,ij->i", diff, diff)
    return out


def _sq_to_rows(x: np.ndarray, idx: np.ndarray, c: np.ndarray, rows: int) -> np.ndarray:
    """Like :func:`_sq_to` for the rows ``x[idx]``, gathered ``rows`` at a time."""
    out = np.empty(idx.shape[0], dtype=np.float64)
    for lo in range(0, idx.shape[0], rows):
        diff = x[idx[lo : lo + rows]] - c
        out[lo : lo + rows] = np.einsum("ij,ij->i", diff, diff)
    return out


def _sq_to_nearest(x: np.ndarray, pts: np.ndarray | None, cen: np.ndarray, rows: int) -> np.ndarray:
    """Squared distance (float64) from each point ``x[pts]`` (all rows if None) to its nearest
    center among ``x[cen]``.

    O(len(pts)·len(cen)·d) time in tiles of at most ``rows`` points × a few thousand centers. The
    tiles are single matrix products that only choose the nearest center (``[x, 1]·[c, -|c|²/2]``
    is largest for it); the returned distance is then recomputed from direct differences, so it
    is exact for integer features and accurate to float rounding otherwise.
    """
    npts = x.shape[0] if pts is None else pts.shape[0]
    d = x.shape[1]
    step = min(rows, max(npts, 1))
    cblock = max(_CENTER_BLOCK, _BLOCK_ELEMS // step)
    out = np.empty(npts, dtype=np.float64)
    paug = np.ones((step, d + 1), dtype=x.dtype)
    caug = np.empty((min(cblock, cen.shape[0]), d + 1), dtype=x.dtype)
    for lo in range(0, npts, step):
        hi = min(lo + step, npts)
        sub = x[lo:hi] if pts is None else x[pts[lo:hi]]
        pa = paug[: hi - lo]
        pa[:, :d] = sub
        best = np.full(hi - lo, -np.inf, dtype=x.dtype)
        arg = np.zeros(hi - lo, dtype=np.intp)
        for clo in range(0, cen.shape[0], cblock):
            ca = caug[: min(cblock, cen.shape[0] - clo)]
            np.take(x, cen[clo : clo + cblock], axis=0, out=ca[:, :d])
            ca[:, d] = -0.5 * np.einsum("ij,ij->i", ca[:, :d], ca[:, :d])
            g = pa @ ca.T
            jj = g.argmax(axis=1)
            v = np.take_along_axis(g, jj[:, None], axis=1)[:, 0]
            upd = v > best
            best[upd] = v[upd]
            arg[upd] = jj[upd] + clo
        diff = sub - x[cen[arg]]
        out[lo:hi] = np.einsum("ij,ij->i", diff, diff)
    return out


def _numpy_greedy(
    x: np.ndarray, k: int, init: np.ndarray, pickable: np.ndarray, first: int, rows: int
) -> KCentersResult:
    n = x.shape[0]
    centers = np.empty(init.size + k, dtype=np.int64)
    is_center = np.zeros(n, dtype=bool)
    picks = np.empty(k, dtype=np.int64)
    pick_d2 = np.empty(k, dtype=np.float64)
    radii2 = np.empty(k, dtype=np.float64)
    m = init.size
    j0 = 0
    if m:
        centers[:m] = init
        is_center[init] = True
        d2 = _sq_to_nearest(x, None, init, rows)
        d2[init] = 0.0
    else:
        # No labeled point: the seeded first pick, then one exact pass.
        picks[0], pick_d2[0] = first, np.inf
        centers[0] = first
        is_center[first] = True
        pickable[first] = False
        m, j0 = 1, 1
        d2 = _sq_to(x, x[first], rows)
        d2[first] = 0.0
    # d2 holds, for every point, the exact minimum over the first ``synced`` centers: an upper
    # bound of its distance to the nearest center.
    synced = np.full(n, m, dtype=np.int64)
    size = max(_FRONTIER_MIN, int(_FRONTIER_SCALE * math.sqrt(n)))

    frontier = np.empty(0, dtype=np.int64)
    xf = x[:0]
    df = np.empty(0, dtype=np.float64)  # exact squared distances of frontier points
    sf = df.copy()  # same, -1 where the point cannot be picked
    theta = np.inf  # every point outside the frontier has d2 <= theta
    refills = refreshed = 0
    for j in range(j0, k + 1):
        grow = size
        while True:
            top = df.max() if df.size else -np.inf
            if (top > theta or theta == -np.inf) and (
                j == k or theta == -np.inf or (sf.size and sf.max() > theta)
            ):
                break
            # The frontier no longer provably holds the maximum: rebuild it from the largest
            # bounds and make those exact against the centers they have not seen.
            d2[frontier] = df
            synced[frontier] = m
            frontier, theta = _top_bounds(d2, is_center, grow)
            stale = frontier[synced[frontier] < m]
            if stale.size:
                lo = int(synced[stale].min())
                d2[stale] = np.minimum(d2[stale], _sq_to_nearest(x, stale, centers[lo:m], rows))
                synced[stale] = m
                refreshed += stale.size
            # A copy of the frontier's rows makes each step one contiguous pass; a huge frontier
            # (many tied bounds) is gathered block by block instead, to keep memory O(n).
            xf = x[frontier] if frontier.size <= rows else None
            df = d2[frontier]
            sf = np.where(pickable[frontier], df, -1.0)
            refills += 1
            grow *= 2
        if j > 0:
            radii2[j - 1] = max(float(df.max()) if df.size else 0.0, 0.0)
        if j == k:
            break
        # argmax returns the first maximum and the frontier is in index order: ties go to the
        # lower index, and every point outside is strictly below.
        t = int(np.argmax(sf))
        p = int(frontier[t])
        picks[j], pick_d2[j] = p, df[t]
        pickable[p] = False
        is_center[p] = True
        centers[m] = p
        m += 1
        if xf is not None:
            diff = xf - x[p]
            nd2 = np.einsum("ij,ij->i", diff, diff)
        else:
            nd2 = _sq_to_rows(x, frontier, x[p], rows)
        np.minimum(df, nd2, out=df)
        np.minimum(sf, nd2, out=sf)
        df[t] = 0.0
        sf[t] = -1.0
    log.debug("k-centers: %d picks over %d points, %d frontier rebuilds, %d points refreshed", k, n, refills, refreshed)
    return KCentersResult(picks, np.sqrt(pick_d2), np.sqrt(radii2))


def _top_bounds(d2: np.ndarray, is_center: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Indices (ascending) of the non-center points with the ``size`` largest bounds, ties at the
    cut included, and the largest bound left outside (``-inf`` if none)."""
    vals = np.where(is_center, -np.inf, d2)
    eligible = int(np.count_nonzero(~is_center))
    if eligible <= size:
        return np.flatnonzero(~is_center), -np.inf
    cut = vals.shape[0] - size
    tau = np.partition(vals, cut)[cut]
    members = np.flatnonzero(vals >= tau)
    rest = vals[vals < tau]
    return members, float(rest.max()) if rest.size else -np.inf


def _torch_greedy(
    x: np.ndarray,
    k: int,
    init: np.ndarray,
    pickable: np.ndarray,
    first: int,
    device: Any,
    rows: int,
    chunk_size: int | None,
) -> KCentersResult:
    import torch  # only here: the numpy path and app/ must not need torch

    dev = torch.device(device)
    xt = torch.from_numpy(x).to(device=dev, dtype=torch.float32)
    n = xt.shape[0]
    if chunk_size is None and dev.type != "cpu":
        # Accelerator memory is plentiful and each chunk costs kernel launches: one pass per step.
        rows = max(rows, (1 << 26) // max(x.shape[1], 1))

    def sq_to(c: torch.Tensor) -> torch.Tensor:
        out = torch.empty(n, dtype=torch.float32, device=dev)
        for lo in range(0, n, rows):
            out[lo : lo + rows] = (xt[lo : lo + rows] - c).square().sum(dim=1)
        return out

    if init.size:
        init_t = torch.as_tensor(init, device=dev)
        xx = xt.square().sum(dim=1)
        best = torch.full((n,), math.inf, dtype=torch.float32, device=dev)
        slot = torch.zeros(n, dtype=torch.int64, device=dev)
        for clo in range(0, init.size, _CENTER_BLOCK):
            ids = init_t[clo : clo + _CENTER_BLOCK]
            cen = xt[ids]
            cc = cen.square().sum(dim=1)
            for lo in range(0, n, rows):
                block = xx[lo : lo + rows, None] - 2.0 * (xt[lo : lo + rows] @ cen.T) + cc[None, :]
                v, jj = block.min(dim=1)
                closer = v < best[lo : lo + rows]
                best[lo : lo + rows] = torch.where(closer, v, best[lo : lo + rows])
                slot[lo : lo + rows] = torch.where(closer, ids[jj], slot[lo : lo + rows])
        d2 = torch.empty(n, dtype=torch.float32, device=dev)
        for lo in range(0, n, rows):
            d2[lo : lo + rows] = (xt[lo : lo + rows] - xt[slot[lo : lo + rows]]).square().sum(dim=1)
        d2[init_t] = 0.0
    else:
        d2 = torch.full((n,), math.inf, dtype=torch.float32, device=dev)

    can = torch.as_tensor(pickable, device=dev)
    neg = torch.tensor(-1.0, dtype=torch.float32, device=dev)
    picks = torch.empty(k, dtype=torch.int64, device=dev)
    pick_d2 = torch.empty(k, dtype=torch.float32, device=dev)
    radii2 = torch.empty(k, dtype=torch.float32, device=dev)
    p = torch.tensor([first], dtype=torch.int64, device=dev) if first >= 0 else None
    for j in range(k):
        if p is None or j > 0:
            # argmax returns the first maximal index: ties go to the lower index. The pick stays a
            # device tensor so that no step waits for the host.
            p = torch.argmax(torch.where(can, d2, neg)).reshape(1)
        picks[j : j + 1] = p
        pick_d2[j : j + 1] = d2.index_select(0, p)
        can.index_fill_(0, p, False)
        d2 = torch.minimum(d2, sq_to(xt.index_select(0, p)))
        d2.index_fill_(0, p, 0.0)
        radii2[j] = d2.max()
    return KCentersResult(
        picks.cpu().numpy(),
        pick_d2.double().sqrt().cpu().numpy(),
        radii2.double().sqrt().cpu().numpy(),
    )

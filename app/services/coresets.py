"""Core-set selection jobs (DESIGN.md section 6): validate and queue them, read their rankings and
subsets, compare two rankings by Spearman's rho.

The worker (``worker/pipelines/coreset.py``) trains the proxy once over every labeled pool item,
stores one full ranking per job (``coreset_result`` rows: item, score, rank) and the outcome in the
job's ``result``. Every subset is the top ``size`` items of that ranking, so a job's subsets are
nested: for forgetting events and entropy by score order, for random by the permutation's order,
and for k-centers by the greedy order (the seeded random start set first, then each greedy pick).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db import tables as t
from app.errors import Conflict, NotFound, Unprocessable
from app.schemas.coresets import (
    PAPER_KCENTERS_INITIAL,
    CoresetCreate,
    CoresetRead,
    CoresetSubset,
    RankedItem,
    RankingComparison,
    RankingRef,
)
from app.schemas.specs import ARCHITECTURES
from app.services.jobs import create_job
from app.services.rounds import pool_counts

# Methods whose ranking is a score order (higher first): their scores can be correlated directly.
SCORE_METHODS = frozenset({"forgetting_events", "entropy"})
# fastText trains in C++ without per-example predictions during training, so it cannot count
# forgetting events; the rule is on the name because the api does not import the models.
NO_TRAINING_TRACE_ARCHS = frozenset({"fasttext"})
CSV_PAGE = 5000


# -- pure helpers (the worker uses them too, so request time and run time agree) ------------------


def resolve_subsets(*, fractions: Sequence[float], sizes: Sequence[int], labeled: int) -> list[dict[str, Any]]:
    """Requested subsets as ``[{"fraction": f | None, "size": m}]``, ascending size, one per size.

    A fraction ``f`` keeps ``round(f * labeled)`` items (at least one). ValueError when a size
    exceeds ``labeled``.
    """
    out: dict[int, dict[str, Any]] = {}
    for fraction in fractions:
        size = max(1, math.floor(fraction * labeled + 0.5))
        out.setdefault(size, {"fraction": fraction, "size": size})
    for size in sizes:
        if size > labeled:
            raise ValueError(f"subset size {size} exceeds the {labeled} labeled pool items")
        out.setdefault(size, {"fraction": None, "size": size})
    return [out[size] for size in sorted(out)]


def default_kcenters_initial(labeled: int) -> int:
    """The paper's 1,000-point start set is 2% of CIFAR10; small pools get 2% (rounded up)."""
    return max(1, min(PAPER_KCENTERS_INITIAL, math.ceil(0.02 * labeled)))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``values`` ascending; tied values share the mean of their ranks."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    starts = np.r_[0, np.flatnonzero(ordered[1:] != ordered[:-1]) + 1]
    ends = np.r_[starts[1:], x.shape[0]]
    ranks = np.empty(x.shape[0], dtype=np.float64)
    ranks[order] = np.repeat((starts + ends - 1) / 2.0, ends - starts)
    return ranks


def spearman_rho(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rho of two equally long arrays (+inf allowed, NaN not); None when undefined."""
    ra, rb = average_ranks(a), average_ranks(b)
    if ra.shape[0] < 2:
        return None
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = math.sqrt(float(ra @ ra) * float(rb @ rb))
    if denominator == 0.0:
        return None  # one side constant: undefined, and a made-up 0 would read as a measurement
    return max(-1.0, min(1.0, float(ra @ rb) / denominator))


def comparison_keys(
    method_a: str, scores_a: np.ndarray, ranks_a: np.ndarray, method_b: str, scores_b: np.ndarray, ranks_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, str]:
    """What to correlate for two rankings over the same items (aligned arrays; NaN = no score).

    Two score orders (forgetting events, entropy: higher first) are compared on their scores, so
    ties (e.g. the many items forgotten 0 times) share a rank instead of being split by item id.
    Anything else is compared on its positions (negated, so that "earlier" is "higher" on both sides).
    """
    if method_a in SCORE_METHODS and method_b in SCORE_METHODS and not (np.isnan(scores_a).any() or np.isnan(scores_b).any()):
        return scores_a, scores_b, "scores"
    return -ranks_a.astype(np.float64), -ranks_b.astype(np.float64), "ranks"


# -- create --------------------------------------------------------------------------------------


def _problem(loc: list[str | int], msg: str) -> Unprocessable:
    return Unprocessable(msg, details=[{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])


def _check_arch(project: t.Project, spec: dict[str, Any], field: str) -> None:
    known = ARCHITECTURES[project.modality]
    if spec["arch"] not in known:
        raise _problem([field, "arch"], f"{spec['arch']!r} is not an architecture for {project.modality} projects; "
                                        f"expected one of {', '.join(known)}")


def _test_count(session: Session, project_id: int) -> int:
    return int(session.scalar(
        select(func.count()).select_from(t.Item).where(t.Item.project_id == project_id, t.Item.split == t.SPLIT_TEST)
    ) or 0)


def create_coreset(session: Session, *, project: t.Project, request: CoresetCreate) -> t.Job:
    """Validate ``request`` against the project and queue a ``coreset`` job; 422 names the problem."""
    _, labeled = pool_counts(session, project_id=project.id)
    if labeled < 2:
        raise Unprocessable(f"project {project.id} has {labeled} labeled pool item(s); a core-set needs at least 2")
    proxy: dict[str, Any] | None = None
    if request.method == "random":
        if request.proxy is not None:
            raise _problem(["proxy"], "the random method trains no proxy; leave 'proxy' out")
    else:
        proxy = request.proxy.model_dump(mode="json") if request.proxy is not None else dict(project.proxy)
        _check_arch(project, proxy, "proxy")
        if request.method == "forgetting_events" and proxy["arch"] in NO_TRAINING_TRACE_ARCHS:
            raise _problem(
                ["proxy", "arch"],
                f"forgetting events count, for every example, how often its prediction during training flips from "
                f"correct to incorrect; {proxy['arch']} trains without exposing per-example predictions, so it "
                f"cannot count them. Use a torch proxy (e.g. vdcnn9 for text), or the entropy or kcenters method.",
            )
    target: dict[str, Any] | None = None
    if request.train_target:
        target = request.target.model_dump(mode="json") if request.target is not None else dict(project.target)
        _check_arch(project, target, "target")
        if _test_count(session, project.id) == 0:
            raise _problem(["train_target"], f"project {project.id} has no test split to evaluate the target on; "
                                             "import labeled test items first")
    try:
        subsets = resolve_subsets(fractions=request.fractions, sizes=request.sizes, labeled=labeled)
    except ValueError as exc:
        raise _problem(["sizes"], str(exc)) from None
    initial = None
    if request.method == "kcenters":
        initial = request.kcenters_initial or default_kcenters_initial(labeled)
        if initial > labeled:
            raise _problem(["kcenters_initial"], f"kcenters_initial {initial} exceeds the {labeled} labeled pool items")
    elif request.kcenters_initial is not None:
        raise _problem(["kcenters_initial"], "kcenters_initial only applies to the kcenters method")
    params = {
        "method": request.method,
        "seed": project.seed if request.seed is None else request.seed,
        "proxy": proxy,
        "target": target,
        "fractions": list(request.fractions),
        "sizes": list(request.sizes),
        "subsets": subsets,
        "labeled": labeled,
        "kcenters_initial": initial,
        "train_target": request.train_target,
        "random_baseline": bool(request.train_target and request.random_baseline is not False),
        "full_data": request.full_data,
    }
    return create_job(session, project_id=project.id, type=t.JOB_CORESET, params=params)


# -- read ----------------------------------------------------------------------------------------


def get_coreset_job(session: Session, *, project_id: int, job_id: int) -> t.Job:
    job = session.get(t.Job, job_id)
    if job is None or job.project_id != project_id or job.type != t.JOB_CORESET:
        raise NotFound(f"project {project_id} has no core-set job {job_id}")
    return job


def list_coreset_jobs(session: Session, *, project_id: int, limit: int = 100, offset: int = 0) -> list[t.Job]:
    query = (
        select(t.Job)
        .where(t.Job.project_id == project_id, t.Job.type == t.JOB_CORESET)
        .order_by(t.Job.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(query))


def subset_url(job: t.Job, index: int) -> str:
    return f"/projects/{job.project_id}/coresets/{job.id}/subsets/{index}"


def describe(job: t.Job) -> CoresetRead:
    """The job's request and, once it ran, its outcome (result written by the worker)."""
    params = job.params or {}
    # Until the job has succeeded its result is empty or stale (a retried job keeps nothing).
    result = (job.result or {}) if job.status == t.JOB_SUCCEEDED else {}
    subsets = [
        CoresetSubset.model_validate({**entry, "index": index, "url": subset_url(job, index)})
        for index, entry in enumerate(result.get("subsets") or params.get("subsets") or [])
    ]
    return CoresetRead(
        job_id=job.id,
        project_id=job.project_id,
        status=job.status,
        progress=job.progress or {},
        error=job.error,
        method=params.get("method", ""),
        seed=int(params.get("seed", 0)),
        proxy=params.get("proxy"),
        target=params.get("target"),
        labeled=int(result.get("labeled", params.get("labeled", 0))),
        subsets=subsets,
        selection=result.get("selection"),
        proxy_metrics=result.get("proxy_metrics") or {},
        full=result.get("full"),
        rankings=result.get("rankings") or [],
        spearman_proxy_target=result.get("spearman_proxy_target"),
        notes=result.get("notes") or [],
        params=params,
        attempts=job.attempts,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def require_ranking(job: t.Job, ranking: str) -> None:
    if job.status != t.JOB_SUCCEEDED:
        raise Conflict(f"core-set job {job.id} is {job.status}; its rankings exist once it has succeeded")
    if ranking not in ((job.result or {}).get("rankings") or []):
        raise NotFound(f"core-set job {job.id} has no {ranking!r} ranking")


def _ranked_rows(session: Session, *, job_id: int, ranking: str, start: int, stop: int):
    return session.execute(
        select(t.CoresetResult.rank, t.CoresetResult.score, t.Item.id, t.Item.external_id, t.Item.label)
        .join(t.Item, t.Item.id == t.CoresetResult.item_id)
        .where(t.CoresetResult.job_id == job_id, t.CoresetResult.ranking == ranking,
               t.CoresetResult.rank >= start, t.CoresetResult.rank < stop)
        .order_by(t.CoresetResult.rank)
    ).all()


def _ranked_item(row) -> RankedItem:
    infinite = row.score is not None and math.isinf(row.score)
    # JSON has no infinity: +inf goes out as null with the flag set.
    return RankedItem(rank=row.rank, item_id=row.id, external_id=row.external_id, label=row.label,
                      score=None if infinite else row.score, infinite=infinite)


def ranking_count(session: Session, *, job_id: int, ranking: str) -> int:
    return int(session.scalar(
        select(func.count()).select_from(t.CoresetResult)
        .where(t.CoresetResult.job_id == job_id, t.CoresetResult.ranking == ranking)
    ) or 0)


def ranking_page(session: Session, *, job: t.Job, ranking: str, offset: int, limit: int,
                 end: int | None = None) -> dict[str, Any]:
    """Items ``offset .. offset+limit`` of a ranking (or of its first ``end`` items: a subset)."""
    require_ranking(job, ranking)
    total = ranking_count(session, job_id=job.id, ranking=ranking) if end is None else end
    stop = min(total, offset + limit)
    rows = _ranked_rows(session, job_id=job.id, ranking=ranking, start=offset, stop=stop) if offset < stop else []
    return {"job_id": job.id, "ranking": ranking, "total": total, "offset": offset,
            "items": [_ranked_item(r) for r in rows], "next_offset": stop if stop < total else None}


def get_subset(job: t.Job, index: int) -> dict[str, Any]:
    """One of the job's subsets (index into its ascending sizes); 409 until the job succeeded."""
    if job.status != t.JOB_SUCCEEDED:
        raise Conflict(f"core-set job {job.id} is {job.status}; its subsets exist once it has succeeded")
    subsets = (job.result or {}).get("subsets") or []
    if not 0 <= index < len(subsets):
        raise NotFound(f"core-set job {job.id} has {len(subsets)} subset(s); there is no subset {index}")
    return subsets[index]


def subset_page(session: Session, *, job: t.Job, index: int, ranking: str, offset: int, limit: int) -> dict[str, Any]:
    subset = get_subset(job, index)
    page = ranking_page(session, job=job, ranking=ranking, offset=offset, limit=limit, end=int(subset["size"]))
    return {**page, "index": index, "fraction": subset.get("fraction"), "size": int(subset["size"])}


CSV_FIELDS = ["external_id", "item_id", "rank", "score", "label"]


def subset_csv(sessions: sessionmaker, *, job_id: int, ranking: str, size: int) -> Iterator[str]:
    """The subset as CSV, external ids first, in rank order; +inf scores are written ``inf``.

    Streams in pages with its own session: a streamed body outlives the request's session.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_FIELDS)
    with sessions() as session:
        for start in range(0, size, CSV_PAGE):
            for row in _ranked_rows(session, job_id=job_id, ranking=ranking, start=start,
                                    stop=min(size, start + CSV_PAGE)):
                score = "" if row.score is None else ("inf" if math.isinf(row.score) else repr(float(row.score)))
                writer.writerow([row.external_id, row.id, row.rank, score, row.label or ""])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    tail = buffer.getvalue()
    if tail:
        yield tail


# -- compare -------------------------------------------------------------------------------------


def _load_ranking(session: Session, job: t.Job, ranking: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = session.execute(
        select(t.CoresetResult.item_id, t.CoresetResult.rank, t.CoresetResult.score)
        .where(t.CoresetResult.job_id == job.id, t.CoresetResult.ranking == ranking)
        .order_by(t.CoresetResult.item_id)
    ).all()
    ids = np.fromiter((r.item_id for r in rows), dtype=np.int64, count=len(rows))
    ranks = np.fromiter((r.rank for r in rows), dtype=np.int64, count=len(rows))
    scores = np.fromiter((math.nan if r.score is None else r.score for r in rows), dtype=np.float64, count=len(rows))
    return ids, ranks, scores


def compare_rankings(session: Session, *, project_id: int, a: int, a_ranking: str, b: int,
                     b_ranking: str) -> RankingComparison:
    """Spearman's rho between two stored rankings of this project, over the items both ranked."""
    jobs = {}
    for key, job_id, ranking in (("a", a, a_ranking), ("b", b, b_ranking)):
        job = get_coreset_job(session, project_id=project_id, job_id=job_id)
        require_ranking(job, ranking)
        jobs[key] = job
    ids_a, ranks_a, scores_a = _load_ranking(session, jobs["a"], a_ranking)
    ids_b, ranks_b, scores_b = _load_ranking(session, jobs["b"], b_ranking)
    common, in_a, in_b = np.intersect1d(ids_a, ids_b, assume_unique=True, return_indices=True)
    if common.shape[0] < 2:
        raise Unprocessable(f"the two rankings share {common.shape[0]} item(s); a correlation needs at least 2")
    method_a, method_b = jobs["a"].params.get("method", ""), jobs["b"].params.get("method", "")
    key_a, key_b, basis = comparison_keys(method_a, scores_a[in_a], ranks_a[in_a], method_b, scores_b[in_b],
                                          ranks_b[in_b])
    return RankingComparison(
        a=RankingRef(job_id=a, ranking=a_ranking, method=method_a),
        b=RankingRef(job_id=b, ranking=b_ranking, method=method_b),
        items=int(common.shape[0]),
        spearman=spearman_rho(key_a, key_b),
        basis=basis,
    )

"""Core-set selection (DESIGN.md section 6): a proxy trained once over every labeled pool item ranks
them; each requested subset is the top of that one ranking; optionally the target is trained on
each subset, on a random subset of the same size and on the full data, and evaluated.

The rankings, best first:

- ``forgetting_events``: forgetting events counted by the training loop while the proxy trains
  (examples never predicted correctly count +inf and come first), then descending counts;
- ``entropy``: entropy of the trained proxy's predictions (eval mode, un-augmented), highest first;
- ``kcenters``: a seeded random start set (paper: 1,000 points) in draw order, then greedy k-centers
  picks on the proxy's penultimate features until every item is placed;
- ``random``: a seeded permutation (no proxy).

Ties go to the lower item id. Every subset is a prefix of the ranking, so a job's subsets nest.

Crash safety: everything is computed first; one final transaction replaces the job's result rows
and marks it succeeded, so a job re-run after a worker died never writes its results twice.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import delete, insert

from app.db import tables as t
from app.db.session import session_scope
from app.services.coresets import comparison_keys, resolve_subsets, spearman_rho
from worker.jobs import JobContext, mark_finished
from worker.pipelines.dataset import load_inputs, load_project, load_test_inputs
from worker.pipelines.training import fit_learner, save_learner, take
from worker.selection.forgetting import rank_all
from worker.selection.kcenter import k_centers
from worker.selection.random_sampling import random_sample
from worker.selection.uncertainty import entropy, top_k
from worker.training.callbacks import ForgettingTracker

log = logging.getLogger(__name__)

METHODS = ("forgetting_events", "entropy", "kcenters", "random")
INSERT_CHUNK = 10_000
# Architectures whose training exposes no per-example predictions (mirrors the api's rule).
NO_TRAINING_TRACE = frozenset({"fasttext"})


# -- ranking (pure functions of arrays and a trained learner; bench/coreset.py uses them too) ----


@dataclass
class Ranking:
    order: np.ndarray  # item positions, best first (a permutation of range(n))
    scores: np.ndarray  # float64 per position: the method's score; NaN where it has none; +inf allowed

    @property
    def ranks(self) -> np.ndarray:
        ranks = np.empty(self.order.shape[0], dtype=np.int64)
        ranks[self.order] = np.arange(self.order.shape[0])
        return ranks

    def top(self, size: int) -> np.ndarray:
        """The subset of ``size`` items as positions in ascending order (training order must not
        depend on the ranking, so a core-set and a random subset are trained alike)."""
        return np.sort(self.order[:size])


@dataclass
class Selection:
    ranking: Ranking
    learner: Any  # the trained proxy, None for random
    timings: dict[str, float] = field(default_factory=dict)


def rank_with_learner(method: str, learner, inputs, *, counts: np.ndarray | None = None, seed: int = 0,
                      kcenters_initial: int = 1) -> tuple[Ranking, float, float]:
    """Rank ``inputs`` with a trained learner; returns (ranking, inference_s, ranking_s)."""
    n = len(inputs)
    t0 = time.perf_counter()
    if method == "forgetting_events":
        if counts is None:
            raise ValueError("forgetting_events needs the counts recorded while training")
        scores, inference_s = np.asarray(counts, dtype=np.float64), 0.0
        order = rank_all(scores)
    elif method == "entropy":
        scores = entropy(learner.predict_proba(inputs)).astype(np.float64)
        inference_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        order = top_k(scores, n, descending=True)
    elif method == "kcenters":
        features = learner.features(inputs)
        inference_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        order, scores = kcenters_ranking(features, initial=kcenters_initial, seed=seed)
    else:
        raise ValueError(f"method {method!r} does not rank with a model")
    return Ranking(np.asarray(order, dtype=np.int64), scores), inference_s, time.perf_counter() - t0


def kcenters_ranking(features: np.ndarray, *, initial: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The start set (a seeded random draw of ``initial`` items, score NaN) followed by every greedy
    pick (score: its distance to the nearest center when picked)."""
    n = features.shape[0]
    start = random_sample(n, min(initial, n), seed=seed)
    picks = k_centers(features, k=n - start.shape[0], initial=start, seed=seed)
    order = np.concatenate([start, picks.picks]).astype(np.int64)
    scores = np.full(n, np.nan)
    scores[picks.picks] = picks.pick_distances
    return order, scores


def random_ranking(n: int, *, seed: int) -> Ranking:
    return Ranking(random_sample(n, n, seed=seed).astype(np.int64), np.full(n, np.nan))


def baseline_order(n: int, *, seed: int) -> np.ndarray:
    """The random baseline's permutation: a stream of its own, so that it differs from the random
    method's ranking under the same seed."""
    return np.random.default_rng([seed, 1]).permutation(n)


def select_coreset(method: str, *, n: int, inputs, fit: Callable[[ForgettingTracker | None], Any] | None,
                   seed: int, kcenters_initial: int = 1) -> Selection:
    """Train the proxy with ``fit(tracker)`` (except for random) and rank all ``n`` items.

    ``timings``: train_s, inference_s, ranking_s and their sum total_s, the paper's data selection
    runtime.
    """
    if method not in METHODS:
        raise ValueError(f"unknown core-set method {method!r}; expected one of {', '.join(METHODS)}")
    if method == "random":
        t0 = time.perf_counter()
        ranking = random_ranking(n, seed=seed)
        ranking_s = time.perf_counter() - t0
        return Selection(ranking, None, {"train_s": 0.0, "inference_s": 0.0, "ranking_s": ranking_s,
                                         "total_s": ranking_s})
    tracker = ForgettingTracker(n) if method == "forgetting_events" else None
    t0 = time.perf_counter()
    learner = fit(tracker)
    train_s = time.perf_counter() - t0
    ranking, inference_s, ranking_s = rank_with_learner(
        method, learner, inputs, counts=tracker.counts() if tracker is not None else None, seed=seed,
        kcenters_initial=kcenters_initial)
    return Selection(ranking, learner, {"train_s": train_s, "inference_s": inference_s, "ranking_s": ranking_s,
                                        "total_s": train_s + inference_s + ranking_s})


def ranking_correlation(method: str, a: Ranking, b: Ranking) -> float | None:
    """Spearman's rho of two rankings of the same items by one method (the api's compare rule)."""
    key_a, key_b, _ = comparison_keys(method, a.scores, a.ranks, method, b.scores, b.ranks)
    return spearman_rho(key_a, key_b)


# -- the job -------------------------------------------------------------------------------------


class _Stage:
    """A JobContext for one stage of the job: the stage's own progress fraction is mapped onto the
    whole job's, so the progress bar moves once from 0 to 1."""

    def __init__(self, ctx: JobContext, label: str, start: float, width: float):
        self.ctx, self.label, self.start, self.width = ctx, label, start, width
        self.settings = ctx.settings
        self.should_stop = ctx.should_stop

    def progress(self, *, phase: str | None = None, fraction: float | None = None, force: bool = False,
                 **extra: Any) -> None:
        overall = self.start + self.width * min(1.0, max(0.0, fraction or 0.0))
        self.ctx.progress(phase=self.label, fraction=overall, force=force, **extra)


class _Plan:
    """Stages weighted by the number of examples each trains on (a proxy-sized stage counts like a
    target-sized one: only the bar's pace is approximate)."""

    def __init__(self, ctx: JobContext, stages: list[tuple[str, float]]):
        self.ctx = ctx
        total = sum(weight for _, weight in stages) or 1.0
        self.stages: dict[str, _Stage] = {}
        start = 0.0
        for label, weight in stages:
            self.stages[label] = _Stage(ctx, label, start, weight / total)
            start += weight / total

    def begin(self, label: str) -> _Stage:
        self.ctx.check_cancelled()
        stage = self.stages[label]
        stage.progress(fraction=0.0, force=True)
        return stage


def _finite(value: float | None) -> float | None:
    """JSON (the job's result) has no NaN or infinity."""
    return None if value is None or not math.isfinite(value) else float(value)


def run(ctx: JobContext) -> None:
    ctx.progress(phase="loading", fraction=0.0, force=True)
    project, pool, test = load_project(ctx.settings, ctx.project_id)
    items = pool.subset(pool.labeled_mask)  # every labeled pool item, ascending id
    if len(items) < 2:
        raise ValueError(f"project {project.id} has {len(items)} labeled pool item(s); a core-set needs at least 2")
    inputs = load_inputs(ctx.settings, project, items)
    job = _CoresetJob(ctx, project, items, inputs, test, load_test_inputs(ctx.settings, project, test, inputs))
    result, rankings, proxy = job.execute()
    ctx.check_cancelled()
    artifact = save_learner(ctx.settings, proxy) if proxy is not None else None
    _publish(ctx, project.id, items.ids, rankings, result, artifact, job.proxy_spec)


class _CoresetJob:
    """One job's steps over the loaded data: proxy and ranking, then the target trainings."""

    def __init__(self, ctx: JobContext, project, items, inputs, test, test_inputs):
        params = ctx.params
        self.ctx, self.project, self.items, self.inputs = ctx, project, items, inputs
        self.test_labels, self.test_inputs = test.labels, test_inputs
        self.n = len(items)
        self.method = params["method"]
        self.seed = int(params.get("seed") or 0)
        self.kcenters_initial = int(params.get("kcenters_initial") or 1)
        self.proxy_spec, self.target_spec = params.get("proxy"), params.get("target")
        self.train_target = bool(params.get("train_target"))
        self.full_data = self.train_target and bool(params.get("full_data"))
        self.random_baseline = self.train_target and bool(params.get("random_baseline"))
        self.subsets = resolve_subsets(fractions=params.get("fractions") or [], sizes=params.get("sizes") or [],
                                       labeled=self.n)
        self.notes: list[str] = []
        self.plan = _Plan(ctx, self._stages())

    def _stages(self) -> list[tuple[str, float]]:
        stages: list[tuple[str, float]] = []
        if self.method != "random":
            stages += [("training proxy", self.n), ("ranking", 0.05 * self.n)]
        if self.full_data:
            stages.append(("training target on the full data", self.n))
        for entry in self.subsets if self.train_target else []:
            stages.append((f"training target on {entry['size']} selected", entry["size"]))
            if self.random_baseline:
                stages.append((f"training target on {entry['size']} random", entry["size"]))
        return stages

    def fit(self, stage: str, spec: dict[str, Any], positions: np.ndarray | None = None, tracker=None):
        x = self.inputs if positions is None else take(self.inputs, positions)
        y = self.items.labels if positions is None else self.items.labels[positions]
        return fit_learner(self.plan.begin(stage), {"seed": self.seed, **spec}, self.project, x, y, forgetting=tracker)

    def trained_target(self, stage: str, positions: np.ndarray | None, tracker=None) -> tuple[Any, dict[str, Any]]:
        t0 = time.perf_counter()
        learner = self.fit(stage, self.target_spec, positions, tracker)
        size = self.n if positions is None else len(positions)
        return learner, {"size": size, "train_s": time.perf_counter() - t0, **self._metrics(learner)}

    def _metrics(self, learner) -> dict[str, float | None]:
        if self.test_inputs is None:
            return {}
        return {key: _finite(value) for key, value in learner.evaluate(self.test_inputs, self.test_labels).items()}

    def execute(self) -> tuple[dict[str, Any], dict[str, Ranking], Any]:
        # 1. the proxy, trained once over everything, and its ranking
        if self.method == "random":
            selection = select_coreset("random", n=self.n, inputs=self.inputs, fit=None, seed=self.seed)
        else:
            selection = select_coreset(
                self.method, n=self.n, inputs=self.inputs, seed=self.seed, kcenters_initial=self.kcenters_initial,
                fit=lambda tracker: self.fit("training proxy", self.proxy_spec, None, tracker),
            )
            self.plan.begin("ranking")
        rankings = {"proxy": selection.ranking}
        # 2. the target on the full data (with its own ranking), then on each subset and its random twin
        full = self._full_data(rankings) if self.full_data else None
        results = [self._subset(index, entry, selection, full) for index, entry in enumerate(self.subsets)]
        result = {
            "method": self.method,
            "labeled": self.n,
            "subsets": results,
            "selection": {key: float(value) for key, value in selection.timings.items()},
            "proxy_metrics": self._metrics(selection.learner) if selection.learner is not None else {},
            "full": full,
            "rankings": sorted(rankings),
            "spearman_proxy_target": (ranking_correlation(self.method, rankings["proxy"], rankings["target"])
                                      if "target" in rankings else None),
            "notes": self.notes,
        }
        return result, rankings, selection.learner

    def _full_data(self, rankings: dict[str, Ranking]) -> dict[str, Any]:
        trace = self.method == "forgetting_events" and self.target_spec["arch"] not in NO_TRAINING_TRACE
        tracker = ForgettingTracker(self.n) if trace else None
        learner, full = self.trained_target("training target on the full data", None, tracker)
        if self.method == "forgetting_events" and tracker is None:
            self.notes.append(f"no target ranking: {self.target_spec['arch']} cannot count forgetting events")
        elif self.method != "random":  # a random permutation has no target counterpart
            rankings["target"], _, _ = rank_with_learner(
                self.method, learner, self.inputs, counts=tracker.counts() if tracker is not None else None,
                seed=self.seed, kcenters_initial=self.kcenters_initial)
        return full

    def _subset(self, index: int, entry: dict[str, Any], selection: Selection, full: dict | None) -> dict[str, Any]:
        size = int(entry["size"])
        out: dict[str, Any] = {"index": index, "fraction": entry["fraction"], "size": size}
        if not self.train_target:
            return out
        _, out["target"] = self.trained_target(f"training target on {size} selected", selection.ranking.top(size))
        out["end_to_end_s"] = selection.timings["total_s"] + out["target"]["train_s"]
        if full is not None and out["end_to_end_s"] > 0:
            out["speedup"] = _finite(full["train_s"] / out["end_to_end_s"])
        if self.random_baseline:
            positions = np.sort(baseline_order(self.n, seed=self.seed)[:size])
            _, out["random"] = self.trained_target(f"training target on {size} random", positions)
        return out


def _publish(ctx: JobContext, project_id: int, item_ids: np.ndarray, rankings: dict[str, Ranking],
             result: dict[str, Any], artifact: tuple[str, int] | None, proxy_spec: dict[str, Any] | None) -> None:
    """Result rows, proxy artifact and job status in one transaction (delete first: a re-run after
    a crash that did commit nothing starts clean either way)."""
    with session_scope(ctx.settings.resolved_database_url) as session:
        session.execute(delete(t.CoresetResult).where(t.CoresetResult.job_id == ctx.job_id))
        for name, ranking in rankings.items():
            ranks = ranking.ranks
            rows = [
                {"job_id": ctx.job_id, "item_id": int(item_ids[i]), "ranking": name, "rank": int(ranks[i]),
                 # NaN (no score) is NULL; +inf (never learned) is stored as is: both databases take it.
                 "score": None if math.isnan(score) else float(score)}
                for i, score in enumerate(ranking.scores.tolist())
            ]
            for start in range(0, len(rows), INSERT_CHUNK):
                session.execute(insert(t.CoresetResult), rows[start:start + INSERT_CHUNK])
        if artifact is not None:
            session.add(t.ModelArtifact(project_id=project_id, job_id=ctx.job_id, role="proxy",
                                        arch=proxy_spec["arch"], path=artifact[0], size_bytes=artifact[1],
                                        metrics=result["proxy_metrics"]))
        mark_finished(session, ctx.job_id, status=t.JOB_SUCCEEDED, result=result)
    log.info("core-set job %s (%s) over %s items: %s", ctx.job_id, result["method"], result["labeled"],
             [(s["size"], (s.get("target") or {}).get("accuracy")) for s in result["subsets"]])

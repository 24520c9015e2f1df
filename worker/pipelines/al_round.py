"""One active-learning round (DESIGN.md sections 5 and 6): a fresh proxy trained on every label,
the unlabeled pool scored with the project's strategy, the next batch written as one transaction.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from app.db import tables as t
from app.db.session import session_scope
from app.services.label_studio.predictions import store_predictions
from app.services.rounds import open_round
from app.services.schedule import round_size
from worker.jobs import JobContext, mark_finished
from worker.pipelines.dataset import load_inputs, load_project, load_test_inputs
from worker.pipelines.training import fit_learner, save_learner, take

log = logging.getLogger(__name__)


def run(ctx: JobContext) -> None:
    round_index = int(ctx.params["round_index"])
    ctx.progress(phase="loading", fraction=0.0, force=True)
    project, pool, test = load_project(ctx.settings, ctx.project_id)
    labeled = pool.labeled_mask
    k = round_size(project.schedule, round_index=round_index, pool_size=len(pool), labeled=int(labeled.sum()))
    if project.strategy == "random":
        # Random selection needs no model: the round costs (almost) nothing, as in the paper.
        return _publish_random(ctx, project, pool, round_index, k)
    if labeled.sum() == 0:
        raise ValueError("no labeled pool items to train the proxy on")
    pool_inputs = load_inputs(ctx.settings, project, pool)
    test_inputs = load_test_inputs(ctx.settings, project, test, pool_inputs)

    # Train a fresh proxy on all labels (never warm-started: the paper retrains from scratch).
    spec = {"seed": project.seed + round_index, **project.proxy}
    ctx.progress(phase="training", fraction=0.0, force=True)
    t0 = time.perf_counter()
    learner = fit_learner(ctx, spec, project, take(pool_inputs, labeled), pool.labels[labeled])
    train_s = time.perf_counter() - t0

    # Score the whole pool in eval mode on un-augmented inputs; k-centers needs the labeled points'
    # features as its initial centers, the uncertainty strategies only the unlabeled ones'.
    ctx.progress(phase="scoring", fraction=0.0, force=True)
    t0 = time.perf_counter()
    if project.strategy == "kcenters":
        probs, features = learner.probs_and_features(pool_inputs)
    else:
        probs, features = learner.predict_proba(pool_inputs), None
    inference_s = time.perf_counter() - t0

    ctx.progress(phase="selecting", fraction=0.0, force=True)
    t0 = time.perf_counter()
    positions, scores = _select(project, k=k, probs=probs, features=features, labeled=labeled, seed=project.seed + round_index)
    ranking_s = time.perf_counter() - t0

    # The paper's data-selection runtime: training the proxy, scoring the pool, ranking. Loading
    # (decoding happens once per pool, in the cache) and evaluating the proxy are reported apart.
    timings = {"train_s": train_s, "inference_s": inference_s, "ranking_s": ranking_s,
               "total_s": train_s + inference_s + ranking_s}
    picks = [(int(pool.ids[p]), None if s is None else float(s)) for p, s in zip(positions, scores)]
    metrics = {"labeled": int(labeled.sum())}
    if test_inputs is not None:
        ctx.progress(phase="evaluating", force=True)
        metrics.update({f"proxy_{key}": value for key, value in learner.evaluate(test_inputs, test.labels).items()})
    ctx.check_cancelled()
    artifact = save_learner(ctx.settings, learner)
    # The proxy's class and confidence for the whole pool, published with the round: annotation
    # tools read them (Label Studio's pre-annotations and its least-confidence order).
    predictions = (pool.ids, probs.argmax(axis=1), probs.max(axis=1))
    _publish(ctx, project, round_index, picks, timings, metrics, artifact, predictions)


def _publish_random(ctx: JobContext, project, pool, round_index: int, k: int) -> None:
    t0 = time.perf_counter()
    positions, scores = _select(project, k=k, probs=None, features=None, labeled=pool.labeled_mask,
                                seed=project.seed + round_index)
    ranking_s = time.perf_counter() - t0
    picks = [(int(pool.ids[p]), None if s is None else float(s)) for p, s in zip(positions, scores)]
    timings = {"train_s": 0.0, "inference_s": 0.0, "ranking_s": ranking_s, "total_s": ranking_s}
    _publish(ctx, project, round_index, picks, timings, {"labeled": int(pool.labeled_mask.sum())}, None)


def _publish(ctx: JobContext, project, round_index: int, picks, timings: dict, metrics: dict,
             artifact: tuple[str, int] | None, predictions=None) -> None:
    """Queries, proxy artifact, pool predictions and job status in one transaction."""
    with session_scope(ctx.settings.resolved_database_url) as session:
        # Publishing refuses a round that is not "selecting" any more, so a job that runs twice
        # (re-delivered after a crash) never writes the queries twice.
        open_round(
            session,
            project_id=project.id,
            round_index=round_index,
            picks=picks,
            timings=timings,
            metrics=metrics,
            selector={"role": "proxy", **project.proxy},
        )
        if predictions is not None:
            item_ids, class_indices, confidences = predictions
            store_predictions(session, project_id=project.id, round_index=round_index, item_ids=item_ids,
                              class_indices=class_indices, confidences=confidences)
        if artifact is not None:
            session.add(
                t.ModelArtifact(
                    project_id=project.id, job_id=ctx.job_id, role="proxy", arch=project.proxy["arch"],
                    round_index=round_index, path=artifact[0], size_bytes=artifact[1], metrics=metrics,
                )
            )
        mark_finished(
            session, ctx.job_id, status=t.JOB_SUCCEEDED,
            result={"round_index": round_index, "selected": len(picks), **timings, **metrics},
        )
    log.info("round %s of project %s: %s items selected in %.2fs", round_index, project.id, len(picks),
             timings["total_s"])


def _select(project, *, k, probs, features, labeled, seed):
    from worker.selection import select

    indices, scores = select(
        project.strategy, k=k, probs=probs, features=features, labeled_mask=labeled, seed=seed
    )
    indices = np.asarray(indices, dtype=np.int64)
    # Random picks have no score (NaN) and a first k-centers pick from nothing scores inf: neither
    # survives JSON, so they are stored as NULL.
    scores = [None] * len(indices) if scores is None else [
        float(s) if np.isfinite(s) else None for s in np.asarray(scores, dtype=np.float64)
    ]
    if np.any(labeled[indices]):
        raise AssertionError("selection returned an already labeled item")
    return indices, scores

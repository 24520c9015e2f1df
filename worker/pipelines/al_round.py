"""One active-learning round (DESIGN.md sections 5 and 6): a fresh proxy trained on every label,
the unlabeled pool scored with the project's strategy, the next batch written as one transaction.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from app.db import tables as t
from app.db.session import session_scope
from app.services.rounds import open_round
from app.services.schedule import round_size
from worker.jobs import JobContext, mark_finished
from worker.pipelines.dataset import load_inputs, load_project, load_test_inputs
from worker.pipelines.training import fit_learner, save_learner, take

log = logging.getLogger(__name__)


def run(ctx: JobContext) -> None:
    round_index = int(ctx.params["round_index"])
    started = time.perf_counter()
    ctx.progress(phase="loading", fraction=0.0, force=True)
    project, pool, test = load_project(ctx.settings, ctx.project_id)
    labeled = pool.labeled_mask
    if labeled.sum() == 0:
        raise ValueError("no labeled pool items to train the proxy on")
    k = round_size(project.schedule, round_index=round_index, pool_size=len(pool), labeled=int(labeled.sum()))
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
    needs_features = project.strategy == "kcenters"
    if needs_features:
        probs, features = learner.probs_and_features(pool_inputs)
    elif project.strategy == "random":
        probs, features = None, None
    else:
        probs, features = learner.predict_proba(pool_inputs), None
    inference_s = time.perf_counter() - t0

    ctx.progress(phase="selecting", fraction=0.0, force=True)
    t0 = time.perf_counter()
    positions, scores = _select(project, k=k, probs=probs, features=features, labeled=labeled, seed=project.seed + round_index)
    ranking_s = time.perf_counter() - t0

    # The round's data-selection runtime ends here; evaluating the proxy is reporting, not selection.
    timings = {"train_s": train_s, "inference_s": inference_s, "ranking_s": ranking_s}
    timings["total_s"] = time.perf_counter() - started
    picks = [(int(pool.ids[p]), None if s is None else float(s)) for p, s in zip(positions, scores)]
    metrics = {"labeled": int(labeled.sum())}
    if test_inputs is not None:
        ctx.progress(phase="evaluating", force=True)
        metrics.update({f"proxy_{key}": value for key, value in learner.evaluate(test_inputs, test.labels).items()})
    ctx.check_cancelled()
    artifact_key, artifact_size = save_learner(ctx.settings, learner)
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
        session.add(
            t.ModelArtifact(
                project_id=project.id, job_id=ctx.job_id, role="proxy", arch=project.proxy["arch"],
                round_index=round_index, path=artifact_key, size_bytes=artifact_size, metrics=metrics,
            )
        )
        mark_finished(
            session, ctx.job_id, status=t.JOB_SUCCEEDED,
            result={"round_index": round_index, "selected": len(picks), **timings, **metrics},
        )
    log.info("round %s of project %s: %s items selected in %.2fs", round_index, project.id, len(picks), timings["total_s"])


def _select(project, *, k, probs, features, labeled, seed):
    from worker.selection import select

    indices, scores = select(
        project.strategy, k=k, probs=probs, features=features, labeled_mask=labeled, seed=seed
    )
    indices = np.asarray(indices, dtype=np.int64)
    scores = [None] * len(indices) if scores is None else list(np.asarray(scores, dtype=np.float64))
    if np.any(labeled[indices]):
        raise AssertionError("selection returned an already labeled item")
    return indices, scores

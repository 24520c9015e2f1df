"""Train the target model once on every label, evaluate it on the test split, store it, complete
the project (DESIGN.md section 5, step 5)."""

from __future__ import annotations

import logging
import time

from app.db import tables as t
from app.db.base import utcnow
from app.db.session import session_scope
from worker.jobs import JobContext, mark_finished
from worker.pipelines.dataset import load_inputs, load_project, load_test_inputs
from worker.pipelines.training import fit_learner, save_learner, take

log = logging.getLogger(__name__)


def run(ctx: JobContext) -> None:
    ctx.progress(phase="loading", fraction=0.0, force=True)
    project, pool, test = load_project(ctx.settings, ctx.project_id)
    labeled = pool.labeled_mask
    if labeled.sum() == 0:
        raise ValueError("no labeled pool items to train the target on")
    pool_inputs = load_inputs(ctx.settings, project, pool)
    test_inputs = load_test_inputs(ctx.settings, project, test, pool_inputs)
    spec = {"seed": project.seed, **project.target}
    t0 = time.perf_counter()
    learner = fit_learner(ctx, spec, project, take(pool_inputs, labeled), pool.labels[labeled])
    train_s = time.perf_counter() - t0
    metrics = {"labeled": int(labeled.sum()), "train_s": train_s}
    if test_inputs is not None:
        ctx.progress(phase="evaluating", force=True)
        metrics.update({f"target_{key}": value for key, value in learner.evaluate(test_inputs, test.labels).items()})
    ctx.check_cancelled()
    key, size = save_learner(ctx.settings, learner)
    with session_scope(ctx.settings.resolved_database_url) as session:
        session.add(
            t.ModelArtifact(project_id=project.id, job_id=ctx.job_id, role="target", arch=project.target["arch"],
                            path=key, size_bytes=size, metrics=metrics)
        )
        db_project = session.get(t.Project, project.id, with_for_update=True)
        db_project.status = t.PROJECT_COMPLETED
        db_project.meta = {**(db_project.meta or {}), "completed_at": utcnow().isoformat()}
        mark_finished(session, ctx.job_id, status=t.JOB_SUCCEEDED, result=metrics)
    log.info("target of project %s trained: %s", project.id, metrics)

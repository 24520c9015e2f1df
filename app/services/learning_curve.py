"""The learning curve of a project: per round the labels the proxy was trained on, its test accuracy,
the selection runtime and its running sum (the paper's "data selection runtime"), and the target's
final accuracy."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import tables as t


def learning_curve(session: Session, *, project: t.Project) -> dict[str, Any]:
    rounds = session.scalars(select(t.Round).where(t.Round.project_id == project.id).order_by(t.Round.index)).all()
    points = []
    cumulative = 0.0
    for rnd in rounds:
        if rnd.total_s is not None:
            cumulative += rnd.total_s
        metrics = rnd.metrics or {}
        points.append(
            {
                "round": rnd.index,
                "status": rnd.status,
                "strategy": rnd.strategy,
                "size": rnd.size,
                "labeled_at_start": rnd.labeled_at_start,
                "proxy_trained_on": metrics.get("labeled"),
                "proxy_accuracy": metrics.get("proxy_accuracy"),
                "train_s": rnd.train_s,
                "inference_s": rnd.inference_s,
                "ranking_s": rnd.ranking_s,
                "selection_s": rnd.total_s,
                "cumulative_selection_s": cumulative if rnd.total_s is not None or rnd.index == 0 else None,
            }
        )
    target = session.scalars(
        select(t.ModelArtifact)
        .where(t.ModelArtifact.project_id == project.id, t.ModelArtifact.role == "target")
        .order_by(t.ModelArtifact.id.desc())
    ).first()
    return {
        "project_id": project.id,
        "status": project.status,
        "proxy": project.proxy,
        "target": project.target,
        "strategy": project.strategy,
        "rounds": points,
        "data_selection_s": cumulative,
        "target_result": None
        if target is None
        else {
            "labeled": target.metrics.get("labeled"),
            "accuracy": target.metrics.get("target_accuracy"),
            "train_s": target.metrics.get("train_s"),
            "artifact_id": target.id,
        },
    }

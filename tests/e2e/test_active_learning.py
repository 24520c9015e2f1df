"""The whole loop, for real: labels over HTTP, proxy retrained by a worker after every batch, the
target trained at the budget, the learning curve complete. Through Celery (Redis + PostgreSQL +
`celery worker` subprocess) and in embedded mode (SQLite + in-process worker)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.config import Settings
from app.db import tables as t
from app.db.session import session_scope
from svp.server import running_service
from svp.simulation import Experiment, run_experiment
from tests.e2e.conftest import admin_secret

pytestmark = pytest.mark.slow

SCHEDULE = {"initial": 30, "rounds": [30], "budget": 120}  # rounds of 30, 30, 30, 30
PROXY = {"arch": "mlp", "epochs": 15, "batch_size": 32}
TARGET = {"arch": "tinycnn", "epochs": 15, "batch_size": 32}


def check_complete_run(settings: Settings, outcome, dataset) -> None:
    curve = outcome.curve
    assert curve["status"] == "completed", curve
    rounds = curve["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    assert [r["size"] for r in rounds] == [30, 30, 30, 30]
    assert all(r["status"] == "completed" for r in rounds)
    # Rounds 1.. were selected by a proxy trained on every label so far, evaluated on the test split.
    for r in rounds[1:]:
        assert r["proxy_trained_on"] == r["round"] * 30
        assert r["selection_s"] > 0 and r["train_s"] > 0
        assert 0.0 <= r["proxy_accuracy"] <= 1.0
    assert curve["data_selection_s"] == pytest.approx(sum(r["selection_s"] for r in rounds[1:]))
    target = curve["target_result"]
    assert target["labeled"] == 120
    assert target["accuracy"] > 0.3  # ten classes: chance is 0.1
    with session_scope(settings.resolved_database_url) as session:
        queried = session.scalars(select(t.Query.item_id)).all()
        assert len(queried) == len(set(queried)) == 120  # no item asked twice
        labeled = session.scalar(
            select(func.count()).select_from(t.Item).where(t.Item.split == "pool", t.Item.label.is_not(None))
        )
        assert labeled == 120
        jobs = session.scalars(select(t.Job).order_by(t.Job.id)).all()
        assert [j.type for j in jobs] == ["select_round"] * 3 + ["train_target"]
        assert all(j.status == "succeeded" for j in jobs)
        assert session.scalar(select(func.count()).select_from(t.ModelArtifact).where(t.ModelArtifact.role == "target")) == 1
    assert outcome.labels_sent == 120
    assert not outcome.errors


def selected_external_ids(settings: Settings) -> list[list[str]]:
    """Each round's queries as external ids, in rank order (comparable across databases)."""
    with session_scope(settings.resolved_database_url) as session:
        rows = session.execute(
            select(t.Query.round_index, t.Item.external_id)
            .join(t.Item, t.Item.id == t.Query.item_id)
            .order_by(t.Query.round_index, t.Query.rank)
        ).all()
    rounds: dict[int, list[str]] = {}
    for index, external_id in rows:
        rounds.setdefault(index, []).append(external_id)
    return [rounds[i] for i in sorted(rounds)]


def test_celery_worker_runs_the_whole_loop_with_k_centers(celery_settings, start_worker, digits):
    start_worker()
    with running_service(celery_settings) as base_url:
        outcome = run_experiment(
            base_url, admin_secret(celery_settings), digits,
            Experiment("e2e-kcenters", PROXY, TARGET, "kcenters", SCHEDULE, seed=1), timeout_s=300,
        )
    check_complete_run(celery_settings, outcome, digits)


def test_celery_and_embedded_run_the_whole_loop_with_the_same_selections(celery_settings, start_worker, digits, tmp_path):
    experiment = Experiment("e2e-least-confidence", PROXY, TARGET, "least_confidence", SCHEDULE, seed=1)
    start_worker()
    with running_service(celery_settings) as base_url:
        through_celery = run_experiment(base_url, admin_secret(celery_settings), digits, experiment, timeout_s=300)
    check_complete_run(celery_settings, through_celery, digits)

    embedded = Settings(data_dir=tmp_path / "embedded", database_url=None, broker_url=None, torch_threads=1,
                        _env_file=None)
    with running_service(embedded) as base_url:
        in_process = run_experiment(base_url, admin_secret(embedded), digits, experiment, timeout_s=300)
    check_complete_run(embedded, in_process, digits)

    # The same task code on the same labels and seeds: the same items asked in the same order.
    assert selected_external_ids(embedded) == selected_external_ids(celery_settings)
    assert in_process.target_accuracy == pytest.approx(through_celery.target_accuracy)

"""``svp demo``: the whole active-learning loop over HTTP on scikit-learn's bundled digits.

Three projects side by side on the embedded service (SQLite + in-process worker): SVP (an MLP
proxy selects, a pre-activation ResNet20 target is trained at the budget), the traditional baseline (the target
itself selects) and random selection. Simulated annotators label what the service asks for.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.config import Settings
from app.db.migrate import upgrade
from app.db.session import session_scope
from app.services.keys import create_api_key
from svp.server import running_service
from svp.simulation import Dataset, Experiment, Outcome, run_experiment

log = logging.getLogger(__name__)

SCHEDULE = {"initial": 0.02, "rounds": [0.08, 0.10], "budget": 0.5}  # the paper's schedule
PROXY = {"arch": "mlp", "epochs": 15, "batch_size": 64}
TARGET = {"arch": "preact20", "epochs": 15, "batch_size": 64}


def digits_dataset(seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(np.rint(digits.images * 255.0 / 16.0), 0, 255).astype(np.uint8)  # 8×8 grey
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = int(len(images) * test_fraction)
    test, pool = order[:n_test], order[n_test:]
    return Dataset(
        name="digits",
        modality="image",
        classes=[str(c) for c in range(10)],
        pool_x=images[pool],
        pool_y=digits.target[pool].astype(np.int64),
        test_x=images[test],
        test_y=digits.target[test].astype(np.int64),
    )


def experiments(seed: int = 0) -> list[Experiment]:
    return [
        Experiment("svp", proxy=PROXY, target=TARGET, strategy="least_confidence", schedule=SCHEDULE, seed=seed),
        Experiment("baseline", proxy=TARGET, target=TARGET, strategy="least_confidence", schedule=SCHEDULE, seed=seed),
        Experiment("random", proxy=PROXY, target=TARGET, strategy="random", schedule=SCHEDULE, seed=seed),
    ]


def format_table(outcomes: list[Outcome]) -> str:
    baseline = next((o for o in outcomes if o.experiment.name == "baseline"), None)
    rows = [("project", "selector", "strategy", "labels", "target error", "selection s", "speed-up")]
    for o in outcomes:
        accuracy = o.target_accuracy
        labeled = (o.curve.get("target_result") or {}).get("labeled")
        speedup = (
            f"{baseline.selection_s / o.selection_s:.1f}×"
            if baseline and o.selection_s > 0 and o.experiment.strategy != "random"
            else "-"
        )
        rows.append(
            (
                o.experiment.name,
                o.experiment.proxy["arch"] if o.experiment.strategy != "random" else "-",
                o.experiment.strategy,
                str(labeled),
                "-" if accuracy is None else f"{100 * (1 - accuracy):.1f}%",
                f"{o.selection_s:.1f}",
                speedup,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_learning_curves(outcomes: list[Outcome], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for o in outcomes:
        points = [p for p in o.curve["rounds"] if p.get("proxy_accuracy") is not None]
        if points:
            left.plot([p["proxy_trained_on"] for p in points], [1 - p["proxy_accuracy"] for p in points],
                      marker="o", label=f"{o.experiment.name}: selector ({o.experiment.proxy['arch']}) error")
        target = o.curve.get("target_result") or {}
        if target.get("accuracy") is not None:
            left.scatter([target["labeled"]], [1 - target["accuracy"]], marker="*", s=160,
                         label=f"{o.experiment.name}: target error")
        timed = [p for p in o.curve["rounds"] if p.get("selection_s") is not None]
        if timed:
            right.plot([p["round"] for p in timed], np.cumsum([p["selection_s"] for p in timed]), marker="o",
                       label=o.experiment.name)
    left.set_xlabel("labeled pool items")
    left.set_ylabel("test error")
    left.set_title("Learning curves (digits)")
    left.legend(fontsize=7)
    right.set_xlabel("round")
    right.set_ylabel("cumulative data-selection seconds")
    right.set_title("Data-selection runtime")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_demo(data_dir: Path = Path("svp-data/demo"), png: Path = Path("svp-demo-learning-curve.png"), seed: int = 0) -> list[Outcome]:
    data_dir = data_dir / time.strftime("%Y%m%d-%H%M%S")
    # One torch thread: the models are tiny (more threads only spin against each other), and the
    # api and the simulated annotators need the other core.
    settings = Settings(data_dir=data_dir, database_url=None, broker_url=None, torch_threads=1, _env_file=None)
    upgrade(settings.resolved_database_url)
    with session_scope(settings.resolved_database_url) as session:
        _, admin_key = create_api_key(session, role="admin", name="demo")
    dataset = digits_dataset(seed)
    print(f"digits: {len(dataset.pool_y)} pool images, {len(dataset.test_y)} test images; "
          f"schedule {SCHEDULE}; service data in {data_dir}", flush=True)
    last: dict[str, str] = {}

    def on_status(name: str, status: dict[str, Any]) -> None:
        line = f"  {name:<9} round {status.get('current_round')}  {status.get('status'):<16} labeled {status.get('counts', {}).get('labeled')}"
        if last.get(name) != line:
            last[name] = line
            print(line, flush=True)

    outcomes = []
    with running_service(settings) as base_url:
        for experiment in experiments(seed):
            print(f"{experiment.name}: selector {experiment.proxy['arch']}, strategy {experiment.strategy}, "
                  f"target {experiment.target['arch']}", flush=True)
            outcomes.append(run_experiment(base_url, admin_key, dataset, experiment, on_status=on_status))
    print()
    print(format_table(outcomes))
    plot_learning_curves(outcomes, png)
    print(f"\nlearning curves written to {png}")
    return outcomes


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    run_demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``svp`` command: the api's commands (db, keys, serve) plus those that need the worker too
(demo, simulate, up)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from app.cli import add_api_commands
from app.config import Settings
from svp.coreset_cli import add_coreset_command


def _demo(args: argparse.Namespace) -> int:
    from svp.demo import run_demo

    run_demo(data_dir=Path(args.data_dir), png=Path(args.png), seed=args.seed)
    return 0


def _spec(arch: str, epochs: int | None, batch_size: int | None) -> dict:
    spec: dict = {"arch": arch}
    if epochs:
        spec["epochs"] = epochs
    if batch_size:
        spec["batch_size"] = batch_size
    return spec


def _number(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def _simulate(args: argparse.Namespace) -> int:
    from svp.datasets import load_dataset
    from svp.demo import format_table, plot_learning_curves
    from svp.simulation import Experiment, run_experiment

    dataset = load_dataset(Path(args.data), test_fraction=args.test_fraction, seed=args.seed,
                           pool_limit=args.pool_limit, test_limit=args.test_limit)
    schedule = {"initial": _number(args.initial), "rounds": [_number(r) for r in args.rounds.split(",")],
                "budget": _number(args.budget)}
    proxy = _spec(args.proxy, args.proxy_epochs, args.batch_size)
    target = _spec(args.target, args.target_epochs, args.batch_size)
    runs = [Experiment("svp", proxy, target, args.strategy, schedule, args.seed)]
    if "baseline" in args.compare:
        runs.append(Experiment("baseline", target, target, args.strategy, schedule, args.seed))
    if "random" in args.compare:
        runs.append(Experiment("random", proxy, target, "random", schedule, args.seed))
    print(f"{dataset.name}: {len(dataset.pool_y)} pool, {len(dataset.test_y)} test, {len(dataset.classes)} classes; "
          f"schedule {json.dumps(schedule)}", flush=True)

    def execute(base_url: str, key: str) -> list:
        outcomes = []
        for run in runs:
            print(f"{run.name}: selector {run.proxy['arch']} ({run.strategy}), target {run.target['arch']}", flush=True)
            outcomes.append(run_experiment(base_url, key, dataset, run, annotators=args.annotators))
        return outcomes

    if args.url:
        if not args.key:
            print("--url needs --key (an admin API key)", file=sys.stderr)
            return 2
        outcomes = execute(args.url, args.key)
    else:
        from app.db.migrate import upgrade
        from app.db.session import session_scope
        from app.services.keys import create_api_key
        from svp.server import running_service

        settings = Settings(data_dir=Path(args.data_dir), broker_url=None, _env_file=None)
        upgrade(settings.resolved_database_url)
        with session_scope(settings.resolved_database_url) as session:
            _, key = create_api_key(session, role="admin", name="simulate")
        with running_service(settings) as base_url:
            outcomes = execute(base_url, key)
    print()
    print(format_table(outcomes))
    if args.png:
        plot_learning_curves(outcomes, Path(args.png))
        print(f"\nlearning curves written to {args.png}")
    return 0


def _up(args: argparse.Namespace) -> int:
    from svp.native import run_native

    return run_native(Settings(), workers=args.workers, host=args.host, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="svp", description="SVP labeling service (Selection via Proxy)")
    sub = parser.add_subparsers(dest="command", required=True)
    add_api_commands(sub)

    demo = sub.add_parser("demo", help="the whole loop on scikit-learn's digits: SVP vs baseline vs random")
    demo.add_argument("--data-dir", default="svp-data/demo")
    demo.add_argument("--png", default="svp-demo-learning-curve.png")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    sim = sub.add_parser("simulate", help="simulate labeling your own labeled dataset to choose a proxy")
    sim.add_argument("data", help="an image folder (class/file.png), a .npz (x, y) or a .jsonl(.gz) of {text, label}")
    sim.add_argument("--proxy", default="mlp")
    sim.add_argument("--target", default="tinycnn")
    sim.add_argument("--proxy-epochs", type=int, default=None)
    sim.add_argument("--target-epochs", type=int, default=None)
    sim.add_argument("--batch-size", type=int, default=None)
    sim.add_argument("--strategy", default="least_confidence",
                     choices=["least_confidence", "margin", "entropy", "kcenters", "random"])
    sim.add_argument("--initial", default="0.02", help="round 0 size: a fraction (0.02) or a count (100)")
    sim.add_argument("--rounds", default="0.08,0.10", help="sizes of rounds 1, 2, ... (the last repeats)")
    sim.add_argument("--budget", default="0.5", help="labels at which the target is trained")
    sim.add_argument("--compare", default="baseline,random", help="also run: baseline (target selects), random")
    sim.add_argument("--test-fraction", type=float, default=0.2)
    sim.add_argument("--pool-limit", type=int, default=None)
    sim.add_argument("--test-limit", type=int, default=None)
    sim.add_argument("--annotators", type=int, default=2)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--png", default="svp-simulation.png")
    sim.add_argument("--data-dir", default="svp-data/simulate")
    sim.add_argument("--url", default=None, help="run against this service instead of an embedded one")
    sim.add_argument("--key", default=None, help="admin API key for --url")
    sim.set_defaults(func=_simulate)

    up = sub.add_parser("up", help="api + Celery workers on the local PostgreSQL and Redis (no Docker)")
    up.add_argument("--workers", type=int, default=1)
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.set_defaults(func=_up)

    add_coreset_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

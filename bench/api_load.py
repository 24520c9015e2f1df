"""API load benchmark: many annotators leasing and labeling against one api process on PostgreSQL.

It creates a fresh PostgreSQL database (dropped at the end), a project with ``--items`` pool items
(bulk-inserted), starts one uvicorn process (one worker, no job dispatcher), starts the project
through the API with a round 0 large enough for the whole run, then runs each phase: N annotator
threads loop ``GET queries/next?limit=1`` + ``POST labels`` (waiting a think time between items)
for ``--duration`` seconds. It reports p50/p95/p99 latency of both calls and labels/s per phase,
prints a table, and rewrites its section of docs/benchmarks.md.

    .venv/bin/python bench/api_load.py          # 100k items; phases 50:0 (saturating), 50:2 (paced), 1:0
    .venv/bin/python bench/api_load.py --items 20000 --phases 50:0 --duration 10 --no-docs

The load generator runs in this process (threads, stdlib keep-alive HTTP to keep its own CPU
cost low) on the same machine as the server and the database, so all three share the CPUs.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, insert, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.db import tables as t  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from app.db.session import get_engine, session_scope  # noqa: E402
from app.services.keys import create_api_key  # noqa: E402
from bench._common import machine, write_section  # noqa: E402

log = logging.getLogger("bench.api_load")

PG_ADMIN_URL = os.environ.get("SVP_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
CLASSES = ["negative", "positive"]
GOALS = {"next_p99_ms": 25.0, "labels_per_s": 500.0}


@dataclass
class Samples:
    next_s: list[float] = field(default_factory=list)
    label_s: list[float] = field(default_factory=list)
    labels: int = 0
    empty: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_url(name: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def seed_project(url: str, items: int, initial: float) -> int:
    """A draft text project with ``items`` pool items, inserted in batches."""
    with session_scope(url) as session:
        project = t.Project(
            name=f"bench-{uuid.uuid4().hex[:8]}", modality="text", classes=CLASSES,
            proxy={"arch": "fasttext"}, target={"arch": "fasttext"}, strategy="least_confidence",
            schedule={"initial": initial, "rounds": [0.1], "budget": 0.9}, seed=0, lease_seconds=600,
        )
        session.add(project)
        session.flush()
        pid = project.id
    engine = get_engine(url)
    batch = 10_000
    for start in range(0, items, batch):
        rows = []
        for i in range(start, min(items, start + batch)):
            body = f"review {i}: the product was {'good' if i % 2 else 'bad'} and arrived on day {i % 31}"
            rows.append({
                "project_id": pid, "external_id": f"r{i}", "split": "pool", "content_type": "text/plain",
                "content_sha256": hashlib.sha256(body.encode()).hexdigest(), "text": body,
                "size_bytes": len(body), "meta": {},
            })
        with engine.begin() as conn:
            conn.execute(insert(t.Item.__table__), rows)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return pid


class Http:
    """A keep-alive connection with the JSON calls the annotators make."""

    def __init__(self, port: int, key: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        payload = None if body is None else json.dumps(body)
        self.conn.request(method, path, body=payload, headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data else {})


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the api process exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the api did not become ready")


def annotate(port: int, key: str, pid: int, think: float, stop: threading.Event, measuring: threading.Event,
             out: Samples) -> None:
    """One annotator: lease one item, label it, wait ``think`` seconds (a person reading), repeat."""
    client = Http(port, key)
    rng = random.Random(key)
    next_path = f"/projects/{pid}/queries/next?limit=1"
    label_path = f"/projects/{pid}/labels"
    while not stop.is_set():
        try:
            t0 = time.perf_counter()
            status, body = client.call("GET", next_path)
            t1 = time.perf_counter()
            if status != 200:
                out.errors.append(f"next {status}: {body}")
                continue
            on = measuring.is_set()
            if on:
                out.next_s.append(t1 - t0)
            if not body["items"]:
                out.empty[body["status"]] = out.empty.get(body["status"], 0) + 1
                time.sleep(0.05)
                continue
            item = body["items"][0]
            t2 = time.perf_counter()
            status, body = client.call("POST", label_path, {"item_id": item["item_id"], "label": rng.choice(CLASSES)})
            t3 = time.perf_counter()
            if status != 200:
                out.errors.append(f"label {status}: {body}")
                continue
            if on and measuring.is_set():
                out.label_s.append(t3 - t2)
                out.labels += 1
            if think:
                stop.wait(think * rng.uniform(0.5, 1.5))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            out.errors.append(repr(exc))
            client = Http(port, key)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    ms = np.asarray(values) * 1000
    return {f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)}


def phase(port: int, keys: list[str], pid: int, think: float, warmup: float, duration: float) -> dict:
    """One annotator per key for ``warmup + duration`` seconds; only the last ``duration`` is measured."""
    stop, measuring = threading.Event(), threading.Event()
    samples = [Samples() for _ in keys]
    threads = [
        threading.Thread(target=annotate, args=(port, key, pid, think, stop, measuring, s), daemon=True)
        for key, s in zip(keys, samples)
    ]
    for thread in threads:
        thread.start()
    time.sleep(warmup)
    load_before = os.getloadavg()[0]
    measuring.set()
    t0 = time.perf_counter()
    time.sleep(duration)
    measuring.clear()
    window = time.perf_counter() - t0
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    next_s = [x for s in samples for x in s.next_s]
    label_s = [x for s in samples for x in s.label_s]
    errors = [e for s in samples for e in s.errors]
    empty: dict[str, int] = {}
    for s in samples:
        for k, v in s.empty.items():
            empty[k] = empty.get(k, 0) + v
    labels = sum(s.labels for s in samples)
    return {
        "annotators": len(keys), "think_s": think, "duration_s": round(window, 2), "loadavg_1m": round(max(load_before, os.getloadavg()[0]), 1),
        "next_ms": percentiles(next_s), "label_ms": percentiles(label_s),
        "next_calls": len(next_s), "labels": labels, "labels_per_s": labels / window,
        "requests_per_s": (len(next_s) + len(label_s)) / window,
        "empty": empty, "errors": len(errors), "error_sample": errors[:3],
    }


def run(args: argparse.Namespace) -> dict:
    name = f"svp_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        pg_version = conn.execute(text("SHOW server_version")).scalar()
    url = _database_url(name)
    proc = None
    try:
        upgrade(url)
        t0 = time.perf_counter()
        pid = seed_project(url, args.items, args.initial)
        seed_s = time.perf_counter() - t0
        with session_scope(url) as session:
            _, admin_key = create_api_key(session, role="admin", name="bench-admin")
            keys = [create_api_key(session, role="annotator", name=f"annotator-{n}", project_id=pid)[1]
                    for n in range(max(a for a, _ in args.phases))]
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SVP_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        data_dir = tempfile.mkdtemp(prefix="svp-bench-")
        env.update(SVP_DATABASE_URL=url, SVP_DATA_DIR=data_dir, SVP_LOG_LEVEL="WARNING")
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", args.app, "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(args.workers), "--log-level", "warning", "--no-access-log", *(["--factory"] if args.factory else [])],
            cwd=ROOT, env=env,
        )
        wait_ready(port, proc)
        t0 = time.perf_counter()
        status, body = Http(port, admin_key).call("POST", f"/projects/{pid}/start")
        start_s = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"start failed: {status} {body}")
        round_size = body["round"]["size"]
        log.info("pool %s items (seeded in %.1fs); round 0 has %s queries (start took %.2fs)",
                 args.items, seed_s, round_size, start_s)
        phases = []
        for annotators, think in args.phases:
            log.info("phase: %s annotators, think time %.2f s, %.0f s", annotators, think, args.duration)
            phases.append(phase(port, keys[:annotators], pid, think, args.warmup, args.duration))
        with session_scope(url) as session:
            labeled = session.scalar(text("SELECT count(*) FROM item WHERE project_id = :p AND label IS NOT NULL"), {"p": pid})
            doubles = session.scalar(text(
                "SELECT count(*) FROM (SELECT item_id FROM annotation WHERE project_id = :p "
                "GROUP BY item_id HAVING count(*) > 1) d"), {"p": pid})
        return {
            "items": args.items, "round_size": round_size, "workers": args.workers,
            "seed_s": round(seed_s, 1), "start_s": round(start_s, 2), "phases": phases,
            "labeled_in_db": labeled, "items_labeled_twice": doubles,
            "postgres": pg_version, **machine(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        }
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _load(p: dict) -> str:
    pace = "no think time" if not p["think_s"] else f"~{p['think_s']:g} s per item"
    return f"{p['annotators']} annotator{'s' if p['annotators'] > 1 else ''}, {pace}"


def table(result: dict) -> str:
    rows = [
        "| load | labels/s | requests/s | next p50 / p95 / p99 ms | label p50 / p95 / p99 ms | errors | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in result["phases"]:
        n, lab = p["next_ms"], p["label_ms"]
        rows.append(
            f"| {_load(p)} | {p['labels_per_s']:.0f} | {p['requests_per_s']:.0f} "
            f"| {n['p50']:.1f} / {n['p95']:.1f} / {n['p99']:.1f} "
            f"| {lab['p50']:.1f} / {lab['p95']:.1f} / {lab['p99']:.1f} | {p['errors']} | {p['loadavg_1m']} |"
        )
    return "\n".join(rows)


def summary(result: dict) -> str:
    # The goals are about the full crowd of annotators; fewer callers only explain the numbers.
    crowd = max(p["annotators"] for p in result["phases"])
    judged = [p for p in result["phases"] if p["annotators"] == crowd]
    best_rate = max(p["labels_per_s"] for p in judged)
    best_p99 = min(p["next_ms"]["p99"] for p in judged)
    goal_next = "met" if best_p99 < GOALS["next_p99_ms"] else "not met"
    goal_rate = "met" if best_rate >= GOALS["labels_per_s"] else "not met"
    return (
        f"Goals with {crowd} annotators: next p99 < {GOALS['next_p99_ms']:.0f} ms ({goal_next}: best {best_p99:.1f} ms), "
        f">= {GOALS['labels_per_s']:.0f} labels/s ({goal_rate}: best {best_rate:.0f}). "
        f"Items labeled twice: {result['items_labeled_twice']}; round 0 of a {result['items']:,}-item pool "
        f"was drawn and written by `start` in {result['start_s']} s."
    )


def write_docs(result: dict, notes: str) -> None:
    section = "\n".join([
        "## API load (`bench/api_load.py`)",
        "",
        f"{result['date']}; {result['nproc']} CPUs ({result['cpu']}), PostgreSQL {result['postgres']}, "
        f"Python {result['python']}. uvicorn with {result['workers']} worker process(es), the database and the load generator "
        f"(one thread per annotator) on the same machine. Pool of {result['items']:,} items, "
        f"round 0 of {result['round_size']:,} queries; each annotator loops `GET queries/next?limit=1` + "
        f"`POST labels`, measured for {result['phases'][0]['duration_s']:.0f} s after a warm-up.",
        "",
        table(result),
        "",
        summary(result),
        "",
        notes.strip(),
        "",
        "Reproduce: `.venv/bin/python bench/api_load.py` (PostgreSQL at `SVP_BENCH_POSTGRES_URL`, "
        "default `postgresql+psycopg://postgres@127.0.0.1:5432/postgres`).",
    ])
    write_section("api-load", section)


def _phase_spec(value: str) -> tuple[int, float]:
    annotators, _, think = value.partition(":")
    try:
        spec = int(annotators), float(think or 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ANNOTATORS:THINK_SECONDS, got {value!r}") from None
    if spec[0] < 1 or spec[1] < 0:
        raise argparse.ArgumentTypeError(f"expected at least 1 annotator and a think time >= 0, got {value!r}")
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--initial", type=float, default=0.3, help="round 0 as a fraction of the pool")
    parser.add_argument("--phases", type=_phase_spec, nargs="+", default=[(50, 0.0), (50, 2.0), (1, 0.0)],
                        help="ANNOTATORS:THINK_SECONDS per phase, e.g. 50:0 (saturate the api) 50:2 (paced) 1:0 "
                             "(one caller: latency without queueing)")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--app", default="app.main:app", help="the ASGI app uvicorn serves")
    parser.add_argument("--factory", action="store_true", help="--app names a factory")
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--notes", default="", help="a paragraph added under the table (e.g. about the machine's load)")
    parser.add_argument("--json", type=Path, help="also write the raw result here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run(args)
    print(table(result))
    print(summary(result))
    for p in result["phases"]:
        if p["empty"] or p["error_sample"]:
            print(f"{_load(p)}: empty answers {p['empty']}; errors, e.g.:", *p["error_sample"], sep="\n  ")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if not args.no_docs:
        write_docs(result, args.notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""API load benchmark: many annotators leasing and labeling against an api process on PostgreSQL.

For each server under test it creates a fresh PostgreSQL database (dropped at the end) and a
project with ``--items`` pool items (bulk-inserted); the first time its api runs (uvicorn,
``--workers`` processes, no job dispatcher) it starts the project through the API with a round 0
large enough for the whole run. Each phase then runs N annotator threads for ``--duration``
seconds against each server in turn, one api process (group) at a time: several at once could
take every connection slot of a database server that other people use too. A phase is
``ANNOTATORS:THINK[:BATCH]``: with BATCH 1 (the default) an annotator loops ``GET
queries/next?limit=1`` + ``POST labels``; with BATCH b it leases b items at once and labels them in
one ``POST labels/bulk``, as annotation tools that work on a page of items do. Between items (or
pages) it waits a think time. The benchmark reports labels/s, p50/p95/p99 latency of both calls, and
the CPU spent per label by the api processes and by the database backends serving them (read from
/proc: unlike throughput, CPU per label hardly depends on what else the machine is running).

``--baseline PATH`` serves a second checkout (e.g. ``git worktree add /tmp/old <commit>``) the same
way (with the first ``--workers`` value) and runs every phase against it right before the current
code, so the two are compared side by side under the same machine load.

    .venv/bin/python bench/api_load.py          # 100k items; phases 50:0, 50:0:10, 50:2, 1:0
    .venv/bin/python bench/api_load.py --items 20000 --phases 50:0 50:0:10 --duration 10 --no-docs
    .venv/bin/python bench/api_load.py --baseline /tmp/old --workers 1 2

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
import signal
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
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class PhaseSpec:
    annotators: int
    think: float = 0.0
    batch: int = 1


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


# ------------------------------------------------------------------------------- CPU accounting

def _process_ticks(pid: int) -> int | None:
    """utime + stime of one process (all its threads), in clock ticks; None when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def _ticks(pids: list[int]) -> dict[int, int]:
    out = {}
    for pid in pids:
        ticks = _process_ticks(pid)
        if ticks is not None:
            out[pid] = ticks
    return out


def _cpu_seconds(before: dict[int, int], after: dict[int, int]) -> float:
    # A process that appeared during the window counts whole (it started inside it).
    return sum(ticks - before.get(pid, 0) for pid, ticks in after.items()) / CLOCK_TICKS


# ------------------------------------------------------------------------------------ the server

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


@dataclass
class Server:
    """One api under test: its code, its database, its uvicorn process and its annotators' keys."""

    label: str
    root: Path
    workers: int
    db_name: str = ""
    url: str = ""
    proc: subprocess.Popen | None = None
    port: int = 0
    pid: int = 0  # the project
    keys: list[str] = field(default_factory=list)
    admin_key: str = ""
    round_size: int = 0
    start_s: float = 0.0
    seed_s: float = 0.0

    def db_backends(self) -> list[int]:
        """Pids of the PostgreSQL backends connected to this server's database (local servers only)."""
        with get_engine(self.url).connect() as conn:
            return list(conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
            ).scalars())

    def api_pids(self) -> list[int]:
        return _descendants(self.proc.pid) if self.proc is not None else []


def prepare_database(server: Server, args: argparse.Namespace, admin) -> None:
    """A fresh database for ``server``: the schema, the project and its pool, the keys."""
    server.db_name = f"svp_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{server.db_name}"'))
    server.url = _database_url(server.db_name)
    upgrade(server.url)
    t0 = time.perf_counter()
    server.pid = seed_project(server.url, args.items, args.initial)
    server.seed_s = time.perf_counter() - t0
    with session_scope(server.url) as session:
        _, server.admin_key = create_api_key(session, role="admin", name="bench-admin")
        server.keys = [create_api_key(session, role="annotator", name=f"annotator-{n}", project_id=server.pid)[1]
                       for n in range(max(p.annotators for p in args.phases))]


def start_server(server: Server, args: argparse.Namespace) -> None:
    """Start the api on the server's database; the first time, start the project (draw round 0).

    Only one api runs at a time (each holds a pool of connections; several at once could exhaust
    the database's connection slots, which other users of the server need too).
    """
    server.port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(server.root), env.get("PYTHONPATH")]))
    env.update(SVP_DATABASE_URL=server.url, SVP_DATA_DIR=tempfile.mkdtemp(prefix="svp-bench-"), SVP_LOG_LEVEL="WARNING")
    server.proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", args.app, "--host", "127.0.0.1", "--port", str(server.port),
         "--workers", str(server.workers), "--log-level", "warning", "--no-access-log",
         *(["--factory"] if args.factory else [])],
        cwd=server.root, env=env,
    )
    wait_ready(server.port, server.proc)
    if server.round_size:
        return
    t0 = time.perf_counter()
    status, body = Http(server.port, server.admin_key).call("POST", f"/projects/{server.pid}/start")
    server.start_s = time.perf_counter() - t0
    if status != 200:
        raise RuntimeError(f"start failed: {status} {body}")
    server.round_size = body["round"]["size"]
    # Fresh statistics for the round's queries, as autovacuum's analyze would have within a minute:
    # until then the planner takes the query table for empty.
    with get_engine(server.url).begin() as conn:
        conn.execute(text("ANALYZE query"))
    log.info("%s: pool %s items (seeded in %.1fs); round 0 has %s queries (start took %.2fs)",
             server.label, args.items, server.seed_s, server.round_size, server.start_s)


def stop_server(server: Server) -> None:
    if server.proc is not None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=20)
        server.proc = None


def drop_database(server: Server, admin) -> dict:
    """Count items labeled twice, then drop the server's database."""
    result = {}
    if server.url:
        try:
            with session_scope(server.url) as session:
                result["labeled_in_db"] = session.scalar(
                    text("SELECT count(*) FROM item WHERE project_id = :p AND label IS NOT NULL"), {"p": server.pid})
                result["items_labeled_twice"] = session.scalar(text(
                    "SELECT count(*) FROM (SELECT item_id FROM annotation WHERE project_id = :p "
                    "GROUP BY item_id HAVING count(*) > 1) d"), {"p": server.pid})
        finally:
            get_engine(server.url).dispose()
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{server.db_name}" WITH (FORCE)'))
    return result


# ---------------------------------------------------------------------------------- annotators

def annotate(port: int, key: str, pid: int, spec: PhaseSpec, stop: threading.Event, measuring: threading.Event,
             out: Samples) -> None:
    """One annotator: lease ``spec.batch`` items, label them (one call), wait the think time, repeat."""
    client = Http(port, key)
    rng = random.Random(key)
    next_path = f"/projects/{pid}/queries/next?limit={spec.batch}"
    label_path = f"/projects/{pid}/labels" if spec.batch == 1 else f"/projects/{pid}/labels/bulk"
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
            labels = [{"item_id": item["item_id"], "label": rng.choice(CLASSES)} for item in body["items"]]
            payload = labels[0] if spec.batch == 1 else {"labels": labels}
            t2 = time.perf_counter()
            status, body = client.call("POST", label_path, payload)
            t3 = time.perf_counter()
            if status != 200:
                out.errors.append(f"label {status}: {body}")
                continue
            if on and measuring.is_set():
                out.label_s.append(t3 - t2)
                out.labels += len(labels)
            if spec.think:
                stop.wait(spec.think * len(labels) * rng.uniform(0.5, 1.5))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            out.errors.append(repr(exc))
            client = Http(port, key)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    ms = np.asarray(values) * 1000
    return {f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)}


def phase(server: Server, spec: PhaseSpec, warmup: float, duration: float) -> dict:
    """One annotator per key for ``warmup + duration`` seconds; only the last ``duration`` is measured."""
    keys = server.keys[:spec.annotators]
    stop, measuring = threading.Event(), threading.Event()
    samples = [Samples() for _ in keys]
    threads = [
        threading.Thread(target=annotate, args=(server.port, key, server.pid, spec, stop, measuring, s), daemon=True)
        for key, s in zip(keys, samples)
    ]
    for thread in threads:
        thread.start()
    time.sleep(warmup)
    load_before = os.getloadavg()[0]
    try:
        backends = server.db_backends()
    except Exception:  # noqa: BLE001 - a remote database: no CPU figure for it
        backends = []
    api_before, db_before = _ticks(server.api_pids()), _ticks(backends)
    client_before = time.process_time()
    measuring.set()
    t0 = time.perf_counter()
    time.sleep(duration)
    measuring.clear()
    window = time.perf_counter() - t0
    api_after = _ticks(server.api_pids())
    db_after = _ticks(server.db_backends() if backends else [])
    client_cpu = time.process_time() - client_before
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
    per_label = 1000 / labels if labels else float("nan")
    return {
        "server": server.label, "workers": server.workers,
        "annotators": spec.annotators, "think_s": spec.think, "batch": spec.batch,
        "duration_s": round(window, 2), "loadavg_1m": round(max(load_before, os.getloadavg()[0]), 1),
        "next_ms": percentiles(next_s), "label_ms": percentiles(label_s),
        "next_calls": len(next_s), "label_calls": len(label_s), "labels": labels, "labels_per_s": labels / window,
        "requests_per_s": (len(next_s) + len(label_s)) / window,
        "api_cpu_ms_per_label": _cpu_seconds(api_before, api_after) * per_label,
        "db_cpu_ms_per_label": _cpu_seconds(db_before, db_after) * per_label if backends else float("nan"),
        "client_cpu_ms_per_label": client_cpu * per_label,
        "empty": empty, "errors": len(errors), "error_sample": errors[:3],
    }


def run(args: argparse.Namespace) -> dict:
    servers = []
    for n, workers in enumerate(args.workers):
        # The baseline runs with the first worker count only: enough to compare, and old code may
        # hold more connections per process.
        if args.baseline and n == 0:
            servers.append(Server(label="baseline", root=args.baseline.resolve(), workers=workers))
        servers.append(Server(label="current", root=ROOT, workers=workers))
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        pg_version = conn.execute(text("SHOW server_version")).scalar()
    checks = {}
    try:
        for server in servers:
            prepare_database(server, args, admin)
        phases = []
        # Phase by phase, every server in turn: each comparison is made under the same machine load.
        for spec in args.phases:
            for server in servers:
                start_server(server, args)
                try:
                    log.info("%s, %s worker(s): %s annotators, think %.2f s, batch %s, %.0f s", server.label,
                             server.workers, spec.annotators, spec.think, spec.batch, args.duration)
                    phases.append(phase(server, spec, args.warmup, args.duration))
                finally:
                    stop_server(server)
    finally:
        for server in servers:
            stop_server(server)
            checks[(server.label, server.workers)] = drop_database(server, admin)
        admin.dispose()
    current = servers[-1]
    return {
        "items": args.items, "round_size": current.round_size, "workers": args.workers,
        "baseline": str(args.baseline) if args.baseline else None,
        "seed_s": round(current.seed_s, 1), "start_s": round(current.start_s, 2), "phases": phases,
        "labeled_in_db": sum(c.get("labeled_in_db", 0) for c in checks.values()),
        "items_labeled_twice": sum(c.get("items_labeled_twice", 0) for c in checks.values()),
        "postgres": pg_version, **machine(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ------------------------------------------------------------------------------------- report

def _load(p: dict) -> str:
    pace = "no think time" if not p["think_s"] else f"~{p['think_s']:g} s per item"
    loop = "1 item per call" if p.get("batch", 1) == 1 else f"{p['batch']} items per call"
    return f"{p['annotators']} annotator{'s' if p['annotators'] > 1 else ''}, {pace}, {loop}"


def _server(p: dict) -> str:
    return f"{p.get('server', 'current')}, {p.get('workers', 1)} proc"


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"  # NaN: not measured


def table(result: dict) -> str:
    rows = [
        "| server | load | labels/s | requests/s | next p50 / p95 / p99 ms | label p50 / p95 / p99 ms "
        "| api CPU ms/label | db CPU ms/label | errors | load avg |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in result["phases"]:
        n, lab = p["next_ms"], p["label_ms"]
        rows.append(
            f"| {_server(p)} | {_load(p)} | {p['labels_per_s']:.0f} | {p['requests_per_s']:.0f} "
            f"| {n['p50']:.1f} / {n['p95']:.1f} / {n['p99']:.1f} "
            f"| {lab['p50']:.1f} / {lab['p95']:.1f} / {lab['p99']:.1f} "
            f"| {_fmt(p.get('api_cpu_ms_per_label', float('nan')), 2)} | {_fmt(p.get('db_cpu_ms_per_label', float('nan')), 2)} "
            f"| {p['errors']} | {p['loadavg_1m']} |"
        )
    return "\n".join(rows)


def comparison(result: dict) -> str:
    """Current over baseline, phase by phase (same workers): labels/s and api CPU per label."""
    by_key: dict[tuple, dict[str, dict]] = {}
    for p in result["phases"]:
        key = (p["annotators"], p["think_s"], p.get("batch", 1), p.get("workers", 1))
        by_key.setdefault(key, {})[p.get("server", "current")] = p
    rows = []
    for (_, _, _, workers), pair in by_key.items():
        if "baseline" in pair and "current" in pair:
            b, c = pair["baseline"], pair["current"]
            rate = c["labels_per_s"] / b["labels_per_s"] if b["labels_per_s"] else float("nan")
            cpu = b["api_cpu_ms_per_label"] / c["api_cpu_ms_per_label"] if c["api_cpu_ms_per_label"] else float("nan")
            p99 = b["next_ms"]["p99"] / c["next_ms"]["p99"] if c["next_ms"]["p99"] else float("nan")
            rows.append(f"| {_load(c)}, {workers} proc | {_fmt(rate, 2)}× | {_fmt(p99, 2)}× | {_fmt(cpu, 2)}× |")
    if not rows:
        return ""
    return "\n".join([
        "| load | labels/s, current ÷ baseline | next p99, baseline ÷ current | api CPU per label, baseline ÷ current |",
        "|---|---:|---:|---:|",
        *rows,
    ])


def summary(result: dict) -> str:
    # The goals are about the full crowd of annotators and the current code; fewer callers only explain.
    current = [p for p in result["phases"] if p.get("server", "current") == "current"]
    crowd = max(p["annotators"] for p in current)
    judged = [p for p in current if p["annotators"] == crowd]
    best_rate = max(judged, key=lambda p: p["labels_per_s"])
    best_p99 = min(judged, key=lambda p: p["next_ms"]["p99"])
    goal_next = "met" if best_p99["next_ms"]["p99"] < GOALS["next_p99_ms"] else "not met"
    goal_rate = "met" if best_rate["labels_per_s"] >= GOALS["labels_per_s"] else "not met"
    return (
        f"Goals with {crowd} annotators: next p99 < {GOALS['next_p99_ms']:.0f} ms ({goal_next}: best "
        f"{best_p99['next_ms']['p99']:.1f} ms, {_load(best_p99)}, {_server(best_p99)}), "
        f">= {GOALS['labels_per_s']:.0f} labels/s ({goal_rate}: best {best_rate['labels_per_s']:.0f}, "
        f"{_load(best_rate)}, {_server(best_rate)}). "
        f"Items labeled twice: {result['items_labeled_twice']}; round 0 of a {result['items']:,}-item pool "
        f"was drawn and written by `start` in {result['start_s']} s."
    )


def write_docs(result: dict, notes: str, path: Path | None = None) -> None:
    compared = comparison(result)
    baseline = (f" The baseline is the code of `{result['baseline']}`, run phase by phase right before the "
                f"current code." if result.get("baseline") else "")
    section = "\n".join([
        "## API load (`bench/api_load.py`)",
        "",
        f"{result['date']}; {result['nproc']} CPUs ({result['cpu']}), PostgreSQL {result['postgres']}, "
        f"Python {result['python']}. uvicorn (worker processes: {', '.join(map(str, result['workers']))}), "
        f"the database and the load generator (one thread per annotator) on the same machine. Pool of "
        f"{result['items']:,} items, round 0 of {result['round_size']:,} queries; each annotator loops "
        f"`GET queries/next?limit=b` + `POST labels` (b = 1) or `POST labels/bulk` (b > 1), measured for "
        f"{result['phases'][0]['duration_s']:.0f} s after a warm-up. CPU per label: the api processes and the "
        f"PostgreSQL backends serving them, from /proc.{baseline}",
        "",
        table(result),
        "",
        *([compared, ""] if compared else []),
        summary(result),
        "",
        notes.strip(),
        "",
        "Reproduce: `.venv/bin/python bench/api_load.py` (PostgreSQL at `SVP_BENCH_POSTGRES_URL`, "
        "default `postgresql+psycopg://postgres@127.0.0.1:5432/postgres`); add `--baseline PATH` to compare "
        "with another checkout (e.g. `git worktree add /tmp/old <commit>`).",
    ])
    write_section("api-load", section, *([path] if path else []))


def _phase_spec(value: str) -> PhaseSpec:
    parts = value.split(":")
    try:
        if not 1 <= len(parts) <= 3:
            raise ValueError
        spec = PhaseSpec(int(parts[0]), float(parts[1]) if len(parts) > 1 and parts[1] else 0.0,
                         int(parts[2]) if len(parts) > 2 else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ANNOTATORS:THINK_SECONDS[:BATCH], got {value!r}") from None
    if spec.annotators < 1 or spec.think < 0 or not 1 <= spec.batch <= 100:
        raise argparse.ArgumentTypeError(
            f"expected at least 1 annotator, a think time >= 0 and a batch of 1 to 100, got {value!r}")
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--initial", type=float, default=0.5, help="round 0 as a fraction of the pool")
    parser.add_argument("--phases", type=_phase_spec, nargs="+",
                        default=[PhaseSpec(50), PhaseSpec(50, 0.0, 10), PhaseSpec(50, 2.0), PhaseSpec(1)],
                        help="ANNOTATORS:THINK_SECONDS[:BATCH] per phase, e.g. 50:0 (saturate the api, one item "
                             "per call) 50:0:10 (pages of 10 items: next?limit=10 + labels/bulk) 50:2 (paced) "
                             "1:0 (one caller: latency without queueing)")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="uvicorn worker processes; several values: one server each")
    parser.add_argument("--baseline", type=Path, help="another checkout to serve and compare with, phase by phase")
    parser.add_argument("--app", default="app.main:app", help="the ASGI app uvicorn serves")
    parser.add_argument("--factory", action="store_true", help="--app names a factory")
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--docs", type=Path, help="the Markdown file whose api-load section is rewritten "
                        "(default: docs/benchmarks.md)")
    parser.add_argument("--notes", default="", help="a paragraph added under the table (e.g. about the machine's load)")
    parser.add_argument("--json", type=Path, help="also write the raw result here")
    args = parser.parse_args(argv)
    if args.baseline and not (args.baseline / "app" / "main.py").is_file():
        parser.error(f"--baseline {args.baseline} is not a checkout of this project")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Stopped from outside: unwind, so that the api processes stop and the databases are dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run(args)
    print(table(result))
    compared = comparison(result)
    if compared:
        print(compared)
    print(summary(result))
    for p in result["phases"]:
        if p["empty"] or p["error_sample"]:
            print(f"{_server(p)}, {_load(p)}: empty answers {p['empty']}; errors, e.g.:", *p["error_sample"], sep="\n  ")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if not args.no_docs:
        write_docs(result, args.notes, args.docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

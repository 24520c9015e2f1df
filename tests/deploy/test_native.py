"""The native runner: the compose set of processes (migrate, api, Celery workers) on the local
PostgreSQL and Redis, driven over HTTP through one active-learning round, then stopped with nothing
left running.

The acceptance test labels round 0 of a tiny fastText text project and waits for the worker to
select and open round 1."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.db.session import session_scope
from app.services.keys import create_api_key
from svp.native import NativeStack, NativeStackError, gpu_assignment, settings_env
from tests.conftest import fresh_postgres_database

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

REDIS_URL = os.environ.get("SVP_TEST_REDIS_URL_DB15", "redis://127.0.0.1:6379/15")
ROOT = Path(__file__).resolve().parents[2]

POSITIVE = ["great", "excellent", "wonderful", "love", "superb", "fantastic", "delightful", "perfect"]
NEGATIVE = ["awful", "terrible", "horrible", "hate", "dreadful", "boring", "broken", "worst"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fresh_database() -> Iterator[str]:
    """A PostgreSQL database of its own, empty (the runner migrates it), dropped afterwards."""
    with fresh_postgres_database("svp_native") as url:
        yield url


def stack_settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        broker_url=REDIS_URL,
        # A queue of its own: nothing else on this Redis takes or leaves our messages.
        gpu_queue=f"gpu-native-{uuid.uuid4().hex[:8]}",
        job_heartbeat_s=1,
        reconcile_interval_s=2,
        log_format="json",
        device="cpu",
        _env_file=None,
    )


@pytest.fixture(scope="module")
def stack(fresh_database, tmp_path_factory) -> Iterator[NativeStack]:
    settings = stack_settings(fresh_database, tmp_path_factory.mktemp("native-data"))
    native = NativeStack(settings, workers=1, port=free_port(), log_dir=tmp_path_factory.mktemp("native-logs"),
                         ready_timeout=90, extra_env={"OMP_NUM_THREADS": "1"})
    with native:
        yield native
    codes = native.stop()
    assert all(code is not None for code in codes.values())
    for proc in native.processes.values():
        assert not group_alive(proc.pid)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def metrics(client: httpx.Client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def sample(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# ------------------------------------------------------------------------------------ unit-level


def test_children_get_every_setting_and_nothing_stale(tmp_path):
    settings = Settings(data_dir=Path("rel-data"), broker_url="redis://h:1/0", lease_seconds=42, _env_file=None)
    env = settings_env(settings, base={"PATH": "/bin", "SVP_DEVICE": "cuda:3", "SVP_UNKNOWN": "x"})
    assert env["PATH"] == "/bin"
    assert "SVP_DEVICE" not in env and "SVP_UNKNOWN" not in env  # the caller's settings decide, not stale env
    assert env["SVP_LEASE_SECONDS"] == "42" and env["SVP_BROKER_URL"] == "redis://h:1/0"
    assert Path(env["SVP_DATA_DIR"]).is_absolute()
    assert env["SVP_DATABASE_URL"] == settings.resolved_database_url
    rebuilt = Settings(**{k[4:].lower(): v for k, v in env.items() if k.startswith("SVP_")}, _env_file=None)
    assert rebuilt.lease_seconds == 42 and rebuilt.resolved_database_url == settings.resolved_database_url


def test_gpu_assignment_one_gpu_per_worker():
    auto = Settings(_env_file=None)
    assert gpu_assignment(auto, 1, "0,1") is None
    assert gpu_assignment(auto, 3, "4,6") == ["4", "6", "4"]
    assert gpu_assignment(auto.model_copy(update={"device": "cpu"}), 2, "0,1") is None
    assert gpu_assignment(auto.model_copy(update={"device": "cuda:1"}), 2, "0,1") is None


def test_refuses_to_start_without_a_broker(tmp_path):
    with pytest.raises(ValueError, match="broker"):
        NativeStack(Settings(data_dir=tmp_path, broker_url=None, _env_file=None))


def test_a_child_that_dies_at_start_fails_fast_and_is_reported(tmp_path):
    settings = Settings(data_dir=tmp_path, broker_url=REDIS_URL, _env_file=None)
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho \"cannot start: $*\" >&2\nexit 3\n")
    fake.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(NativeStackError, match=r"(?s)exited with code 3.*cannot start"):
        NativeStack(settings, port=free_port(), python=str(fake), log_dir=tmp_path / "logs", ready_timeout=60).start()
    assert time.monotonic() - started < 30


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path):
    settings = Settings(data_dir=tmp_path, broker_url=REDIS_URL, _env_file=None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        stack = NativeStack(settings, port=taken.getsockname()[1])
        with pytest.raises(NativeStackError, match="cannot serve on"):
            stack.start()
    assert stack.processes == {}


# ------------------------------------------------------------------------------- the live stack


def test_probes_and_json_logs(stack):
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
        probe = client.get("/projects", headers={"X-Request-ID": "native-probe-1"})
        assert probe.status_code == 401 and probe.headers["x-request-id"] == "native-probe-1"
        samples = metrics(client)
    assert sample(samples, "svp_broker_queue_length", queue=stack.settings.gpu_queue) == 0
    assert sample(samples, "svp_http_request_duration_seconds_count", method="GET", route="/ready", status="200") >= 1
    # The api logs JSON, one object per line, the request id on the request's lines.
    log_path = stack.log_dir / "api.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        entries = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
        tagged = [e for e in entries if e.get("request_id") == "native-probe-1"]
        if tagged:
            break
        time.sleep(0.2)
    assert tagged and tagged[0]["logger"] == "svp.access" and tagged[0]["status"] == 401
    assert {"time", "level", "logger", "message"} <= set(tagged[0])


def texts() -> list[tuple[str, str]]:
    """40 short reviews, 20 per class, each with a few class words and neutral filler."""
    rows = []
    filler = ["the", "movie", "was", "really", "and", "plot", "acting", "quite"]
    for i in range(20):
        for label, words in (("positive", POSITIVE), ("negative", NEGATIVE)):
            picked = [words[(i + k) % len(words)] for k in range(3)]
            rows.append((label, " ".join([filler[i % 8], *picked, filler[(i + 3) % 8], f"review{i}"])))
    return rows


def test_one_active_learning_round_through_the_native_stack(stack):
    with session_scope(stack.settings.resolved_database_url) as session:
        _, secret = create_api_key(session, role="admin", name="native-admin")
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=stack.base_url, timeout=30, headers=headers) as client:
        created = client.post("/projects", json={
            "name": f"native-{uuid.uuid4().hex[:6]}", "modality": "text", "classes": ["negative", "positive"],
            "proxy": {"arch": "fasttext"}, "target": {"arch": "fasttext"},
            "schedule": {"initial": 4, "rounds": [4], "budget": 8},
        })
        assert created.status_code == 201, created.text
        project_id = created.json()["id"]
        rows = texts()
        truth = {f"t{i}": label for i, (label, _) in enumerate(rows)}
        imported = client.post(f"/projects/{project_id}/items", json={
            "split": "pool", "items": [{"external_id": f"t{i}", "text": body} for i, (_, body) in enumerate(rows)],
        })
        assert imported.status_code == 201, imported.text
        assert imported.json()["imported"] == 40
        started = client.post(f"/projects/{project_id}/start")
        assert started.status_code == 200, started.text

        before = metrics(client)
        leased = client.get(f"/projects/{project_id}/queries/next", params={"limit": 4})
        assert leased.status_code == 200, leased.text
        batch = leased.json()
        assert batch["round"] == 0 and len(batch["items"]) == 4
        for item in batch["items"]:
            labeled = client.post(f"/projects/{project_id}/labels",
                                  json={"item_id": item["item_id"], "label": truth[item["external_id"]]})
            assert labeled.status_code in (200, 201), labeled.text

        # Round 0 is fully labeled: a worker process trains the proxy and opens round 1.
        deadline = time.monotonic() + 120
        rounds: list[dict] = []
        while time.monotonic() < deadline:
            stack.check_alive()
            rounds = client.get(f"/projects/{project_id}/rounds").json()
            if any(r["index"] == 1 and r["status"] == "open" for r in rounds):
                break
            time.sleep(0.5)
        else:
            worker_log = (stack.log_dir / "worker-0.log").read_text()[-3000:]
            pytest.fail(f"round 1 did not open within 120 s: {rounds}\n--- worker-0.log ---\n{worker_log}")
        round1 = next(r for r in rounds if r["index"] == 1)
        assert round1["size"] == 4 and round1["labeled_at_start"] == 4
        assert round1["strategy"] != "random"

        after = metrics(client)
    # The metrics moved with what happened.
    assert sample(after, "svp_labels_total") - sample(before, "svp_labels_total") == 4
    assert sample(after, "svp_labels_last_minute") >= 4
    route = dict(method="POST", route="/projects/{project_id}/labels")
    posted = sum(v for (name, labels), v in after.items()
                 if name == "svp_http_request_duration_seconds_count" and dict(labels).items() >= route.items())
    assert posted >= 4
    assert sample(after, "svp_jobs_finished_total", type="select_round", status="succeeded") == 1
    assert sample(after, "svp_job_duration_seconds_count", type="select_round", status="succeeded") == 1
    assert sample(after, "svp_jobs_queue_depth", type="select_round", status="queued") == 0
    # The worker logged the job in JSON, with its id.
    worker_entries = [json.loads(line) for line in (stack.log_dir / "worker-0.log").read_text().splitlines()
                      if line.startswith("{")]
    assert any(e.get("job_id") == round1["job_id"] for e in worker_entries)


def test_run_native_stops_every_process_on_ctrl_c(fresh_database, tmp_path):
    """``python -m svp.native`` (what `svp up` runs): up, then SIGINT, exit 0, every child gone."""
    settings = stack_settings(fresh_database, tmp_path / "data")
    port = free_port()
    env = {**settings_env(settings), "OMP_NUM_THREADS": "1", "SVP_LOG_FORMAT": "text"}
    proc = subprocess.Popen([sys.executable, "-m", "svp.native", "--workers", "2", "--port", str(port),
                             "--log-dir", str(tmp_path / "logs")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output: list[str] = []
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 90
        for line in proc.stdout:
            output.append(line)
            if "ready at" in line or time.monotonic() > deadline:
                break
        assert any("ready at" in line for line in output), "".join(output)
        pids += [int(m.group(1)) for m in (re.search(r"started \S+ \(pid (\d+)\)", line) for line in output) if m]
        assert len(pids) == 3  # api + 2 workers
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10).status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, "".join(output) + proc.stdout.read()
        assert not any(group_alive(pid) for pid in pids)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in pids:  # the children have process groups of their own
            if group_alive(pid):
                os.killpg(pid, signal.SIGKILL)

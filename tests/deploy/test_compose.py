"""The compose deployment, checked without Docker: `docker-compose config` validates and resolves the
file, the resolved services are what docs/deployment.md promises, and each service's command
exists in the code and in the image that runs it. The worker entrypoint runs here with a stand-in
`celery` to check the one-process-per-GPU supervision."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
ENTRYPOINT = ROOT / "docker" / "worker-entrypoint.sh"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def compose_binary() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def run_config(tmp_path: Path, env_lines: list[str], **env) -> subprocess.CompletedProcess:
    """`config` on a copy of the compose file beside a .env (compose requires the env_file to exist)."""
    binary = compose_binary()
    if binary is None:
        pytest.skip("docker-compose is not installed (scripts/services.sh installs Debian's package)")
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    shutil.copy(COMPOSE, project / "docker-compose.yml")
    (project / ".env").write_text("\n".join(env_lines) + "\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SVP_", "POSTGRES_", "FLOWER_", "COMPOSE_"))}
    return subprocess.run([*binary, "-f", "docker-compose.yml", "config"], cwd=project, capture_output=True,
                          text=True, env={**clean, **env}, timeout=120)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict:
    result = run_config(tmp_path_factory.mktemp("compose"), ENV_EXAMPLE.read_text().splitlines())
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def dockerfile(service: dict) -> Path:
    return ROOT / service["build"]["dockerfile"]


# ------------------------------------------------------------------------------ the services


def test_services_and_profiles(config):
    services = config["services"]
    assert set(services) == {"postgres", "redis", "migrate", "api", "worker", "worker-cpu", "flower"}
    profiles = {name: service.get("profiles", []) for name, service in services.items()}
    assert profiles["worker-cpu"] == ["cpu"]
    assert profiles["flower"] == ["monitoring"]
    assert all(not profiles[name] for name in ("postgres", "redis", "migrate", "api", "worker"))


def test_backing_services_are_pinned_healthchecked_and_persistent(config):
    services = config["services"]
    assert re.fullmatch(r"postgres:16\.\d+(-\w+)?", services["postgres"]["image"])
    assert re.fullmatch(r"redis:7\.\d+\.\d+(-\w+)?", services["redis"]["image"])
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    volume_targets = {name: {v.split(":")[1] if isinstance(v, str) else v["target"] for v in s.get("volumes", [])}
                      for name, s in services.items()}
    assert "/var/lib/postgresql/data" in volume_targets["postgres"]
    assert "/data" in volume_targets["redis"]
    assert {"postgres-data", "redis-data", "svp-data"} <= set(config["volumes"])


def test_start_order_migrate_then_api_and_workers(config):
    services = config["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    for name in ("api", "worker", "worker-cpu"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert "/health" in " ".join(services["api"]["healthcheck"]["test"])


def test_gpu_reservation_follows_svp_gpu_count(config, tmp_path):
    [device] = config["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    assert int(device["count"]) == 1  # .env.example's value, the default
    assert "deploy" not in config["services"]["worker-cpu"]
    assert environment(config["services"]["worker-cpu"])["SVP_DEVICE"] == "cpu"

    four = run_config(tmp_path, ["POSTGRES_PASSWORD=x"], SVP_GPU_COUNT="4")
    assert four.returncode == 0, four.stderr
    [device] = yaml.safe_load(four.stdout)["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert int(device["count"]) == 4


def test_api_and_workers_share_the_data_volume_and_the_wiring(config):
    services = config["services"]
    for name in ("api", "worker", "worker-cpu"):
        service = services[name]
        mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in service["volumes"]]
        assert any(m.startswith("svp-data:/data") for m in mounts), (name, mounts)
        env = environment(service)
        assert env["SVP_DATA_DIR"] == "/data"
        assert env["SVP_BROKER_URL"] == "redis://redis:6379/0"
        assert env["SVP_DATABASE_URL"].startswith("postgresql+psycopg://svp:change-me@postgres:5432/svp")
    assert environment(services["migrate"])["SVP_DATABASE_URL"] == environment(services["api"])["SVP_DATABASE_URL"]


def test_settings_come_from_env_file_and_the_wiring_wins(tmp_path):
    result = run_config(tmp_path, ["POSTGRES_PASSWORD=s3cret", "SVP_LOG_FORMAT=json",
                                   "SVP_DATABASE_URL=sqlite:///nowhere.db", "SVP_LEASE_SECONDS=42"])
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in ("api", "worker", "migrate"):
        env = environment(services[name])
        assert env["SVP_LOG_FORMAT"] == "json" and env["SVP_LEASE_SECONDS"] == "42"
        assert env["SVP_DATABASE_URL"] == "postgresql+psycopg://svp:s3cret@postgres:5432/svp"


def test_a_missing_database_password_is_refused(tmp_path):
    result = run_config(tmp_path, ["SVP_LOG_LEVEL=INFO"])
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


# ------------------------------------------------------------- each command exists in the code


def test_api_command_resolves_without_torch(config, tmp_path):
    command = config["services"]["api"]["command"]
    assert command[0] == "uvicorn"
    target = command[1]
    probe = (
        "import sys; from uvicorn.importer import import_from_string; from fastapi import FastAPI; "
        f"app = import_from_string({target!r}); assert isinstance(app, FastAPI), type(app); "
        "assert 'torch' not in sys.modules, 'the api imported torch'; "
        "print(sorted(p for p in app.openapi()['paths'] if p in ('/health', '/ready', '/metrics')))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVP_")}
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**env, "SVP_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['/health', '/metrics', '/ready']"
    # Every option compose passes is one uvicorn has.
    helptext = subprocess.run([sys.executable, "-m", "uvicorn", "--help"], capture_output=True, text=True).stdout
    for option in (arg for arg in command if arg.startswith("--")):
        assert option in helptext, option


def test_worker_celery_app_loads_and_registers_the_task():
    probe = (
        "import sys; from worker.celery_app import celery_app, settings; import worker.tasks; "
        "assert 'svp.run_job' in celery_app.tasks; assert celery_app.conf.task_acks_late; "
        "assert celery_app.conf.worker_prefetch_multiplier == 1; print(settings.gpu_queue)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVP_")}
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "gpu"


def test_worker_entrypoint_is_installed_and_its_celery_options_exist(config):
    for name in ("worker", "worker-cpu"):
        service = config["services"][name]
        assert service["command"] == ["svp-worker"]
        text = dockerfile(service).read_text()
        assert "COPY docker/worker-entrypoint.sh /usr/local/bin/svp-worker" in text
    assert os.access(ENTRYPOINT, os.X_OK)
    script = ENTRYPOINT.read_text()
    assert "-A worker.celery_app worker" in script
    helptext = subprocess.run([sys.executable, "-m", "celery", "worker", "--help"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120).stdout
    for option in ("-Q", "--concurrency", "--pool", "--prefetch-multiplier", "--without-gossip", "--loglevel", "-n"):
        assert option in script and option in helptext, option


def test_migrate_command_runs_alembic_from_the_repository(tmp_path):
    # The migrate service runs `alembic upgrade head` in /app, where the image copies alembic.ini and
    # migrations/: the same command here, against a scratch SQLite database.
    db = tmp_path / "m.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVP_")}
    alembic = Path(sys.executable).with_name("alembic")
    result = subprocess.run([str(alembic), "upgrade", "head"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**env, "SVP_DATABASE_URL": f"sqlite:///{db}"})
    assert result.returncode == 0, result.stderr
    import sqlite3

    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("select name from sqlite_master where type='table'")}
    assert {"project", "item", "job", "annotation", "alembic_version"} <= tables


def test_flower_is_installed_in_the_image_that_runs_it(config):
    flower = config["services"]["flower"]
    command = flower["command"]
    assert command[0] == "celery" and "flower" in command
    assert "--broker=redis://redis:6379/0" in command  # no -A: the api image has no worker package
    monitoring = PYPROJECT["project"]["optional-dependencies"]["monitoring"]
    assert any(re.match(r"flower\b", requirement) for requirement in monitoring)
    assert installed_extras(dockerfile(flower)) == ["monitoring"]
    [port] = flower["ports"]
    host_ip = port["host_ip"] if isinstance(port, dict) else port.split(":")[0]
    assert host_ip == "127.0.0.1"  # Flower has no login by default: loopback only


# ----------------------------------------------------------------------------------- the images


def installed_extras(path: Path) -> list[str]:
    """The optional-dependency groups a Dockerfile's requirements step reads from pyproject.toml."""
    return re.findall(r"\['optional-dependencies'\]\['([\w-]+)'\]", path.read_text())


def copy_sources(text: str) -> list[str]:
    sources = []
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "COPY" and not any(p.startswith("--from") for p in parts):
            sources += parts[1:-1]
    return sources


def test_images_are_pinned_non_root_and_copy_what_exists(config):
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for name in ("api", "worker"):
        path = dockerfile(config["services"][name])
        text = path.read_text()
        [base] = re.findall(r"^FROM (\S+)", text, flags=re.M)
        assert ":" in base and not base.endswith(":latest"), base
        users = re.findall(r"^USER (\S+)", text, flags=re.M)
        assert users and users[-1] not in ("root", "0"), users
        for source in copy_sources(text):
            assert (ROOT / source).exists(), f"{path.name} copies {source}, which does not exist"
            assert source not in ignored, f"{path.name} copies {source}, which .dockerignore leaves out"


def test_api_image_has_no_torch_and_worker_image_has_cuda_torch(config):
    api = dockerfile(config["services"]["api"]).read_text()
    worker = dockerfile(config["services"]["worker"]).read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim", api, flags=re.M)
    assert re.search(r"^FROM nvidia/cuda:\d+\.\d+\.\d+-", worker, flags=re.M)
    assert installed_extras(dockerfile(config["services"]["api"])) == ["monitoring"]
    assert installed_extras(dockerfile(config["services"]["worker"])) == ["worker"]
    assert "COPY worker" not in api and "COPY models" not in api
    assert "torch==2.14.1" in PYPROJECT["project"]["optional-dependencies"]["worker"]
    # The api image sends tasks through kombu's Redis transport, which imports modules (packaging)
    # that only celery's redis extra brings: without it the first enqueue fails in the image.
    assert any(re.match(r"celery\[redis\]", d) for d in PYPROJECT["project"]["dependencies"])
    # Core dependencies (what the api image installs) must not pull the ML stack in.
    assert not any(re.match(r"(torch|torchvision|fasttext)", d) for d in PYPROJECT["project"]["dependencies"])


# ----------------------------------------------------------------------- the worker entrypoint


FAKE_CELERY = """#!/usr/bin/env bash
# Stand-in for celery: records its GPU and arguments, then idles until SIGTERM.
name=""
while [ $# -gt 0 ]; do [ "$1" = "-n" ] && name="$2"; shift; done
echo "$$ ${CUDA_VISIBLE_DEVICES:-unset} $name" >> "$RECORD"
if [ "$name" = "${FAIL_NAME:-}" ]; then sleep 0.5; exit 3; fi
trap 'echo "$$ stopped" >> "$RECORD"; exit 0' TERM
while :; do sleep 0.05; done
"""

FAKE_NVIDIA_SMI = """#!/usr/bin/env bash
for ((i = 0; i < ${FAKE_GPUS:-0}; i++)); do echo "GPU $i: Fake GPU (UUID: GPU-$i)"; done
"""

FAKE_PYTHON = """#!/usr/bin/env bash
echo "${FAKE_GPUS:-0}"  # what torch.cuda.device_count() would print
"""


def start_entrypoint(tmp_path: Path, *, nvidia_smi: bool = True, **env) -> tuple[subprocess.Popen, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fakes = [("celery", FAKE_CELERY), ("python", FAKE_PYTHON)] + ([("nvidia-smi", FAKE_NVIDIA_SMI)] if nvidia_smi else [])
    for name, body in fakes:
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    record = tmp_path / "record.txt"
    base = {"PATH": f"{bin_dir}:/usr/bin:/bin", "RECORD": str(record)}
    proc = subprocess.Popen(["bash", str(ENTRYPOINT)], env={**base, **env}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc, record


def wait_lines(record: Path, n: int, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = record.read_text().splitlines() if record.exists() else []
        if len(found) >= n:
            return found
        time.sleep(0.05)
    raise AssertionError(f"expected {n} lines in {record}, got {found}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_entrypoint_starts_one_process_per_gpu_and_stops_them_all(tmp_path):
    proc, record = start_entrypoint(tmp_path, FAKE_GPUS="2", SVP_WORKER_PROCESSES="3")
    try:
        started = [line.split() for line in wait_lines(record, 3)]
        assert sorted((gpu, name) for _, gpu, name in started) == [("0", "gpu0@%h"), ("0", "gpu2@%h"),
                                                                    ("1", "gpu1@%h")]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        pids = [int(pid) for pid, _, _ in started]
        assert sum(line.endswith("stopped") for line in record.read_text().splitlines()) == 3
        assert not any(alive(pid) for pid in pids)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_entrypoint_honours_the_devices_it_was_given_and_exits_when_a_worker_dies(tmp_path):
    proc, record = start_entrypoint(tmp_path, CUDA_VISIBLE_DEVICES="5,7", FAKE_GPUS="2", FAIL_NAME="gpu1@%h")
    try:
        assert proc.wait(timeout=20) == 3  # the dead worker's status, after stopping the other one
        lines = record.read_text().splitlines()
        started = sorted(line.split()[1:] for line in lines if not line.endswith("stopped"))
        assert started == [["5", "gpu0@%h"], ["7", "gpu1@%h"]]
        assert any(line.endswith("stopped") for line in lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_entrypoint_counts_gpus_through_torch_without_nvidia_smi(tmp_path):
    proc, record = start_entrypoint(tmp_path, nvidia_smi=False, FAKE_GPUS="2")
    try:
        started = sorted(line.split()[1:] for line in wait_lines(record, 2))
        assert started == [["0", "gpu0@%h"], ["1", "gpu1@%h"]]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_entrypoint_with_one_process_execs_celery(tmp_path):
    proc, record = start_entrypoint(tmp_path, FAKE_GPUS="1")
    try:
        [line] = wait_lines(record, 1)
        pid, gpu, name = line.split()
        assert int(pid) == proc.pid  # exec: signals from the container runtime reach celery itself
        assert (gpu, name) == ("unset", "gpu0@%h")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)

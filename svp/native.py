"""Run the compose deployment's processes natively, on a local PostgreSQL and Redis.

The same set as ``docker-compose.yml``: migrate (here in-process, before anything starts), the api
(``uvicorn app.main:app``) and N Celery workers on the gpu queue, one task at a time each. Every
child gets the settings through ``SVP_*`` variables, so they agree with the caller's ``Settings``
whatever ``.env`` says. Children run in process groups of their own: stopping sends SIGTERM to each
group, waits, then SIGKILLs whatever is left.

``with NativeStack(settings, workers=2, port=8000) as stack: ...`` for tests and scripts;
``run_native(settings, ...)`` blocks until Ctrl-C (``svp up``; ``python -m svp.native``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from app.config import Settings

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]


class NativeStackError(RuntimeError):
    """A process of the stack failed to start or died."""


def settings_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: ``base`` (default: ours) less every ``SVP_*`` variable,
    plus one ``SVP_<FIELD>`` per setting that has a value. Paths are made absolute, because children
    may run from another directory."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("SVP_")}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, Path):
            value = value.resolve()
        env[f"SVP_{name.upper()}"] = str(value)
    # The child must open the same database even when the caller relied on the SQLite default.
    env["SVP_DATABASE_URL"] = settings.resolved_database_url
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def api_command(settings: Settings, *, host: str, port: int, python: str = sys.executable) -> list[str]:
    # The service logs one access line per request itself (with the request id): uvicorn's would repeat it.
    return [python, "-m", "uvicorn", "app.main:app", "--host", host, "--port", str(port),
            "--log-level", settings.log_level.lower(), "--no-access-log"]


def worker_command(settings: Settings, *, name: str, python: str = sys.executable) -> list[str]:
    # solo pool: the task runs in the process we signal, so SIGTERM/SIGKILL reach the training itself.
    return [python, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", settings.gpu_queue,
            "--concurrency", "1", "--pool", "solo", "--prefetch-multiplier", "1",
            "--without-gossip", "--without-mingle", "--loglevel", settings.log_level.upper(), "-n", name]


def gpu_assignment(settings: Settings, workers: int, visible: str | None) -> list[str] | None:
    """One GPU per worker, round robin over ``CUDA_VISIBLE_DEVICES`` (else the GPUs nvidia-smi lists),
    or None to leave the environment alone: one worker, no GPU, or a device the settings pin (cpu, cuda:1)."""
    if workers < 2 or settings.device not in (None, "cuda"):
        return None
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
    else:
        devices = [str(i) for i in range(_count_gpus())]
    if not devices:
        return None
    return [devices[i % len(devices)] for i in range(workers)]


def _count_gpus() -> int:
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))


class NativeStack:
    """api + N workers as child processes; a context manager that leaves nothing running."""

    def __init__(
        self,
        settings: Settings,
        *,
        workers: int = 1,
        host: str = "127.0.0.1",
        port: int = 8000,
        log_dir: Path | None = None,
        ready_timeout: float = 60.0,
        stop_timeout: float = 15.0,
        python: str = sys.executable,
        extra_env: dict[str, str] | None = None,
    ):
        if not settings.broker_url:
            raise ValueError("the native stack needs a broker (SVP_BROKER_URL, e.g. redis://127.0.0.1:6379/0); "
                             "without one use `svp serve` (embedded mode)")
        if workers < 0:
            raise ValueError("workers must be >= 0")
        self.settings = settings
        self.workers = workers
        self.host = host
        self.port = port
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.python = python
        self.extra_env = dict(extra_env or {})
        self.processes: dict[str, subprocess.Popen] = {}
        self._logs: list[IO[bytes]] = []
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    # ------------------------------------------------------------------------------ lifecycle

    def start(self) -> NativeStack:
        from app.db.migrate import upgrade

        # Something else answering /ready on this port would pass for our api: refuse up front.
        _check_port_free(self.host, self.port)
        log.info("migrating %s", _redact(self.settings.resolved_database_url))
        upgrade(self.settings.resolved_database_url)
        env = {**settings_env(self.settings), **self.extra_env}
        gpus = gpu_assignment(self.settings, self.workers, env.get("CUDA_VISIBLE_DEVICES"))
        try:
            self._spawn("api", api_command(self.settings, host=self.host, port=self.port, python=self.python), env)
            for i in range(self.workers):
                worker_env = dict(env)
                if gpus is not None:
                    worker_env["CUDA_VISIBLE_DEVICES"] = gpus[i]
                self._spawn(f"worker-{i}", worker_command(self.settings, name=f"native-{i}-{os.getpid()}@%h",
                                                          python=self.python), worker_env)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("ready at %s (%d worker%s)", self.base_url, self.workers, "" if self.workers == 1 else "s")
        return self

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out: IO[bytes] | None = open(self.log_dir / f"{name}.log", "ab")
            self._logs.append(out)
            stderr = subprocess.STDOUT
        else:
            out, stderr = None, None  # inherit: the lines show up in the caller's terminal, as compose's do
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=stderr, start_new_session=True)
        log.info("started %s (pid %d): %s", name, proc.pid, " ".join(command[1:]))
        with self._lock:
            self.processes[name] = proc

    def wait_ready(self) -> None:
        """Until /ready answers 200; a child that dies meanwhile fails at once, with its log's tail."""
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"{self.base_url}/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.25)
        raise NativeStackError(f"{self.base_url}/ready did not answer 200 within {self.ready_timeout:.0f} s "
                               f"(last: {last}){self._log_tail('api')}")

    def dead(self) -> dict[str, int]:
        """Children that have exited, with their exit codes."""
        with self._lock:
            return {name: proc.returncode for name, proc in self.processes.items() if proc.poll() is not None}

    def check_alive(self) -> None:
        dead = self.dead()
        if dead:
            name, code = next(iter(dead.items()))
            raise NativeStackError(f"{name} exited with code {code}{self._log_tail(name)}")

    def stop(self) -> dict[str, int]:
        """SIGTERM every child's process group, SIGKILL what is left after ``stop_timeout``.

        Returns each child's exit code. Idempotent.
        """
        with self._lock:
            procs = dict(self.processes)
        for name, proc in procs.items():
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for name, proc in procs.items():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) did not stop within %.0f s; killing it", name, proc.pid, self.stop_timeout)
        for name, proc in procs.items():
            # The group, not only the leader: a process the child started must not outlive the stack.
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        for handle in self._logs:
            handle.close()
        self._logs.clear()
        return {name: proc.returncode for name, proc in procs.items()}

    def __enter__(self) -> NativeStack:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _log_tail(self, name: str, lines: int = 30) -> str:
        if self.log_dir is None:
            return ""
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        tail = path.read_bytes().decode("utf-8", "replace").splitlines()[-lines:]
        return f"\n--- last lines of {path} ---\n" + "\n".join(tail)


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as probe:
        # As uvicorn binds: a port left in TIME_WAIT by an earlier run is free, a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0" if host in ("", "::") else host, port))
        except OSError as exc:
            raise NativeStackError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        creds, _, host = rest.rpartition("@")
        return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
    return url


def run_native(settings: Settings, *, workers: int = 1, host: str = "127.0.0.1", port: int = 8000,
               log_dir: Path | None = None) -> int:
    """Start the stack and keep it up until Ctrl-C / SIGTERM (exit 0) or until a child dies (exit 1)."""
    stop = threading.Event()

    def _request_stop(signum, _frame) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = NativeStack(settings, workers=workers, host=host, port=port, log_dir=log_dir)
    try:
        stack.start()
        while not stop.wait(1.0):
            dead = stack.dead()
            if dead:
                log.error("stopping: %s", ", ".join(f"{n} exited with code {c}" for n, c in dead.items()))
                return 1
        return 0
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m svp.native",
                                     description="api + Celery workers on the local PostgreSQL and Redis")
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes (one per GPU)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-dir", type=Path, default=None, help="one log file per process instead of the terminal")
    args = parser.parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return run_native(settings, workers=args.workers, host=args.host, port=args.port, log_dir=args.log_dir)
    except (ValueError, NativeStackError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())

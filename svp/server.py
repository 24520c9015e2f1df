"""Run the service in a background thread of the current process (demo, simulation, tests)."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from collections.abc import Iterator

import httpx
import uvicorn

from app.config import Settings
from app.db.migrate import upgrade
from svp.asgi import create_service


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_service(settings: Settings, *, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Migrates the database, serves the app (embedded worker when no broker) and yields its base URL."""
    upgrade(settings.resolved_database_url)
    port = port or free_port()
    config = uvicorn.Config(create_service(settings), host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="svp-server", daemon=True)
    thread.start()
    base_url = f"http://{host}:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    else:
        server.should_exit = True
        raise RuntimeError("the service did not start within 30 s")
    try:
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=30)

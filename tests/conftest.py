"""Shared fixtures. Database tests run twice: on SQLite and on a real PostgreSQL database that is
created for the test session and dropped after it.

- ``db_url``: parametrized over ``sqlite`` and ``postgres``; migrated with Alembic (the real path).
- ``settings`` / ``app`` / ``client``: an embedded-mode service on that database, blobs in tmp_path.
- ``admin_headers`` and ``make_key``: API keys created through the service layer.

PostgreSQL is reached at ``SVP_TEST_POSTGRES_URL`` (default: trust auth on 127.0.0.1:5432 as
``postgres``). It must be running (README's test command starts it); it is never silently skipped.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from app.config import Settings
from app.db.base import Base
from app.db.migrate import upgrade
from app.db.session import get_engine, session_scope

PG_ADMIN_URL = os.environ.get("SVP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _pg_url(database: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


@contextmanager
def fresh_postgres_database(prefix: str = "svp_test") -> Iterator[str]:
    """An empty PostgreSQL database of its own (URL yielded), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = _pg_url(name)
    try:
        yield url
    finally:
        get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to head; dropped at the end."""
    with fresh_postgres_database() as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite file, copied for each test (migrating once keeps the suite quick)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def _truncate_all(url: str) -> None:
    names = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with get_engine(url).begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "svp.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
        yield url
        get_engine(url).dispose()
    else:
        url = request.getfixturevalue("postgres_database")
        _truncate_all(url)
        yield url


@pytest.fixture
def settings(db_url, tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, _env_file=None)


@pytest.fixture
def app(settings):
    from app.main import create_app

    return create_app(settings)


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def make_key(settings) -> Callable[..., dict[str, str]]:
    """make_key(role="annotator", name="ann-1", project_id=None) -> request headers with a new key."""
    from app.services.keys import create_api_key

    def _make(role: str = "annotator", name: str | None = None, project_id: int | None = None) -> dict[str, str]:
        with session_scope(settings.resolved_database_url) as session:
            _, secret = create_api_key(
                session, role=role, name=name or f"{role}-{uuid.uuid4().hex[:6]}", project_id=project_id
            )
        return {"Authorization": f"Bearer {secret}"}

    return _make


@pytest.fixture
def admin_headers(make_key) -> dict[str, str]:
    return make_key("admin", "admin")

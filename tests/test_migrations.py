"""The Alembic migrations and the SQLAlchemy models agree (no drift), on SQLite and PostgreSQL, and
the migrations run down to base and back up to head."""

from __future__ import annotations


import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from app.db import tables  # noqa: F401  (registers every table on Base.metadata)
from app.db.base import Base
from app.db.migrate import ROOT, alembic_config, upgrade
from app.db.session import get_engine
from tests.conftest import fresh_postgres_database


def drift(url: str) -> list:
    with get_engine(url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_models_match_the_migrated_schema(db_url):
    assert drift(db_url) == []


def test_one_head():
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"several migration heads, merge them: {heads}"


def test_drift_is_detected(db_url):
    # The comparison can fail: a column the migrations do not create shows up as a difference.
    from sqlalchemy import Column, Integer, MetaData, Table

    metadata = MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(metadata)
    Table("project", metadata, Column("not_migrated", Integer), extend_existing=True)
    with get_engine(db_url).connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), metadata)
    assert [d[0] for d in diff] == ["add_column"] and diff[0][3].name == "not_migrated"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_url(request, tmp_path):
    """An empty database of its own: walking the migrations down must not disturb other tests."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'walk.db'}"
        yield url
        get_engine(url).dispose()
        return
    with fresh_postgres_database("svp_migrate") as url:
        yield url


def app_tables(url: str) -> set[str]:
    engine = get_engine(url)
    engine.dispose()  # forget cached schema state between migration steps
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def current_revision(url: str) -> str | None:
    with get_engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_downgrade_to_base_and_upgrade_to_head(fresh_url):
    config = alembic_config(fresh_url)
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]  # base -> head

    # Up one revision at a time, then down one at a time: every step runs on this backend.
    for revision in revisions:
        upgrade(fresh_url, revision)
        assert current_revision(fresh_url) == revision
    assert app_tables(fresh_url) == set(Base.metadata.tables)
    with get_engine(fresh_url).begin() as conn:
        conn.execute(text("INSERT INTO api_key (key_hash, prefix, role, name, created_at) "
                          "VALUES ('h', 'p', 'admin', 'n', CURRENT_TIMESTAMP)"))
    for _ in revisions:
        command.downgrade(config, "-1")
    assert current_revision(fresh_url) is None
    assert app_tables(fresh_url) == set()

    upgrade(fresh_url)
    assert current_revision(fresh_url) == head
    assert app_tables(fresh_url) == set(Base.metadata.tables)
    assert drift(fresh_url) == []


def test_cli_db_upgrade_and_keys_create(tmp_path, monkeypatch, capsys):
    from app.cli import main

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("SVP_DATABASE_URL", url)
    assert main(["db", "upgrade"]) == 0
    capsys.readouterr()
    assert current_revision(url) == ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert main(["keys", "create", "--role", "admin", "--name", "ops"]) == 0
    secret = capsys.readouterr().out.strip()
    assert secret.startswith("svp_")
    with get_engine(url).connect() as conn:
        assert conn.execute(text("SELECT role, name FROM api_key")).all() == [("admin", "ops")]


def test_serve_migrates_then_answers(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVP_")}
    env["SVP_DATA_DIR"] = str(tmp_path / "data")
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--log-level", "warning"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read().decode()
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "svp serve did not answer within 60 s"
                time.sleep(0.2)
        assert response.status_code == 200 and response.json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/projects", timeout=5).status_code == 401
        url = f"sqlite:///{(tmp_path / 'data' / 'svp.db').resolve()}"
        assert app_tables(url) == set(Base.metadata.tables)  # migrated before serving
    finally:
        process.terminate()
        process.wait(timeout=30)

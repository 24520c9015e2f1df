"""Alembic environment: migrates the database named by the caller or by the service settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from app.config import Settings
from app.db.base import Base
from app.db import tables  # noqa: F401  (registers the tables on Base.metadata)

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    return config.attributes.get("url") or config.get_main_option("sqlalchemy.url") or Settings().resolved_database_url


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = database_url()
    if url.startswith("sqlite"):
        from pathlib import Path

        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        # render_as_batch: SQLite can only ALTER through table copies; batch mode does that for us.
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

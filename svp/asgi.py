"""The ASGI app for ``svp serve`` and the demo: with no broker configured, an in-process worker runs
the jobs (embedded mode); with one, jobs go to Celery workers by name.

Deployments with a broker can equally use ``app.main:app`` (the api image has no torch).
"""

from __future__ import annotations

from fastapi import FastAPI

from app.config import Settings
from app.main import create_app


def create_service(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if settings.embedded:
        from worker.embedded import InProcessDispatcher

        return create_app(settings, dispatcher=InProcessDispatcher(settings))
    return create_app(settings)


def app_factory() -> FastAPI:
    """For ``uvicorn --factory svp.asgi:app_factory``: settings from the environment."""
    return create_service()

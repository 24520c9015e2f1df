"""Builds the FastAPI app and mounts the routers; nothing else lives here."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.config import Settings, settings as default_settings
from app.db.session import get_sessionmaker
from app.errors import install_error_handlers
from app.observability import install_observability
from app.queue import CeleryDispatcher
from app.routers import coresets, health, items, jobs, keys, label_studio, labels, projects, queries, reports, rounds
from app.storage import BlobStore

API_DESCRIPTION = """
Selection via Proxy (Coleman et al., ICLR 2020) as a labeling backend: annotation tools ask which
items to label next and send labels; a cheap proxy model, retrained after each labeled batch,
picks the next batch; the expensive target model is trained once the budget is reached.

Every route but `/health` needs an API key: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
Errors have one shape: `{"error": {"code": ..., "message": ..., "details": [...]}}`.
"""


def create_app(settings: Settings | None = None, dispatcher=None) -> FastAPI:
    settings = settings or default_settings

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # A dispatcher with a life of its own (the embedded worker) starts and stops with the app.
        running = app.state.dispatcher
        if hasattr(running, "start"):
            running.start()
        try:
            yield
        finally:
            if hasattr(running, "shutdown"):
                running.shutdown()

    app = FastAPI(title="SVP labeling service", version="0.1.0", description=API_DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.sessionmaker = get_sessionmaker(settings.resolved_database_url)
    app.state.blobs = BlobStore(settings.resolved_blob_dir)
    if dispatcher is None and settings.broker_url:
        dispatcher = CeleryDispatcher(settings.broker_url, settings.gpu_queue)
    app.state.dispatcher = dispatcher
    install_error_handlers(app)
    install_observability(app, settings)  # logs, request ids, /metrics registry
    for module in (health, keys, projects, items, labels, queries, rounds, jobs, reports, coresets, label_studio):
        app.include_router(module.router)
    return app


app = create_app()

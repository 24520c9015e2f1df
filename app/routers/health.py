"""Liveness, readiness and metrics: the only routes that need no API key."""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.deps import SessionDep
from app.errors import error_body
from app.observability import METRICS_CONTENT_TYPE, metrics_for, readiness

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"]


@router.get(
    "/health",
    summary="Service health",
    description="`ok` when the service is up and its database answers; 503 otherwise. No API key needed.",
    response_model=Health,
    responses={503: {"description": "the database does not answer"}},
)
def health(session: SessionDep):
    try:
        session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        log.exception("health check: database unreachable")
        return JSONResponse(error_body("unavailable", "the database does not answer"), status_code=503)
    return Health(status="ok")


@router.get(
    "/ready",
    summary="Readiness",
    description=(
        "200 when the database answers `SELECT 1` and, when a broker is configured, Redis answers PING; "
        "503 naming the failing part otherwise. No API key needed."
    ),
    responses={503: {"description": "a dependency does not answer; `details` names it"}},
)
def ready(request: Request):
    checks = readiness(request.app.state.sessionmaker, request.app.state.settings)
    failing = sorted(name for name, state in checks.items() if state.startswith("error"))
    if failing:
        details = [{"check": name, "status": state} for name, state in checks.items()]
        return JSONResponse(error_body("not_ready", f"not ready: {', '.join(failing)}", details), status_code=503)
    return {"status": "ready", "checks": checks}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Request latency, job queue depth, job outcomes and durations, labeling rate. No API key needed.",
    response_class=Response,
)
def metrics(request: Request) -> Response:
    return Response(metrics_for(request.app).render(), media_type=METRICS_CONTENT_TYPE)

"""Liveness and readiness: the only route that needs no API key."""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.deps import SessionDep
from app.errors import error_body

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

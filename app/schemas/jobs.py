"""Background jobs as read by clients."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from app.schemas.common import ReadModel

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobType = Literal["select_round", "train_target", "coreset"]


class JobRead(ReadModel):
    id: int
    project_id: int
    type: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled.")
    progress: dict[str, Any] = Field(description="fraction, phase, epoch, message, as the worker reports them.")
    params: dict[str, Any]
    result: dict[str, Any]
    error: str | None
    attempts: int
    cancel_requested: bool
    worker: str | None
    created_at: datetime
    enqueued_at: datetime | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None

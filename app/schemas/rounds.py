"""Active-learning rounds as read by clients (workers fill timings and metrics)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from app.schemas.common import ReadModel


class RoundTimings(ReadModel):
    train_s: float | None = Field(None, description="Proxy training time.")
    inference_s: float | None = Field(None, description="Scoring the unlabeled pool.")
    ranking_s: float | None = Field(None, description="Ranking / selecting the batch.")
    total_s: float | None = Field(None, description="Whole selection job, data loading included.")


class RoundRead(ReadModel):
    index: int
    status: str = Field(description="selecting, open or completed.")
    strategy: str
    selector: dict[str, Any] | None = Field(description="The proxy spec that selected this round, if any.")
    size: int = Field(description="Number of items queried in this round.")
    labeled_at_start: int = Field(description="Labeled pool items when the round was created.")
    labeled: int = Field(description="Items of this round's batch labeled so far.")
    job_id: int | None
    timings: RoundTimings
    metrics: dict[str, Any]
    created_at: datetime
    opened_at: datetime | None
    finished_at: datetime | None

"""Leasing queries (what to label next) and the round lifecycle actions an admin can take."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from app.schemas.common import ReadModel, RequestModel
from app.schemas.labels import MAX_ID

LEASE_STATUSES = ("ok", "selecting", "all_leased", "training_target", "completed", "not_started", "failed")


class LeasedItem(ReadModel):
    item_id: int
    external_id: str
    rank: int = Field(description="Position in the round's batch; 0 is the most wanted.")
    score: float | None = Field(description="The selection score that ranked it (None for random picks).")
    lease_expires_at: datetime = Field(description="The lease ends here unless labeled or renewed by calling next again.")
    content_url: str = Field(description="Where to fetch the item's content (same API key).")
    text: str | None = Field(None, description="Inline content of text items.")


class LeaseResponse(ReadModel):
    round: int | None = Field(description="Index of the project's current round.")
    items: list[LeasedItem]
    status: str = Field(description="ok, or why nothing was handed out: " + ", ".join(LEASE_STATUSES[1:]) + ".")
    reason: str | None = Field(None, description="Human-readable explanation when status is not ok.")
    retry_after: int | None = Field(None, description="Seconds to wait before asking again (also in Retry-After).")


class ReleaseRequest(RequestModel):
    item_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(min_length=1, max_length=1000, description="Items whose lease the caller gives back.")


class ReleaseResponse(ReadModel):
    released: list[int] = Field(description="Items that were leased to the caller and are free again.")


class RoundSummary(ReadModel):
    index: int
    status: str
    strategy: str
    size: int
    labeled_at_start: int
    job_id: int | None
    opened_at: datetime | None
    finished_at: datetime | None


class LifecycleResponse(ReadModel):
    """State of a project after start, advance or train-target."""

    project_id: int
    status: str = Field(description="The project's status: active, training_target, ...")
    current_round: int | None
    round: RoundSummary | None = Field(description="The current round (the one just created or opened).")
    job_id: int | None = Field(None, description="The job queued by this action, if any.")

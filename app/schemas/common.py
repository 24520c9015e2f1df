"""Base classes shared by the request and response models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestModel(BaseModel):
    """Request bodies reject unknown fields, so a misspelt setting is a 422 instead of being ignored."""

    model_config = ConfigDict(extra="forbid")


class ReadModel(BaseModel):
    """Response bodies, built from ORM rows."""

    model_config = ConfigDict(from_attributes=True)

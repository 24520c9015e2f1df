"""API key requests and responses. Secrets appear once, in the creation response; hashes never."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from app.schemas.common import ReadModel, RequestModel


class KeyCreate(RequestModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"role": "annotator", "name": "alice", "project_id": 1},
                {"role": "admin", "name": "ops"},
            ]
        },
    )

    role: Literal["admin", "annotator"]
    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")] = Field(
        description="Who uses the key; annotations are recorded under this name."
    )
    project_id: int | None = Field(None, ge=1, description="Scope the key to one project; null: every project.")


class KeyRead(ReadModel):
    id: int
    prefix: str = Field(description="The secret's first characters, to recognise a key in lists.")
    role: str
    name: str
    project_id: int | None
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyRead):
    secret: str = Field(description="The key itself. Shown only in this response; store it now.")

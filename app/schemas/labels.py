"""Labels sent by annotation tools, and the label history of an item."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, field_validator, model_validator

from app.schemas.common import ReadModel, RequestModel
from app.services.importers.prepare import check_json_value

MAX_BULK_LABELS = 1000
MAX_ID = 2**31 - 1  # ids are 32-bit integer columns; larger values would fail in the database, not here


class LabelCreate(RequestModel):
    item_id: int | None = Field(None, ge=1, le=MAX_ID, description="The service's item id; or give external_id.")
    external_id: str | None = Field(None, min_length=1, max_length=512, description="The client's item id.")
    label: str = Field(min_length=1, max_length=200, description="One of the project's classes.")
    meta: dict[str, Any] | None = Field(None, description="Free-form data kept with the annotation.")

    @field_validator("external_id", "label", "meta")
    @classmethod
    def _storable(cls, value: Any, info) -> Any:
        # NUL characters, lone surrogates, NaN: the database would refuse them (a 500 on PostgreSQL).
        if value is not None:
            check_json_value(value, what=info.field_name)
        return value

    @model_validator(mode="after")
    def _one_reference(self) -> LabelCreate:
        if (self.item_id is None) == (self.external_id is None):
            raise ValueError("give exactly one of item_id and external_id")
        return self


class BulkLabelEntry(LabelCreate):
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=200, description="Replaying an entry with the same key writes nothing new."
    )

    @field_validator("idempotency_key")
    @classmethod
    def _storable_key(cls, value: str | None) -> str | None:
        if value is not None:
            check_json_value(value, what="idempotency_key")
        return value


class BulkLabelCreate(RequestModel):
    labels: list[BulkLabelEntry] = Field(min_length=1, max_length=MAX_BULK_LABELS)


class LabelRead(ReadModel):
    annotation_id: int
    item_id: int
    external_id: str
    label: str | None
    annotator: str
    round_index: int | None = Field(description="The round whose query requested this label, if any.")
    created_at: datetime
    replayed: bool = Field(description="True when this repeats an earlier request and nothing new was written.")


class LabelResponse(LabelRead):
    project_status: str
    current_round: int | None


class BulkLabelResponse(ReadModel):
    labels: list[LabelRead]
    project_status: str
    current_round: int | None


class AnnotationRead(ReadModel):
    id: int
    item_id: int
    label: str | None = Field(description="None records a retraction.")
    annotator: str
    round_index: int | None
    meta: dict[str, Any]
    created_at: datetime

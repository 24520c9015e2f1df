"""Item import, metadata and listing models.

Import rows are checked by the import service (``app.services.importers``), not here, so that every
bad row is reported in one 422 as ``{"row": n, "problem": ...}`` rather than as a schema error.
``ItemIn`` documents their shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Split = Literal["pool", "test"]


class ItemIn(BaseModel):
    """One item of a JSON import."""

    model_config = ConfigDict(extra="forbid")

    external_id: str | int | None = Field(
        None, description="Client's id, unique per project. Default: sha256 of the content."
    )
    text: str | None = Field(None, description="The text (text projects).")
    image_base64: str | None = Field(None, description="An encoded image file, base64 (image projects).")
    label: str | int | None = Field(
        None, description="Class name, or index into the project's classes. Required for the test split."
    )
    meta: dict[str, Any] | None = Field(None, description="Free-form JSON kept with the item.")


class ItemsImport(BaseModel):
    """JSON import body. ``items`` are checked row by row (bad rows are listed in the 422)."""

    model_config = ConfigDict(extra="forbid")

    split: str = Field(..., description="'pool' or 'test'.")
    items: list[Any] = Field(..., description="Objects shaped like ItemIn.")

    @classmethod
    def openapi_schema(cls) -> dict[str, Any]:
        """Request-body schema for the OpenAPI document (the body is parsed by the route itself)."""
        return {
            "type": "object",
            "required": ["split", "items"],
            "additionalProperties": False,
            "properties": {
                "split": {"type": "string", "enum": ["pool", "test"]},
                "items": {"type": "array", "items": ItemIn.model_json_schema()},
            },
        }


UPLOAD_OPENAPI_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["split"],
    "properties": {
        "split": {"type": "string", "enum": ["pool", "test"]},
        "file": {
            "type": "string",
            "format": "binary",
            "description": "One .jsonl or .csv (text projects), or one .zip or .npz (image projects).",
        },
        "files": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "Image files (image projects).",
        },
        "labels": {"type": "string", "description": "JSON object mapping image file names to classes."},
        "root": {"type": "string", "description": "Folder inside the zip that holds the class folders."},
    },
}


class IdRange(BaseModel):
    first: int
    last: int


class ImportRead(BaseModel):
    imported: int = Field(..., description="Items inserted.")
    labeled: int = Field(..., description="Of those, items that came with a label.")
    split: Split
    duplicates: list[dict[str, Any]] = Field(
        ...,
        description="Items whose content the project already held or that repeated in the upload, not stored "
        'again: {"row" or "file", "external_id", "existing_item_id"} (the first 1,000).',
    )
    duplicate_count: int
    item_ids_range: IdRange | None = Field(None, description="Smallest and largest id of the inserted items.")


class ItemRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    external_id: str
    split: Split
    content_type: str
    content_sha256: str
    size_bytes: int
    label: str | None
    labeled_at: datetime | None
    label_round: int | None
    meta: dict[str, Any]
    created_at: datetime


class ItemPage(BaseModel):
    items: list[ItemRead]
    next_after_id: int | None = Field(None, description="Pass as after_id for the next page; null at the end.")

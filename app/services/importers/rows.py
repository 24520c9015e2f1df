"""The records passed between the import parsers, the row checks and the import service.

Rows are referred to as ``{"row": n}`` (JSON body: index in ``items``, from 0; JSONL/CSV: line number
in the file, from 1; npz: index in the arrays, from 0), ``{"file": name}`` (image files, zip members)
or ``{"field": name}`` (a form field such as ``labels`` or ``root``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """An uploaded file as the services see it (no framework types): a name, the client's content
    type, and a seekable binary file (the request's spooled temporary file)."""

    filename: str
    content_type: str | None
    file: IO[bytes]
    size: int | None = None


@dataclass(slots=True)
class Problem:
    ref: dict[str, Any]
    problem: str

    def as_detail(self) -> dict[str, Any]:
        return {**self.ref, "problem": self.problem}


@dataclass(slots=True)
class RawRow:
    """One candidate item as the parser read it. Exactly one of text / data / pixels is expected."""

    ref: dict[str, Any]
    external_id: Any = None
    text: Any = None
    data: bytes | None = None  # encoded image file
    pixels: np.ndarray | None = None  # decoded image (npz); stored as PNG
    label: Any = None
    meta: Any = None
    extra: dict[str, Any] = field(default_factory=dict)  # parser-provided meta (file name, zip path)


@dataclass(slots=True)
class Prepared:
    ref: dict[str, Any]
    external_id: str
    content_type: str
    sha256: str
    size_bytes: int
    label: str | None
    meta: dict[str, Any]
    text: str | None = None
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class ImportContext:
    modality: str  # image | text
    classes: tuple[str, ...]
    split: str
    max_item_bytes: int
    max_image_pixels: int

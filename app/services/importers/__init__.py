"""Parsers for every import format, and the per-row checks; pure functions, no database.

Each parser yields ``RawRow`` or ``Problem``; ``prepare`` turns a ``RawRow`` into a ``Prepared`` item
or a ``Problem``. The import service (``app.services.items``) runs them twice over the same spooled
upload: once to check everything, once to write.
"""

from app.services.importers.formats import ACCEPTED, FORMATS_BY_MODALITY, detect_format
from app.services.importers.images import inspect_image, iter_image_files, iter_npz, iter_zip
from app.services.importers.prepare import check_json_value, prepare, resolve_label
from app.services.importers.rows import ImportContext, Prepared, Problem, RawRow, UploadedFile
from app.services.importers.text import iter_csv, iter_json_items, iter_jsonl, loads_strict

__all__ = [
    "ACCEPTED",
    "FORMATS_BY_MODALITY",
    "ImportContext",
    "Prepared",
    "Problem",
    "RawRow",
    "UploadedFile",
    "check_json_value",
    "detect_format",
    "inspect_image",
    "iter_csv",
    "iter_image_files",
    "iter_json_items",
    "iter_jsonl",
    "iter_npz",
    "iter_zip",
    "loads_strict",
    "prepare",
    "resolve_label",
]

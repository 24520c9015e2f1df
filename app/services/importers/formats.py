"""Which parser an uploaded file needs, from its name's extension (first) or its content type."""

from __future__ import annotations

from pathlib import PurePosixPath

JSONL = "jsonl"
CSV = "csv"
ZIP = "zip"
NPZ = "npz"
IMAGE = "image"

FORMATS_BY_MODALITY = {"text": (JSONL, CSV), "image": (IMAGE, ZIP, NPZ)}
ACCEPTED = {
    "text": "one .jsonl or .csv file",
    "image": "image files (.png, .jpg, .gif, .bmp, .webp, .tif), one .zip in image-folder layout, or one .npz",
}

_BY_EXTENSION = {
    ".jsonl": JSONL,
    ".ndjson": JSONL,
    ".csv": CSV,
    ".zip": ZIP,
    ".npz": NPZ,
    ".png": IMAGE,
    ".jpg": IMAGE,
    ".jpeg": IMAGE,
    ".gif": IMAGE,
    ".bmp": IMAGE,
    ".webp": IMAGE,
    ".tif": IMAGE,
    ".tiff": IMAGE,
}
_BY_CONTENT_TYPE = {
    "application/x-ndjson": JSONL,
    "application/jsonl": JSONL,
    "application/x-jsonlines": JSONL,
    "application/jsonlines": JSONL,
    "text/csv": CSV,
    "application/zip": ZIP,
    "application/x-zip-compressed": ZIP,
    "image/png": IMAGE,
    "image/jpeg": IMAGE,
    "image/gif": IMAGE,
    "image/bmp": IMAGE,
    "image/webp": IMAGE,
    "image/tiff": IMAGE,
}


def detect_format(filename: str | None, content_type: str | None) -> str | None:
    """``jsonl`` | ``csv`` | ``zip`` | ``npz`` | ``image``, or None when neither the extension nor
    the content type is one we read."""
    suffix = PurePosixPath((filename or "").replace("\\", "/")).suffix.lower()
    if suffix in _BY_EXTENSION:
        return _BY_EXTENSION[suffix]
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return _BY_CONTENT_TYPE.get(media_type)

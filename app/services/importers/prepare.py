"""What every import format yields, and the checks that do not depend on the format.

Parsers (``text.py``, ``images.py``) turn an upload into a stream of ``RawRow`` (one candidate item,
not yet checked) or ``Problem`` (a row that could not even be parsed). ``prepare`` checks one
``RawRow`` against the project (modality, classes, split, size limits, decodable image) and returns
either a ``Prepared`` item, ready to be written, or a ``Problem``. Everything here is pure: no
database, no blob store, no HTTP.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from app.services.importers.images import encode_png, inspect_image
from app.services.importers.rows import ImportContext, Prepared, Problem, RawRow

MAX_EXTERNAL_ID = 512  # item.external_id is String(512)
MAX_META_DEPTH = 32
MAX_META_CHARS = 64 * 1024

TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"


def resolve_label(label: Any, classes: tuple[str, ...]) -> str | None:
    """A class name, or a class index (int) into ``classes``; None means unlabeled.

    Raises ValueError naming the problem.
    """
    if label is None:
        return None
    if isinstance(label, bool):  # bool is an int subclass: True must not mean class 1
        raise ValueError(f"label must be a class name or index, not {label!r}")
    if isinstance(label, (int, np.integer)):
        index = int(label)
        if not 0 <= index < len(classes):
            raise ValueError(f"label index {index} is out of range (the project has {len(classes)} classes)")
        return classes[index]
    if isinstance(label, str):
        if label not in classes:
            shown = ", ".join(repr(c) for c in classes[:20])
            raise ValueError(f"unknown class {label!r} (classes: {shown}{', ...' if len(classes) > 20 else ''})")
        return label
    raise ValueError(f"label must be a class name or index, not {type(label).__name__}")


def check_json_value(value: Any, *, what: str = "meta") -> None:
    """Reject what JSON columns cannot hold on every backend: NaN/Infinity, NUL characters, lone
    surrogates (PostgreSQL's jsonb refuses them, which would otherwise surface as a 500)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_META_DEPTH:
            raise ValueError(f"{what} is nested deeper than {MAX_META_DEPTH} levels")
        if isinstance(node, dict):
            for key, child in node.items():
                if not isinstance(key, str):
                    raise ValueError(f"{what} keys must be strings")
                _check_str(key, what)
                stack.append((child, depth + 1))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
        elif isinstance(node, str):
            _check_str(node, what)
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise ValueError(f"{what} contains a non-finite number ({node!r})")
        elif node is None or isinstance(node, (bool, int)):
            pass
        else:
            raise ValueError(f"{what} contains a value that is not JSON ({type(node).__name__})")


def _check_str(value: str, what: str) -> None:
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} contains text that is not valid Unicode (a lone surrogate)") from None


def _external_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, np.integer, np.str_)):
        raise ValueError(f"external_id must be a string or an integer, not {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise ValueError("external_id is empty")
    if len(text) > MAX_EXTERNAL_ID:
        raise ValueError(f"external_id is longer than {MAX_EXTERNAL_ID} characters")
    _check_str(text, "external_id")
    return text


def _meta(row: RawRow) -> dict[str, Any]:
    meta = row.meta
    if meta is None:
        meta = {}
    elif not isinstance(meta, dict):
        raise ValueError(f"meta must be a JSON object, not {type(meta).__name__}")
    if row.extra:
        meta = {**row.extra, **meta}
    check_json_value(meta)
    if len(repr(meta)) > MAX_META_CHARS:  # cheap upper-bound proxy for its JSON size
        raise ValueError(f"meta is larger than {MAX_META_CHARS} characters")
    return meta


def prepare(row: RawRow, ctx: ImportContext, *, decode: bool = True) -> Prepared | Problem:
    """Check one row against the project; ``decode=False`` skips the full pixel decode of images
    (for a second pass over rows that already passed a first, decoding one)."""
    try:
        return _prepare(row, ctx, decode)
    except ValueError as exc:
        return Problem(row.ref, str(exc))


def _prepare(row: RawRow, ctx: ImportContext, decode: bool) -> Prepared:
    external_id = _external_id(row.external_id)
    label = resolve_label(row.label, ctx.classes)
    if ctx.split == "test" and label is None:
        raise ValueError("test items need a label (ground truth for evaluation)")
    meta = _meta(row)

    if ctx.modality == "text":
        if row.data is not None or row.pixels is not None:
            raise ValueError("this is a text project: items need 'text', not images")
        text = row.text
        if text is None:
            raise ValueError("missing 'text'")
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, not {type(text).__name__}")
        if not text.strip():
            raise ValueError("text is empty")
        if "\x00" in text:
            raise ValueError("text contains a NUL character")
        try:
            encoded = text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text is not valid Unicode (a lone surrogate)") from None
        if len(encoded) > ctx.max_item_bytes:
            raise ValueError(f"text is {len(encoded)} bytes, over the limit of {ctx.max_item_bytes}")
        sha = hashlib.sha256(encoded).hexdigest()
        return Prepared(
            ref=row.ref,
            external_id=external_id or sha,
            content_type=TEXT_CONTENT_TYPE,
            sha256=sha,
            size_bytes=len(encoded),
            label=label,
            meta=meta,
            text=text,
        )

    if row.text is not None:
        raise ValueError("this is an image project: items need an image, not 'text'")
    if row.pixels is not None:
        data = encode_png(row.pixels, max_pixels=ctx.max_image_pixels)
    elif row.data is not None:
        data = row.data
    else:
        raise ValueError("missing image content")
    # Checked before inspecting: an over-size file is refused without being decoded.
    if len(data) > ctx.max_item_bytes:
        raise ValueError(f"image is {len(data)} bytes, over the limit of {ctx.max_item_bytes}")
    content_type = "image/png" if row.pixels is not None else inspect_image(
        data, max_pixels=ctx.max_image_pixels, decode=decode
    )
    sha = hashlib.sha256(data).hexdigest()
    return Prepared(
        ref=row.ref,
        external_id=external_id or sha,
        content_type=content_type,
        sha256=sha,
        size_bytes=len(data),
        label=label,
        meta=meta,
        data=data,
    )

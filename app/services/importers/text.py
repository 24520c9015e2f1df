"""Text-shaped imports: the JSON body's ``items``, JSONL and CSV files.

The file parsers read the request's spooled upload line by line (never the whole file at once), so
an import of any size holds one line in memory at a time, and can be run twice (check, then write).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from collections.abc import Iterator
from typing import IO, Any

from app.services.importers.rows import Problem, RawRow

ITEM_FIELDS = frozenset({"external_id", "text", "image_base64", "label", "meta"})
LINE_FIELDS = frozenset({"external_id", "text", "label", "meta"})
CSV_FIELDS = ("text", "label", "external_id")
_DRAIN_CHUNK = 1 << 20


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; they are not JSON and PostgreSQL's jsonb refuses them.
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def loads_strict(data: bytes | str) -> Any:
    """json.loads that rejects NaN/Infinity; bytes must be UTF-8 (a leading BOM is allowed)."""
    if isinstance(data, bytes):
        data = data.decode("utf-8-sig")
    return _DECODER.decode(data)


def _unknown_keys(obj: dict[str, Any], allowed: frozenset[str]) -> str | None:
    unknown = sorted(k for k in obj if k not in allowed)
    if unknown:
        return f"unknown field(s) {', '.join(repr(k) for k in unknown)}; allowed: {', '.join(sorted(allowed))}"
    return None


def iter_json_items(items: list[Any]) -> Iterator[RawRow | Problem]:
    """Rows of the JSON import body; ``image_base64`` carries an encoded image for image projects."""
    for index, obj in enumerate(items):
        ref = {"row": index}
        if not isinstance(obj, dict):
            yield Problem(ref, "each item must be a JSON object")
            continue
        if problem := _unknown_keys(obj, ITEM_FIELDS):
            yield Problem(ref, problem)
            continue
        data = None
        encoded = obj.get("image_base64")
        if encoded is not None:
            if not isinstance(encoded, str):
                yield Problem(ref, "image_base64 must be a string")
                continue
            try:
                data = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                yield Problem(ref, "image_base64 is not valid base64")
                continue
        yield RawRow(
            ref=ref,
            external_id=obj.get("external_id"),
            text=obj.get("text"),
            data=data,
            label=obj.get("label"),
            meta=obj.get("meta"),
        )


def iter_jsonl(fileobj: IO[bytes], *, max_line_bytes: int) -> Iterator[RawRow | Problem]:
    """One ``{"text", "label"?, "external_id"?, "meta"?}`` object per line; blank lines are skipped."""
    fileobj.seek(0)
    line_number = 0
    while True:
        line = fileobj.readline(max_line_bytes + 1)
        if not line:
            return
        line_number += 1
        ref = {"row": line_number}
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            # Skip the rest of an overlong line without holding it in memory.
            while (more := fileobj.readline(_DRAIN_CHUNK)) and not more.endswith(b"\n"):
                pass
            yield Problem(ref, f"line is longer than {max_line_bytes} bytes")
            continue
        if not line.strip():
            continue
        try:
            obj = loads_strict(line)
        except json.JSONDecodeError as exc:
            yield Problem(ref, f"malformed JSON: {exc.msg} (column {exc.colno})")
            continue
        except UnicodeDecodeError:
            yield Problem(ref, "the line is not UTF-8 text")
            continue
        except ValueError as exc:  # NaN/Infinity
            yield Problem(ref, f"malformed JSON: {exc}")
            continue
        if not isinstance(obj, dict):
            yield Problem(ref, "each line must be a JSON object")
            continue
        if problem := _unknown_keys(obj, LINE_FIELDS):
            yield Problem(ref, problem)
            continue
        yield RawRow(
            ref=ref,
            external_id=obj.get("external_id"),
            text=obj.get("text"),
            label=obj.get("label"),
            meta=obj.get("meta"),
        )


def iter_csv(fileobj: IO[bytes], *, max_field_bytes: int) -> Iterator[RawRow | Problem]:
    """A UTF-8 CSV with a header naming ``text`` and optionally ``label`` and ``external_id``; any
    other column goes into the item's meta. Empty ``label`` / ``external_id`` cells mean none."""
    # The field limit is process-wide in the csv module; it is only ever raised, to fit one item.
    if csv.field_size_limit() < max_field_bytes:
        csv.field_size_limit(max_field_bytes)
    fileobj.seek(0)
    stream = io.TextIOWrapper(fileobj, encoding="utf-8-sig", newline="")
    reader = csv.reader(stream)
    try:
        try:
            header = next(reader)
        except StopIteration:
            yield Problem({"row": 1}, "the CSV file is empty; it needs a header row with a 'text' column")
            return
        header = [name.strip() for name in header]
        if "text" not in header:
            found = ", ".join(repr(h) for h in header[:20])
            yield Problem({"row": 1}, f"the CSV header has no 'text' column (found: {found})")
            return
        duplicated = sorted({h for h in header if header.count(h) > 1})
        if duplicated:
            yield Problem({"row": 1}, f"the CSV header repeats column(s) {duplicated}")
            return
        extra_columns = [h for h in header if h not in CSV_FIELDS]
        previous_end = reader.line_num
        for record in reader:
            line_number, previous_end = previous_end + 1, reader.line_num
            ref = {"row": line_number}
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                yield Problem(ref, f"row has {len(record)} fields, the header has {len(header)}")
                continue
            cells = dict(zip(header, record))
            yield RawRow(
                ref=ref,
                text=cells["text"],
                label=cells.get("label") or None,
                external_id=cells.get("external_id") or None,
                meta={name: cells[name] for name in extra_columns} or None,
            )
    except UnicodeDecodeError:
        yield Problem({"row": reader.line_num + 1}, "the file is not UTF-8 text")
    except csv.Error as exc:
        yield Problem({"row": reader.line_num}, f"malformed CSV: {exc}")
    finally:
        # Give the upload's file back without closing it (it is read again by the write pass).
        stream.detach()

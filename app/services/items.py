"""Items: import (every format), metadata, listing and content.

Imports are all-or-nothing and stream. The same row source (the JSON body, or the request's spooled
upload file) is read twice: a first pass checks every row and writes nothing; only if every row is
good does a second pass write blobs and insert rows in batches, deduplicating against the project's
existing items with one indexed query per batch. Both passes hold one batch at a time, so memory
does not grow with the size of the import. Everything happens in the caller's transaction: an error
raised by the second pass (e.g. an external_id taken by other content) rolls the whole import back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, any_, bindparam, insert, literal, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import tables as t
from app.db.base import utcnow
from app.errors import Conflict, NotFound, Unprocessable, UnsupportedMediaType
from app.services.importers import (
    FORMATS_BY_MODALITY,
    ImportContext,
    Prepared,
    Problem,
    RawRow,
    UploadedFile,
    detect_format,
    iter_csv,
    iter_image_files,
    iter_json_items,
    iter_jsonl,
    iter_npz,
    iter_zip,
    loads_strict,
    prepare,
)
from app.services.importers import formats as fmt
from app.storage import BlobStore

log = logging.getLogger(__name__)

BATCH_SIZE = 2000
MAX_LISTED_PROBLEMS = 1000
MAX_LISTED_DUPLICATES = 1000
IMPORT_ANNOTATOR = "import"
SPLITS = (t.SPLIT_POOL, t.SPLIT_TEST)
BLOB_KIND = "items"

RowSource = Callable[[], Iterable[RawRow | Problem]]


@dataclass
class ImportResult:
    split: str
    imported: int = 0
    labeled: int = 0
    duplicate_count: int = 0
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    first_item_id: int | None = None
    last_item_id: int | None = None


@dataclass(frozen=True)
class ItemContent:
    media_type: str
    text: str | None = None
    path: Path | None = None


# --- import ------------------------------------------------------------------------------------


def import_json(
    session: Session,
    *,
    project: t.Project,
    split: Any,
    items: list[Any],
    blobs: BlobStore,
    settings: Settings,
) -> ImportResult:
    """Import the items of a JSON body (``text`` for text projects, ``image_base64`` for images)."""
    ctx = _start(project, split, settings)
    return _run(session, project=project, ctx=ctx, rows=lambda: iter_json_items(items), blobs=blobs)


def import_upload(
    session: Session,
    *,
    project: t.Project,
    split: Any,
    files: list[UploadedFile],
    labels: str | None,
    root: str | None,
    blobs: BlobStore,
    settings: Settings,
) -> ImportResult:
    """Import an uploaded file (.jsonl, .csv, .zip, .npz) or a set of image files."""
    ctx = _start(project, split, settings)
    rows = _upload_rows(project, files, labels=labels, root=root, settings=settings)
    return _run(session, project=project, ctx=ctx, rows=rows, blobs=blobs)


def _start(project: t.Project, split: Any, settings: Settings) -> ImportContext:
    if project.status == t.PROJECT_COMPLETED:
        raise Conflict(f"project {project.id} is completed; it takes no more items")
    if split not in SPLITS:
        raise Unprocessable(
            "invalid split", details=[{"field": "split", "problem": f"split must be 'pool' or 'test', not {split!r}"}]
        )
    return ImportContext(
        modality=project.modality,
        classes=tuple(str(c) for c in project.classes),
        split=split,
        max_item_bytes=settings.max_item_bytes,
        max_image_pixels=settings.max_image_pixels,
    )


def _field_problem(name: str, problem: str) -> Unprocessable:
    return Unprocessable(f"invalid {name}", details=[{"field": name, "problem": problem}])


def _upload_rows(
    project: t.Project, files: list[UploadedFile], *, labels: str | None, root: str | None, settings: Settings
) -> RowSource:
    """The row source for an upload, after checking the combination of files and fields."""
    if not files:
        raise _field_problem("file", "no file uploaded: send 'file' (or 'files' for image files)")
    accepted = FORMATS_BY_MODALITY[project.modality]
    formats = []
    for upload in files:
        kind = detect_format(upload.filename, upload.content_type)
        if kind is None or kind not in accepted:
            what = f"{upload.filename!r} ({upload.content_type or 'no content type'})"
            raise UnsupportedMediaType(
                f"cannot import {what} into a {project.modality} project; it accepts {fmt.ACCEPTED[project.modality]}",
                details=[{"file": upload.filename, "problem": "unsupported format"}],
            )
        formats.append(kind)
    if len(files) > 1 and any(kind != fmt.IMAGE for kind in formats):
        raise _field_problem("file", "upload one .jsonl, .csv, .zip or .npz file at a time, or only image files")
    kind = formats[0]
    if labels is not None and kind != fmt.IMAGE:
        raise _field_problem("labels", "'labels' applies to uploads of image files only")
    if root is not None and kind != fmt.ZIP:
        raise _field_problem("root", "'root' applies to .zip uploads only")

    upload = files[0]
    classes = tuple(str(c) for c in project.classes)
    if kind == fmt.JSONL:
        # A line holds one item's text, JSON-escaped (up to 6 bytes per character), plus its meta.
        max_line = 6 * settings.max_item_bytes + (1 << 20)
        return lambda: iter_jsonl(upload.file, max_line_bytes=max_line)
    if kind == fmt.CSV:
        return lambda: iter_csv(upload.file, max_field_bytes=settings.max_item_bytes + 1)
    if kind == fmt.ZIP:
        return lambda: iter_zip(
            upload.file, name=upload.filename, classes=classes, max_item_bytes=settings.max_item_bytes, root=root
        )
    if kind == fmt.NPZ:
        return lambda: iter_npz(
            upload.file,
            name=upload.filename,
            max_pixels=settings.max_image_pixels,
            max_array_bytes=settings.max_upload_bytes,
        )
    mapping = _parse_labels(labels)
    return lambda: iter_image_files(files, labels=mapping, max_item_bytes=settings.max_item_bytes)


def _parse_labels(labels: str | None) -> dict[str, Any] | None:
    if labels is None or not labels.strip():
        return None
    try:
        mapping = loads_strict(labels)
    except ValueError as exc:
        raise _field_problem("labels", f"'labels' must be a JSON object mapping file names to classes: {exc}")
    if not isinstance(mapping, dict):
        raise _field_problem("labels", "'labels' must be a JSON object mapping file names to classes")
    return mapping


def _run(
    session: Session, *, project: t.Project, ctx: ImportContext, rows: RowSource, blobs: BlobStore
) -> ImportResult:
    _check_all(ctx, rows)
    try:
        result = _write_all(session, project=project, ctx=ctx, rows=rows, blobs=blobs)
    except IntegrityError:
        # Another import into this project inserted the same content or external_id concurrently.
        log.info("import into project %s collided with a concurrent import", project.id, exc_info=True)
        raise Conflict("a concurrent import into this project added some of the same items; retry") from None
    log.info(
        "imported %d %s items into project %s (%d duplicates)",
        result.imported,
        ctx.split,
        project.id,
        result.duplicate_count,
    )
    return result


class _Problems:
    """Collects problems; lists the first few hundred, counts them all."""

    def __init__(self) -> None:
        self.count = 0
        self.listed: list[dict[str, Any]] = []

    def add(self, problem: Problem) -> None:
        self.count += 1
        if len(self.listed) < MAX_LISTED_PROBLEMS:
            self.listed.append(problem.as_detail())

    def raise_if_any(self) -> None:
        if not self.count:
            return
        more = f" (the first {len(self.listed)} are listed)" if self.count > len(self.listed) else ""
        raise Unprocessable(
            f"import rejected: {self.count} problem(s){more}; nothing was imported", details=self.listed
        )


def _check_all(ctx: ImportContext, rows: RowSource) -> None:
    """First pass: check every row, write nothing."""
    problems = _Problems()
    good = 0
    for row in rows():
        result = row if isinstance(row, Problem) else prepare(row, ctx, decode=True)
        if isinstance(result, Problem):
            problems.add(result)
        else:
            good += 1
    problems.raise_if_any()
    if good == 0:
        raise Unprocessable("nothing to import: the request holds no items")


def _write_all(
    session: Session, *, project: t.Project, ctx: ImportContext, rows: RowSource, blobs: BlobStore
) -> ImportResult:
    """Second pass: store content, insert new items, report duplicates."""
    result = ImportResult(split=ctx.split)
    problems = _Problems()
    batch: list[Prepared] = []
    if session.connection().dialect.name == "postgresql":
        # The per-batch lookups run as prepared statements; after five runs PostgreSQL may switch
        # to a generic plan made while the table looked empty (a sequential scan), and a large
        # import then slows down quadratically. Custom plans keep using the unique indexes.
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    for row in rows():
        prepared = row if isinstance(row, Problem) else prepare(row, ctx, decode=False)
        if isinstance(prepared, Problem):  # the input changed between the passes; stay all-or-nothing
            problems.add(prepared)
            continue
        if prepared.data is not None:
            # Written now so the batch keeps no image bytes; content-addressed, so a duplicate or a
            # rolled-back import leaves at most an unreferenced copy of content already known.
            blobs.put_bytes(prepared.data, BLOB_KIND)
            prepared.data = None
        batch.append(prepared)
        if len(batch) >= BATCH_SIZE:
            _insert_batch(session, project, ctx, batch, result, problems)
            batch = []
    if batch:
        _insert_batch(session, project, ctx, batch, result, problems)
    problems.raise_if_any()
    return result


def _insert_batch(
    session: Session,
    project: t.Project,
    ctx: ImportContext,
    batch: list[Prepared],
    result: ImportResult,
    problems: _Problems,
) -> None:
    shas = list({p.sha256 for p in batch})
    external_ids = list({p.external_id for p in batch})
    by_sha: dict[str, tuple[int, str]] = {}
    by_external_id: dict[str, tuple[int, str]] = {}
    dialect = session.connection().dialect.name
    # Rows inserted by earlier batches of this import are visible here (same transaction), so
    # repeats across the whole upload are found with memory bounded by one batch.
    for item_id, external_id, sha in session.execute(
        select(t.Item.id, t.Item.external_id, t.Item.content_sha256).where(
            t.Item.project_id == project.id, _one_of(t.Item.content_sha256, shas, dialect)
        )
    ):
        by_sha[sha] = (item_id, external_id)
    for item_id, external_id, sha in session.execute(
        select(t.Item.id, t.Item.external_id, t.Item.content_sha256).where(
            t.Item.project_id == project.id, _one_of(t.Item.external_id, external_ids, dialect)
        )
    ):
        by_external_id[external_id] = (item_id, sha)

    new: list[Prepared] = []
    new_by_sha: dict[str, int] = {}  # sha -> index in new
    new_by_external_id: dict[str, Prepared] = {}
    duplicates_of_new: list[tuple[Prepared, int]] = []
    for p in batch:
        taken = by_external_id.get(p.external_id)
        if taken is not None and taken[1] != p.sha256:
            problems.add(
                Problem(p.ref, f"external_id {p.external_id!r} is already used by item {taken[0]} with other content")
            )
            continue
        earlier = new_by_external_id.get(p.external_id)
        if earlier is not None and earlier.sha256 != p.sha256:
            where = ", ".join(f"{k} {v!r}" for k, v in earlier.ref.items())
            problems.add(Problem(p.ref, f"external_id {p.external_id!r} is repeated with other content ({where})"))
            continue
        existing = by_sha.get(p.sha256)
        if existing is not None:
            _add_duplicate(result, p, existing[0])
            continue
        if p.sha256 in new_by_sha:
            duplicates_of_new.append((p, new_by_sha[p.sha256]))
            continue
        new_by_sha[p.sha256] = len(new)
        new_by_external_id[p.external_id] = p
        new.append(p)

    if not new:
        return
    now = utcnow()
    _insert_items(session, [_item_values(project.id, ctx.split, p, now) for p in new])
    # Ids are read back by hash (unique per project): portable, and cheaper than RETURNING with a
    # guaranteed order, which SQLAlchemy can only provide row by row on SQLite.
    item = t.Item.__table__
    new_shas = [p.sha256 for p in new]
    id_by_sha: dict[str, int] = dict(
        session.execute(
            select(item.c.content_sha256, item.c.id).where(
                item.c.project_id == project.id, _one_of(item.c.content_sha256, new_shas, dialect)
            )
        ).all()
    )
    labeled_shas = [p.sha256 for p in new if p.label is not None]
    if labeled_shas:
        _insert_import_annotations(session, project.id, labeled_shas, now, dialect)
    for p, index in duplicates_of_new:
        _add_duplicate(result, p, id_by_sha[new[index].sha256])

    ids = id_by_sha.values()
    result.imported += len(new)
    result.labeled += len(labeled_shas)
    first, last = min(ids), max(ids)
    result.first_item_id = first if result.first_item_id is None else min(result.first_item_id, first)
    result.last_item_id = last if result.last_item_id is None else max(result.last_item_id, last)


def _one_of(column: Any, values: list[str], dialect: str) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``, one parameter instead of
    thousands (the driver's per-placeholder query rewriting dominated large imports)."""
    if dialect == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))
    return column.in_(values)


_ITEM_COLUMNS = (
    "project_id",
    "external_id",
    "split",
    "content_type",
    "content_sha256",
    "text",
    "size_bytes",
    "meta",
    "label",
    "labeled_at",
    "label_round",
    "created_at",
)


def _item_values(project_id: int, split: str, p: Prepared, now: Any) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "external_id": p.external_id,
        "split": split,
        "content_type": p.content_type,
        "content_sha256": p.sha256,
        "text": p.text,
        "size_bytes": p.size_bytes,
        "meta": p.meta,
        "label": p.label,
        "labeled_at": now if p.label is not None else None,
        "label_round": None,
        "created_at": now,
    }


def _insert_items(session: Session, values: list[dict[str, Any]]) -> None:
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        # COPY is several times faster than a multi-row INSERT for large imports, and runs inside
        # the same transaction (the session's connection).
        import psycopg
        from psycopg.types.json import Jsonb

        raw = connection.connection.dbapi_connection
        statement = f"COPY item ({', '.join(_ITEM_COLUMNS)}) FROM STDIN"
        try:
            with raw.cursor() as cursor, cursor.copy(statement) as copy:
                for row in values:
                    copy.write_row([Jsonb(row[c]) if c == "meta" else row[c] for c in _ITEM_COLUMNS])
        except psycopg.IntegrityError as exc:
            # Raw driver errors bypass SQLAlchemy's wrapping; give _run the same exception type.
            raise IntegrityError(statement, None, exc) from exc
        return
    session.execute(insert(t.Item.__table__), values)


def _insert_import_annotations(session: Session, project_id: int, shas: list[str], now: Any, dialect: str) -> None:
    """One ``annotator="import"`` annotation per labeled new item, written by the database from the
    item rows (INSERT ... SELECT), so no per-row round trip."""
    item, annotation = t.Item.__table__, t.Annotation.__table__
    rows = select(
        item.c.project_id,
        item.c.id,
        item.c.label,
        literal(IMPORT_ANNOTATOR, type_=annotation.c.annotator.type),
        literal({}, type_=annotation.c.meta.type),
        literal(now, type_=annotation.c.created_at.type),
    ).where(item.c.project_id == project_id, _one_of(item.c.content_sha256, shas, dialect))
    columns = ["project_id", "item_id", "label", "annotator", "meta", "created_at"]
    session.execute(insert(annotation).from_select(columns, rows, include_defaults=False))


def _add_duplicate(result: ImportResult, p: Prepared, existing_item_id: int) -> None:
    result.duplicate_count += 1
    if len(result.duplicates) < MAX_LISTED_DUPLICATES:
        result.duplicates.append({**p.ref, "external_id": p.external_id, "existing_item_id": existing_item_id})


# --- reading -----------------------------------------------------------------------------------


def get_item(session: Session, *, project_id: int, item_id: int) -> t.Item:
    item = session.get(t.Item, item_id)
    if item is None or item.project_id != project_id:
        raise NotFound(f"item {item_id} does not exist in project {project_id}")
    return item


def list_items(
    session: Session,
    *,
    project_id: int,
    split: str | None = None,
    labeled: bool | None = None,
    limit: int = 100,
    after_id: int | None = None,
) -> list[t.Item]:
    """A page of items in id order; pass the last id seen as ``after_id`` for the next page."""
    query = select(t.Item).where(t.Item.project_id == project_id)
    if split is not None:
        query = query.where(t.Item.split == split)
    if labeled is not None:
        query = query.where(t.Item.label.is_not(None) if labeled else t.Item.label.is_(None))
    if after_id is not None:
        query = query.where(t.Item.id > after_id)
    return list(session.scalars(query.order_by(t.Item.id).limit(limit)))


def item_content(*, item: t.Item, blobs: BlobStore) -> ItemContent:
    """Text inline, or the path of the image's blob."""
    if item.text is not None:
        return ItemContent(media_type="text/plain; charset=utf-8", text=item.text)
    path = blobs.path(blobs.key_for(item.content_sha256, BLOB_KIND))
    if not path.is_file():
        log.error("blob of item %s (%s) is missing", item.id, item.content_sha256)
        raise NotFound(f"the content of item {item.id} is missing from the blob store")
    return ItemContent(media_type=item.content_type, path=path)


def content_key(blobs: BlobStore, item: t.Item) -> str:
    """Blob-store key of an image item's bytes (what workers read)."""
    return blobs.key_for(item.content_sha256, BLOB_KIND)

"""Export of a project's labels as CSV or JSONL, streamed in id order (keyset pages, no big list).

The generators open their own session: a streamed body outlives the request's session.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import tables as t

FIELDS = ["item_id", "external_id", "split", "label", "labeled_at", "label_round"]
PAGE = 5000


def _rows(session: Session, project_id: int, include_unlabeled: bool) -> Iterator[dict]:
    after = 0
    while True:
        query = (
            select(t.Item.id, t.Item.external_id, t.Item.split, t.Item.label, t.Item.labeled_at, t.Item.label_round)
            .where(t.Item.project_id == project_id, t.Item.id > after)
            .order_by(t.Item.id)
            .limit(PAGE)
        )
        if not include_unlabeled:
            query = query.where(t.Item.label.is_not(None))
        page = session.execute(query).all()
        if not page:
            return
        for row in page:
            yield {
                "item_id": row.id,
                "external_id": row.external_id,
                "split": row.split,
                "label": row.label,
                "labeled_at": row.labeled_at.isoformat() if row.labeled_at else None,
                "label_round": row.label_round,
            }
        after = page[-1].id


def export_jsonl(sessions: sessionmaker, *, project_id: int, include_unlabeled: bool = False) -> Iterator[str]:
    with sessions() as session:
        for row in _rows(session, project_id, include_unlabeled):
            yield json.dumps(row) + "\n"


def export_csv(sessions: sessionmaker, *, project_id: int, include_unlabeled: bool = False) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS)
    writer.writeheader()
    with sessions() as session:
        for row in _rows(session, project_id, include_unlabeled):
            writer.writerow(row)
            if buffer.tell() > 1 << 16:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()

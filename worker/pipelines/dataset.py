"""What every pipeline loads first: a snapshot of the project and its labeled / unlabeled / test
items, read in one short transaction, and the items' content as model inputs (through the pool
cache, so images are decoded once and reused by every round).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select

from app.config import Settings
from app.db import tables as t
from app.db.session import session_scope
from app.storage import BlobStore


@dataclass(frozen=True)
class ProjectSnapshot:
    id: int
    modality: str
    classes: list[str]
    proxy: dict[str, Any]
    target: dict[str, Any]
    strategy: str
    schedule: dict[str, Any]
    seed: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class ItemSet:
    """Items in ascending id order (the order ties are broken in), with label indices (-1: none)."""

    ids: np.ndarray
    labels: np.ndarray
    sha256: list[str]
    texts: list[str | None]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, mask: np.ndarray) -> "ItemSet":
        positions = np.flatnonzero(mask)
        return ItemSet(
            ids=self.ids[positions],
            labels=self.labels[positions],
            sha256=[self.sha256[i] for i in positions],
            texts=[self.texts[i] for i in positions],
        )

    @property
    def labeled_mask(self) -> np.ndarray:
        return self.labels >= 0


def load_project(settings: Settings, project_id: int) -> tuple[ProjectSnapshot, ItemSet, ItemSet]:
    """(project, pool items, test items) as of now."""
    with session_scope(settings.resolved_database_url) as session:
        project = session.get(t.Project, project_id)
        if project is None:
            raise LookupError(f"project {project_id} does not exist")
        snapshot = ProjectSnapshot(
            id=project.id,
            modality=project.modality,
            classes=list(project.classes),
            proxy=dict(project.proxy),
            target=dict(project.target),
            strategy=project.strategy,
            schedule=dict(project.schedule),
            seed=project.seed,
        )
        class_index = {name: i for i, name in enumerate(snapshot.classes)}
        sets = {}
        for split in (t.SPLIT_POOL, t.SPLIT_TEST):
            rows = session.execute(
                select(t.Item.id, t.Item.label, t.Item.content_sha256, t.Item.text)
                .where(t.Item.project_id == project_id, t.Item.split == split)
                .order_by(t.Item.id)
            ).all()
            sets[split] = ItemSet(
                ids=np.fromiter((r.id for r in rows), dtype=np.int64, count=len(rows)),
                labels=np.fromiter(
                    (class_index.get(r.label, -1) if r.label is not None else -1 for r in rows),
                    dtype=np.int64,
                    count=len(rows),
                ),
                sha256=[r.content_sha256 for r in rows],
                texts=[r.text for r in rows],
            )
    return snapshot, sets[t.SPLIT_POOL], sets[t.SPLIT_TEST]


def load_inputs(settings: Settings, project: ProjectSnapshot, items: ItemSet, *, image_size: tuple[int, int] | None = None):
    """Model inputs for ``items``: a list of texts, or a uint8 (N, H, W, C) array from the pool cache."""
    if project.modality == "text":
        return [text or "" for text in items.texts]
    from worker.data import PoolCache

    blobs = BlobStore(settings.resolved_blob_dir)
    paths = [blobs.path(blobs.key_for(sha, "items")) for sha in items.sha256]
    cache = PoolCache(settings.resolved_cache_dir)
    return cache.load_images(list(zip(items.ids.tolist(), items.sha256, paths)), size=image_size)


def load_test_inputs(settings: Settings, project: ProjectSnapshot, test: ItemSet, pool_inputs):
    """Inputs of the labeled test split (None when there is none), at the pool's image size."""
    if len(test) == 0:
        return None
    if not test.labeled_mask.all():
        raise ValueError("every test item must carry a label")
    size = None if project.modality == "text" else tuple(pool_inputs.shape[1:3])
    return load_inputs(settings, project, test, image_size=size)

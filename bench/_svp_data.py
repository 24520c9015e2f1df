"""Datasets for ``bench/svp_speedup.py``, read from the shared benchmark folder (never copied into the
repository): Fashion-MNIST and CIFAR-10 images, AG News texts.

Every loader shuffles with a fixed seed before taking a subset (the Fashion-MNIST arrays are sorted
by class) and drops exact duplicates, keeping the first: the service stores one item per distinct
content in a project, so a duplicate would be missing there and the service and the in-process
reference would no longer see the same pool.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from svp.simulation import Dataset

DATASETS = ("fashion_mnist", "ag_news", "cifar10")


def load(name: str, root: Path, *, pool: int | None, test: int | None, seed: int) -> Dataset:
    if name == "fashion_mnist":
        return fashion_mnist(root, pool=pool, test=test, seed=seed)
    if name == "ag_news":
        return ag_news(root, pool=pool, test=test, seed=seed)
    if name == "cifar10":
        return cifar10(root, pool=pool, test=test, seed=seed)
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def unique_subset(content: Callable[[int], bytes | None], order: Iterable[int], limit: int | None,
                  seen: set[bytes]) -> np.ndarray:
    """Positions from ``order`` whose content is usable (not None) and whose digest is not in
    ``seen`` (which is updated), up to ``limit`` of them (all when None)."""
    picked = []
    for position in order:
        if limit is not None and len(picked) >= limit:
            break
        data = content(position)
        if data is None:
            continue
        digest = hashlib.sha256(data).digest()
        if digest in seen:
            continue
        seen.add(digest)
        picked.append(position)
    if limit is not None and len(picked) < limit:
        raise ValueError(f"only {len(picked)} distinct items available, {limit} asked for")
    return np.asarray(picked, dtype=np.int64)


def _split_images(name: str, classes: Sequence[str], train_x, train_y, test_x, test_y, *, pool, test, seed) -> Dataset:
    rng = np.random.default_rng(seed)
    seen: set[bytes] = set()
    # Pool first, then test: a test image equal to a pool image would be dropped by the service.
    pool_idx = unique_subset(lambda i: train_x[i].tobytes(), rng.permutation(len(train_y)), pool, seen)
    test_idx = unique_subset(lambda i: test_x[i].tobytes(), rng.permutation(len(test_y)), test, seen)
    return Dataset(
        name=name,
        modality="image",
        classes=list(classes),
        pool_x=np.ascontiguousarray(train_x[pool_idx]),
        pool_y=np.asarray(train_y[pool_idx], dtype=np.int64),
        test_x=np.ascontiguousarray(test_x[test_idx]),
        test_y=np.asarray(test_y[test_idx], dtype=np.int64),
    )


def fashion_mnist(root: Path, *, pool: int | None, test: int | None, seed: int) -> Dataset:
    meta = json.loads((root / "fashion_mnist.meta.json").read_text())
    with np.load(root / "fashion_mnist.npz") as data:
        arrays = data["train_x"], data["train_y"], data["test_x"], data["test_y"]
    return _split_images("fashion_mnist", meta["classes"], *arrays, pool=pool, test=test, seed=seed)


def cifar10(root: Path, *, pool: int | None, test: int | None, seed: int) -> Dataset:
    """From the image-folder tarball ``cifar/{train,test}/<class>/<n>.jpg`` (decoded once here)."""
    from PIL import Image

    classes = json.loads((root / "cifar10.meta.json").read_text())["classes"]
    index = {name: i for i, name in enumerate(classes)}
    images: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    with tarfile.open(root / "cifar10_jpg_q75.tgz") as archive:
        for member in archive:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3 or parts[-3] not in images or parts[-2] not in index:
                continue
            with Image.open(io.BytesIO(archive.extractfile(member).read())) as image:
                images[parts[-3]].append(np.asarray(image.convert("RGB"), dtype=np.uint8))
            labels[parts[-3]].append(index[parts[-2]])
    return _split_images(
        "cifar10", classes, np.stack(images["train"]), np.asarray(labels["train"]),
        np.stack(images["test"]), np.asarray(labels["test"]), pool=pool, test=test, seed=seed,
    )


def _jsonl(path: Path) -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                texts.append(row["text"])
                labels.append(int(row["label"]))
    return texts, np.asarray(labels, dtype=np.int64)


def ag_news(root: Path, *, pool: int | None, test: int | None, seed: int) -> Dataset:
    classes = json.loads((root / "ag_news" / "meta.json").read_text())["classes"]
    train_x, train_y = _jsonl(root / "ag_news" / "train.jsonl.gz")
    test_x, test_y = _jsonl(root / "ag_news" / "test.jsonl.gz")
    rng = np.random.default_rng(seed)
    seen: set[bytes] = set()

    def usable(texts: list[str]) -> Callable[[int], bytes | None]:
        # The service refuses blank texts and NUL characters.
        return lambda i: texts[i].encode("utf-8") if texts[i].strip() and "\x00" not in texts[i] else None

    pool_idx = unique_subset(usable(train_x), rng.permutation(len(train_y)), pool, seen)
    test_idx = unique_subset(usable(test_x), rng.permutation(len(test_y)), test, seen)
    return Dataset(
        name="ag_news",
        modality="text",
        classes=list(classes),
        pool_x=[train_x[i] for i in pool_idx],
        pool_y=train_y[pool_idx],
        test_x=[test_x[i] for i in test_idx],
        test_y=test_y[test_idx],
    )

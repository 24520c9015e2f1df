"""Read a user's labeled dataset for ``svp simulate``: an image folder (``class_name/file.png``), an
``.npz`` (``x``/``y``, or ``train_x``/``train_y``/``test_x``/``test_y``) or JSONL text
(``{"text": ..., "label": ...}`` a line, optionally gzipped)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from svp.simulation import Dataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return order[n_test:], order[:n_test]


def _subsample(indices: np.ndarray, limit: int | None) -> np.ndarray:
    return indices if limit is None else indices[:limit]


def load_dataset(path: Path, *, test_fraction: float = 0.2, seed: int = 0, pool_limit: int | None = None,
                 test_limit: int | None = None, classes: list[str] | None = None) -> Dataset:
    path = Path(path)
    if path.is_dir():
        x, y, names = _image_folder(path)
        return _from_arrays(path.name, "image", names, x, y, None, None, test_fraction, seed, pool_limit, test_limit)
    if path.suffix == ".npz":
        with np.load(path) as data:
            if "train_x" in data:
                train_x, train_y, test_x, test_y = data["train_x"], data["train_y"], data["test_x"], data["test_y"]
            else:
                train_x, train_y, test_x, test_y = data["x"], data["y"], None, None
        n = int(max(train_y.max(), test_y.max() if test_y is not None else 0)) + 1
        names = classes or [str(c) for c in range(n)]
        return _from_arrays(path.stem, "image", names, train_x, train_y, test_x, test_y, test_fraction, seed,
                            pool_limit, test_limit)
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        texts, labels = _jsonl(path)
        names = classes or sorted({str(label) for label in labels}, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))
        index = {name: i for i, name in enumerate(names)}
        y = np.array([index[str(label)] for label in labels], dtype=np.int64)
        return _from_arrays(path.name.split(".")[0], "text", names, texts, y, None, None, test_fraction, seed,
                            pool_limit, test_limit)
    raise ValueError(f"unsupported dataset {path}: expected an image folder, a .npz or a .jsonl(.gz) file")


def _from_arrays(name, modality, classes, x, y, test_x, test_y, test_fraction, seed, pool_limit, test_limit) -> Dataset:
    y = np.asarray(y, dtype=np.int64)
    if test_x is None:
        pool_idx, test_idx = _split(len(y), test_fraction, seed)
        test_x, test_y = _take(x, test_idx), y[test_idx]
        x, y = _take(x, pool_idx), y[pool_idx]
    else:
        test_y = np.asarray(test_y, dtype=np.int64)
    pool = _subsample(np.random.default_rng(seed + 1).permutation(len(y)), pool_limit)
    test = _subsample(np.random.default_rng(seed + 2).permutation(len(test_y)), test_limit)
    return Dataset(name, modality, list(classes), _take(x, pool), y[pool], _take(test_x, test), test_y[test])


def _take(x, idx):
    return x[idx] if isinstance(x, np.ndarray) else [x[i] for i in idx]


def _image_folder(root: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from PIL import Image

    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not names:
        raise ValueError(f"{root} has no class folders (expected class_name/file.png)")
    images, labels, size = [], [], None
    for label, name in enumerate(names):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with Image.open(file) as image:
                image = image.convert("L" if image.mode in ("L", "1", "I;16") else "RGB")
                size = size or image.size
                if image.size != size:
                    image = image.resize(size)
                images.append(np.asarray(image, dtype=np.uint8))
                labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64), names


def _jsonl(path: Path) -> tuple[list[str], list]:
    opener = gzip.open if path.suffix == ".gz" else open
    texts, labels = [], []
    with opener(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                texts.append(row["text"])
                labels.append(row["label"])
    return texts, labels

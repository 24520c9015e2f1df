"""Pool cache: decode a project's items once, reuse the arrays in every round.

Images are decoded with Pillow into one uint8 N x H x W x C array saved as ``.npy`` and memory-mapped
on later calls; texts are saved as a JSON list. The cache key is a sha256 over the ordered
``(item_id, content sha256)`` pairs and the decoding parameters, so any change to the item set, its
order, an item's content, the size or the channels gives a new entry. Writes go to a temporary file
in the cache folder and are renamed into place, so two workers racing on the same key are both fine
(the rename is atomic; the loser's file simply replaces an identical one).

No database here: the caller passes ``(item_id, sha256, source)`` tuples, where ``source`` is a path,
raw bytes, or a zero-argument callable returning bytes (texts: the string itself or a callable
returning it).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

# Bump when decoding changes (resampling filter, conversion), so stale caches are not reused.
DECODER_VERSION = 1

ImageSource = Union[str, os.PathLike, bytes, Callable[[], bytes]]
TextSource = Union[str, Callable[[], str]]


def _read_bytes(source: ImageSource) -> bytes:
    if isinstance(source, bytes):
        return source
    if callable(source):
        return source()
    return Path(source).read_bytes()


# Bands of single-channel images (alpha aside); palette ("P") images may hold colour, so are not here.
GREY_BANDS = frozenset({"1", "L", "I", "F"})


def decode_image(data: bytes, *, channels: int | None, size: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 H x W x C; ``size`` is (height, width), resized with bilinear filtering.
    ``channels`` None keeps greyscale images grey (1) and makes everything else RGB (3)."""
    with Image.open(io.BytesIO(data)) as image:
        if channels is None:
            channels = 1 if set(image.getbands()) - {"A", "a"} <= GREY_BANDS else 3
        image = image.convert("L" if channels == 1 else "RGB")
        if size is not None and (image.height, image.width) != tuple(size):
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def cache_key(kind: str, item_keys: Sequence[tuple[object, str]], **params: object) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"kind": kind, "version": DECODER_VERSION, **params}, sort_keys=True).encode())
    for item_id, sha in item_keys:
        # Length-prefixed fields, so ("a", "bc") and ("ab", "c") cannot collide.
        for part in (str(item_id), str(sha)):
            encoded = part.encode()
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
    return digest.hexdigest()


class PoolCache:
    """Decoded pools under ``root`` (e.g. ``<blob store>/cache/pools``), one file per key."""

    def __init__(self, root: str | os.PathLike, *, workers: int | None = None):
        self.root = Path(root)
        # Pillow releases the GIL while decoding, so threads give real parallelism here.
        self.workers = workers if workers is not None else min(4, os.cpu_count() or 1)

    def image_path(self, key: str) -> Path:
        return self.root / f"images-{key}.npy"

    def text_path(self, key: str) -> Path:
        return self.root / f"texts-{key}.json"

    def load_images(
        self,
        items: Sequence[tuple[object, str, ImageSource]],
        *,
        size: tuple[int, int] | None = None,
        channels: int | None = None,
    ) -> np.ndarray:
        """All items' images as one read-only uint8 (N, H, W, C) array, in the order given.

        ``size`` is (height, width); None means the first image's size (others are resized to it).
        ``channels`` is 1 (greyscale) or 3 (RGB); None takes the first image's: 1 if it is
        greyscale, else 3 (a grey pool stays one channel, a colour pool three).
        """
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if not items:
            raise ValueError("no items to load")
        size_param = None if size is None else [int(size[0]), int(size[1])]
        key = cache_key("images", [(i, sha) for i, sha, _ in items], size=size_param, channels=channels)
        path = self.image_path(key)
        if path.exists():
            log.debug("pool cache hit %s", path.name)
            return np.load(path, mmap_mode="r")
        try:
            first = decode_image(_read_bytes(items[0][2]), channels=channels, size=size)
        except Exception as exc:
            raise ValueError(f"item {items[0][0]!r}: cannot decode image: {exc}") from exc
        target_size = (first.shape[0], first.shape[1])
        channels = first.shape[2]
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".images-", suffix=".npy.tmp")
        os.close(fd)
        try:
            self._decode_into(tmp, items, first, channels=channels, size=target_size)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        log.info("pool cache: decoded %d images to %s", len(items), path.name)
        return np.load(path, mmap_mode="r")

    def _decode_into(self, tmp: str, items, first: np.ndarray, *, channels: int, size: tuple[int, int]) -> None:
        # Written straight into a memory-mapped file: a large pool never sits in memory twice. The
        # map is released when this function returns, before the caller renames the file.
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(items), *size, channels))
        out[0] = first

        def fill(position: int) -> None:
            item_id, _, source = items[position]
            try:
                out[position] = decode_image(_read_bytes(source), channels=channels, size=size)
            except Exception as exc:  # name the item: "cannot identify image" alone is useless
                raise ValueError(f"item {item_id!r}: cannot decode image: {exc}") from exc

        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            # list() re-raises the first decoding error here.
            list(pool.map(fill, range(1, len(items))))
        out.flush()

    def load_texts(self, items: Sequence[tuple[object, str, TextSource]]) -> list[str]:
        """All items' texts, in the order given."""
        key = cache_key("texts", [(i, sha) for i, sha, _ in items])
        path = self.text_path(key)
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
        texts = [source() if callable(source) else source for _, _, source in items]
        for (item_id, _, _), text in zip(items, texts, strict=True):
            if not isinstance(text, str):
                raise ValueError(f"item {item_id!r}: text content must be a string")
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".texts-", suffix=".json.tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(texts, f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return texts

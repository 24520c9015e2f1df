import hashlib
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from worker.data import PoolCache


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def pool(tmp_path):
    """Five RGB 6x4 PNG files on disk as (item_id, sha256, path), and their pixels."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 6, 4, 3), dtype=np.uint8)
    items = []
    for i, array in enumerate(pixels):
        data = _png(array)
        path = tmp_path / f"{i}.png"
        path.write_bytes(data)
        items.append((100 + i, hashlib.sha256(data).hexdigest(), path))
    return items, pixels


class Counting:
    """A bytes getter that counts how often it is called (a cache hit must not decode again)."""

    calls = 0
    lock = threading.Lock()

    def __init__(self, data):
        self.data = data

    def __call__(self):
        with Counting.lock:
            Counting.calls += 1
        return self.data


def test_decodes_once_then_memory_maps_the_cache(tmp_path, pool):
    items, pixels = pool
    cache = PoolCache(tmp_path / "cache")
    getters = [(i, sha, Counting(path.read_bytes())) for i, sha, path in items]
    Counting.calls = 0
    first = cache.load_images(getters, channels=3)
    assert Counting.calls == 5
    assert first.dtype == np.uint8 and first.shape == (5, 6, 4, 3)
    assert np.array_equal(first, pixels)  # PNG is lossless: exact pixels, in item order
    second = cache.load_images(getters, channels=3)
    assert Counting.calls == 5  # nothing decoded the second time
    assert isinstance(second, np.memmap) and not second.flags.writeable
    assert np.array_equal(second, first)
    # Paths and getters of the same items hit the same entry (the key is ids + content hashes).
    assert np.array_equal(cache.load_images(items, channels=3), first)
    assert len(list((tmp_path / "cache").glob("images-*.npy"))) == 1
    assert not list((tmp_path / "cache").glob(".*tmp"))  # no temporary file left behind


def test_the_key_follows_the_item_set_order_and_content(tmp_path, pool):
    items, pixels = pool
    cache = PoolCache(tmp_path)
    cache.load_images(items)
    reordered = cache.load_images(items[::-1])
    assert np.array_equal(reordered, pixels[::-1])
    subset = cache.load_images(items[:3])
    assert subset.shape[0] == 3
    changed = [items[0][:1] + ("0" * 64,) + items[0][2:]] + items[1:]
    cache.load_images(changed)
    assert len(list(tmp_path.glob("images-*.npy"))) == 4


def test_resizes_odd_sizes_and_converts_channels(tmp_path, pool):
    items, pixels = pool
    big = np.full((12, 8, 3), 200, dtype=np.uint8)
    data = _png(big)
    mixed = items[:2] + [(999, hashlib.sha256(data).hexdigest(), data)]
    cache = PoolCache(tmp_path)
    out = cache.load_images(mixed)  # no size: the first image's 6x4
    assert out.shape == (3, 6, 4, 3) and (out[2] == 200).all()
    sized = cache.load_images(mixed, size=(3, 2))
    assert sized.shape == (3, 3, 2, 3)
    grey = cache.load_images(items, channels=1)
    expected = np.asarray(Image.fromarray(pixels[0]).convert("L"))
    assert grey.shape == (5, 6, 4, 1) and np.array_equal(grey[0, :, :, 0], expected)


def test_greyscale_pools_stay_one_channel_unless_asked(tmp_path):
    data = _png(np.arange(24, dtype=np.uint8).reshape(6, 4))
    items = [(1, hashlib.sha256(data).hexdigest(), data)]
    cache = PoolCache(tmp_path)
    assert cache.load_images(items).shape == (1, 6, 4, 1)
    rgb = cache.load_images(items, channels=3)
    assert rgb.shape == (1, 6, 4, 3) and np.array_equal(rgb[0, :, :, 1], rgb[0, :, :, 0])


def test_a_broken_image_names_its_item_and_leaves_nothing(tmp_path, pool):
    items, _ = pool
    cache = PoolCache(tmp_path / "c")
    bad = items[:2] + [(777, "f" * 64, b"not an image")]
    with pytest.raises(ValueError, match="item 777"):
        cache.load_images(bad)
    assert not list((tmp_path / "c").iterdir())
    with pytest.raises(ValueError, match="channels"):
        cache.load_images(items, channels=2)
    with pytest.raises(ValueError, match="no items"):
        cache.load_images([])


def test_concurrent_loaders_agree(tmp_path, pool):
    items, pixels = pool
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda _: np.array(PoolCache(tmp_path, workers=1).load_images(items)), range(4)))
    assert all(np.array_equal(r, pixels) for r in results)
    assert len(list(tmp_path.glob("images-*.npy"))) == 1 and not list(tmp_path.glob(".*"))


def test_texts_are_cached_too(tmp_path):
    calls = []

    def getter(text):
        return lambda: calls.append(text) or text

    items = [(1, "a" * 64, getter("héllo\nworld")), (2, "b" * 64, "plain")]
    cache = PoolCache(tmp_path)
    assert cache.load_texts(items) == ["héllo\nworld", "plain"]
    assert cache.load_texts(items) == ["héllo\nworld", "plain"]
    assert calls == ["héllo\nworld"]
    assert cache.load_texts(items[::-1]) == ["plain", "héllo\nworld"]
    with pytest.raises(ValueError, match="item 3"):
        cache.load_texts([(3, "c" * 64, b"bytes")])

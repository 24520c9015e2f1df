"""Image decoding checks, PNG encoding and the files / zip / npz parsers, without HTTP or a database."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.services.importers import Problem, RawRow, UploadedFile, inspect_image, iter_image_files, iter_npz, iter_zip
from app.services.importers.images import encode_png
from tests.app.importers.fixtures import image_bytes, npz_bytes, pixels, zip_bytes

CLASSES = ("cat", "dog")


def split(items):
    items = list(items)
    return [r for r in items if isinstance(r, RawRow)], [p for p in items if isinstance(p, Problem)]


@pytest.mark.parametrize(
    "fmt,mime",
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("GIF", "image/gif"),
        ("BMP", "image/bmp"),
        ("WEBP", "image/webp"),
        ("TIFF", "image/tiff"),
    ],
)
def test_inspect_image_names_the_format(fmt, mime):
    assert inspect_image(image_bytes(1, fmt), max_pixels=1000) == mime


def test_inspect_image_problems():
    with pytest.raises(ValueError, match="not a readable image"):
        inspect_image(b"hello", max_pixels=1000)
    with pytest.raises(ValueError, match="corrupt"):
        inspect_image(image_bytes(1, size=(64, 64))[:150], max_pixels=10_000)
    with pytest.raises(ValueError, match="8x8 pixels, over the limit of 63"):
        inspect_image(image_bytes(1), max_pixels=63)
    # Formats outside the list are not even tried (here: an ICO file).
    buffer = io.BytesIO()
    Image.fromarray(pixels(1, (16, 16))).save(buffer, format="ICO")
    with pytest.raises(ValueError, match="not a readable image"):
        inspect_image(buffer.getvalue(), max_pixels=1000)


def test_truncated_image_passes_a_header_check_but_not_a_decode():
    truncated = image_bytes(3, size=(64, 64))[:400]
    assert inspect_image(truncated, max_pixels=10_000, decode=False) == "image/png"
    with pytest.raises(ValueError, match="corrupt"):
        inspect_image(truncated, max_pixels=10_000, decode=True)


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (5, 7, 3), (5, 7, 4)])
def test_encode_png_is_lossless_and_stable(shape):
    array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    data = encode_png(array, max_pixels=100)
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    assert np.array_equal(decoded, array.reshape(decoded.shape))
    assert encode_png(array.copy(), max_pixels=100) == data  # same pixels, same bytes: dedup works


def test_image_files_with_labels_and_size_limit():
    files = [
        UploadedFile("a.png", "image/png", io.BytesIO(b"A" * 10), 10),
        UploadedFile("b.png", "image/png", io.BytesIO(b"B" * 50), 50),
        UploadedFile("c.png", "image/png", io.BytesIO(b"C" * 10), 10),
    ]
    rows, problems = split(iter_image_files(files, labels={"a.png": "dog", "gone.png": "cat"}, max_item_bytes=20))
    assert [(r.ref["file"], r.label, r.extra) for r in rows] == [
        ("a.png", "dog", {"filename": "a.png"}),
        ("c.png", None, {"filename": "c.png"}),
    ]
    assert [p.ref for p in problems] == [{"file": "b.png"}, {"field": "labels"}]
    assert "50 bytes" in problems[0].problem and "gone.png" in problems[1].problem


def test_zip_layout_labels_and_skips():
    archive = zip_bytes(
        {
            "cat/1.png": b"1",
            "dog/2.png": b"2",
            "unlabeled/3.png": b"3",
            "4.png": b"4",
            "__MACOSX/cat/._1.png": b"x",
            ".hidden/5.png": b"x",
            "cat/deep/6.png": b"6",
        }
    )
    rows, problems = split(iter_zip(io.BytesIO(archive), name="z.zip", classes=CLASSES, max_item_bytes=100))
    assert [(r.ref["file"], r.label, r.data) for r in rows] == [
        ("cat/1.png", "cat", b"1"),
        ("dog/2.png", "dog", b"2"),
        ("unlabeled/3.png", None, b"3"),
        ("4.png", None, b"4"),
    ]
    assert [(p.ref["file"], "nested" in p.problem) for p in problems] == [("cat/", True)]


@pytest.mark.parametrize(
    "members,root,expected",
    [
        ({"a/b/cat/1.png": b"1", "a/b/dog/2.png": b"2"}, None, [("cat", b"1"), ("dog", b"2")]),
        ({"a/cat/1.png": b"1"}, None, [("cat", b"1")]),  # single class folder under a wrapper
        ({"cat/1.png": b"1"}, None, [("cat", b"1")]),  # a class folder is never taken for a wrapper
        ({"w/1.png": b"1", "w/2.png": b"2"}, None, [(None, b"1"), (None, b"2")]),  # wrapper of loose files
        ({"s/train/cat/1.png": b"1", "s/test/dog/2.png": b"2"}, "s/test/", [("dog", b"2")]),
    ],
)
def test_zip_root_resolution(members, root, expected):
    rows, problems = split(
        iter_zip(io.BytesIO(zip_bytes(members)), name="z.zip", classes=CLASSES, max_item_bytes=100, root=root)
    )
    assert problems == []
    assert [(r.label, r.data) for r in rows] == expected


def test_zip_ambiguous_wrapper_points_to_root():
    archive = zip_bytes({"s/train/cat/1.png": b"1", "s/test/cat/2.png": b"2"})
    rows, problems = split(iter_zip(io.BytesIO(archive), name="z.zip", classes=CLASSES, max_item_bytes=100))
    assert rows == []
    assert [p.ref["file"] for p in problems] == ["s/train/", "s/test/"]
    assert all("'root'" in p.problem for p in problems)


def test_zip_member_whose_real_size_exceeds_the_limit():
    archive = zip_bytes({"cat/big.png": b"x" * 500, "cat/ok.png": b"y"})
    rows, problems = split(iter_zip(io.BytesIO(archive), name="z.zip", classes=CLASSES, max_item_bytes=100))
    assert [r.ref["file"] for r in rows] == ["cat/ok.png"]
    assert problems[0].ref == {"file": "cat/big.png"} and "500 bytes" in problems[0].problem


def test_npz_rows_labels_and_ids():
    x = np.stack([pixels(i, (3, 2), 1) for i in range(3)])
    data = npz_bytes(x=x, y=np.array([1, 0, 1]), ids=np.array([10, 11, 12]))
    rows, problems = split(iter_npz(io.BytesIO(data), name="d.npz", max_pixels=100, max_array_bytes=10_000))
    assert problems == []
    assert [(r.ref["row"], r.label, r.external_id) for r in rows] == [(0, 1, 10), (1, 0, 11), (2, 1, 12)]
    assert all(np.array_equal(r.pixels, x[i]) for i, r in enumerate(rows))


def test_npz_array_size_is_checked_from_its_header_before_loading():
    x = np.zeros((50, 10, 10), dtype=np.uint8)  # 5,000 bytes, compresses to almost nothing
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=x)
    rows, problems = split(iter_npz(buffer, name="d.npz", max_pixels=100, max_array_bytes=4_999))
    assert rows == [] and "5000 bytes uncompressed" in problems[0].problem

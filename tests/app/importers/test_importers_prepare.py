"""Per-row checks shared by every format: labels, text, meta, sizes, modality, split."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from app.services.importers import ImportContext, Prepared, Problem, RawRow, check_json_value, prepare, resolve_label
from tests.app.importers.fixtures import image_bytes, pixels

TEXT = ImportContext(modality="text", classes=("neg", "pos"), split="pool", max_item_bytes=50, max_image_pixels=100)
IMAGE = ImportContext(
    modality="image", classes=("cat", "dog"), split="pool", max_item_bytes=10_000, max_image_pixels=100
)


def test_resolve_label():
    assert resolve_label("pos", ("neg", "pos")) == "pos"
    assert resolve_label(1, ("neg", "pos")) == "pos"
    assert resolve_label(np.int64(0), ("neg", "pos")) == "neg"
    assert resolve_label(None, ("neg", "pos")) is None
    for bad, message in (
        (2, "out of range"),
        (-1, "out of range"),
        ("Pos", "unknown class"),
        (True, "not True"),
        (1.0, "float"),
    ):
        with pytest.raises(ValueError, match=message):
            resolve_label(bad, ("neg", "pos"))


def test_text_row_is_hashed_over_utf8_and_keeps_its_meta():
    result = prepare(RawRow(ref={"row": 1}, text="héllo", label=1, meta={"a": [1, None]}), TEXT)
    assert isinstance(result, Prepared)
    digest = hashlib.sha256("héllo".encode()).hexdigest()
    assert (result.sha256, result.external_id, result.size_bytes, result.label) == (digest, digest, 6, "pos")
    assert result.meta == {"a": [1, None]} and result.content_type == "text/plain; charset=utf-8"


@pytest.mark.parametrize(
    "row,message",
    [
        (RawRow(ref={}, text=""), "empty"),
        (RawRow(ref={}, text="x" * 51), "51 bytes, over the limit of 50"),
        (RawRow(ref={}, text="a\x00b"), "NUL"),
        (RawRow(ref={}, text="a", external_id="x" * 513), "longer than 512"),
        (RawRow(ref={}, text="a", external_id=1.5), "string or an integer"),
        (RawRow(ref={}, text="a", meta={"k": math.nan}), "non-finite"),
        (RawRow(ref={}, text="a", meta={"k": "\x00"}), "NUL"),
        (RawRow(ref={}, data=b"img"), "text project"),
    ],
)
def test_text_row_problems(row, message):
    result = prepare(row, TEXT)
    assert isinstance(result, Problem) and message in result.problem


def test_test_split_needs_labels():
    ctx = ImportContext(modality="text", classes=("a",), split="test", max_item_bytes=50, max_image_pixels=1)
    assert "need a label" in prepare(RawRow(ref={}, text="x"), ctx).problem
    assert isinstance(prepare(RawRow(ref={}, text="x", label="a"), ctx), Prepared)


def test_image_rows_from_bytes_and_from_pixels():
    data = image_bytes(4)
    result = prepare(RawRow(ref={"file": "a.png"}, data=data, label="dog", extra={"filename": "a.png"}), IMAGE)
    assert (result.content_type, result.sha256, result.data, result.meta) == (
        "image/png",
        hashlib.sha256(data).hexdigest(),
        data,
        {"filename": "a.png"},
    )
    from_pixels = prepare(RawRow(ref={"row": 0}, pixels=pixels(4)), IMAGE)
    assert from_pixels.content_type == "image/png" and from_pixels.data == data  # the same PNG encoding
    assert "image project" in prepare(RawRow(ref={}, text="words"), IMAGE).problem
    too_wide = prepare(RawRow(ref={}, pixels=pixels(1, (11, 10))), IMAGE)
    assert "11x10 pixels, over the limit of 100 pixels" in too_wide.problem


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    text=st.one_of(st.none(), st.text(max_size=60), st.integers()),
    label=st.one_of(st.none(), st.text(max_size=4), st.integers(-3, 3)),
    meta=json_values,
)
def test_prepare_never_raises_and_accepts_only_storable_rows(text, label, meta):
    result = prepare(RawRow(ref={"row": 0}, text=text, label=label, meta=meta), TEXT)
    assert isinstance(result, (Prepared, Problem))
    if isinstance(result, Prepared):
        check_json_value(result.meta)  # would raise on NaN, NUL, surrogates
        assert "\x00" not in result.text and result.text.strip()
        result.text.encode("utf-8")
        assert result.label in (None, "neg", "pos")

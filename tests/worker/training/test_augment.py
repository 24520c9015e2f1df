import numpy as np
import pytest
import torch

from worker.training import augment as aug


def _batch(n=64, c=3, h=6, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Strictly positive values, so zero padding is distinguishable from image content.
    return torch.rand((n, c, h, w), generator=g) + 0.5


def test_flip_really_mirrors_left_right_and_leaves_the_rest():
    x = _batch()
    out = aug.random_flip(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    flipped = [bool(torch.equal(out[i], x[i, :, :, torch.arange(x.shape[3] - 1, -1, -1)])) for i in range(len(x))]
    unchanged = [bool(torch.equal(out[i], x[i])) for i in range(len(x))]
    assert all(f or u for f, u in zip(flipped, unchanged))
    # Both outcomes happen in a batch of 64 (probability of failure ~1e-19).
    assert 0 < sum(flipped) < len(x)
    # Column 0 of a flipped image is the original's last column.
    i = flipped.index(True)
    assert torch.equal(out[i, :, :, 0], x[i, :, :, -1])


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
    x = _batch(n=40)
    p = 2
    out = aug.random_crop(x, p, torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    offsets = []
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            if torch.equal(out[i], padded[i, :, dy:dy + x.shape[2], dx:dx + x.shape[3]])
        ]
        assert len(matches) == 1
        offsets.append(matches[0])
    # Different images get different offsets, and some crops show the zero border.
    assert len(set(offsets)) > 5
    assert (out == 0).any()


def test_augmentation_is_seeded():
    x = _batch()
    a = aug.apply("crop_flip", x, padding=2, generator=torch.Generator().manual_seed(7))
    b = aug.apply("crop_flip", x, padding=2, generator=torch.Generator().manual_seed(7))
    c = aug.apply("crop_flip", x, padding=2, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(aug.apply("none", x), x)
    with pytest.raises(ValueError):
        aug.apply("rotate", x)


@pytest.mark.parametrize(
    "name, kind, size, expected",
    [
        ("auto", "image", 32, "crop_flip"),
        ("auto", "image", 224, "crop_flip"),
        ("auto", "image", 28, "crop"),
        ("auto", "image", 8, "none"),
        ("auto", "chars", None, "none"),
        ("flip", "image", 8, "flip"),
        ("none", "image", 32, "none"),
    ],
)
def test_resolve(name, kind, size, expected):
    assert aug.resolve(name, input_kind=kind, image_size=size) == expected


def test_resolve_rejects_unknown_and_image_only_choices_for_text():
    with pytest.raises(ValueError, match="unknown augment"):
        aug.resolve("mixup", input_kind="image", image_size=32)
    with pytest.raises(ValueError, match="images only"):
        aug.resolve("crop_flip", input_kind="chars")
    assert aug.crop_padding(32) == 4 and aug.crop_padding(16) == 2


def test_normalization_matches_numpy_and_survives_a_constant_channel():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 4, 4, 3), dtype=np.uint8)
    images[..., 2] = 7
    mean, std = aug.compute_normalization(images, chunk=7)
    scaled = images.astype(np.float64) / 255
    assert mean == pytest.approx(scaled.mean(axis=(0, 1, 2)).tolist())
    assert std[:2] == pytest.approx(scaled.std(axis=(0, 1, 2))[:2].tolist())
    assert std[2] == 1.0


def test_preprocess_normalises_without_augmenting_in_eval():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(32, 8, 8, 3), dtype=np.uint8)
    norm = aug.compute_normalization(images)
    pre = aug.Preprocess(input_kind="image", device=torch.device("cpu"), augment="crop_flip",
                         normalization=norm, padding=2, seed=0)
    batch = torch.from_numpy(images)
    x = pre(batch, train=False)
    assert x.shape == (32, 3, 8, 8) and x.dtype == torch.float32
    assert torch.equal(x, pre(batch, train=False))
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert x.std(dim=(0, 2, 3), unbiased=False).sub(1).abs().max() < 1e-4
    assert not torch.equal(pre(batch, train=True), x)
    chars = aug.Preprocess(input_kind="chars", device=torch.device("cpu"))
    ids = torch.tensor([[3, 4, 0]], dtype=torch.uint8)
    assert chars(ids, train=True).dtype == torch.int64

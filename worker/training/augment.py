"""Batch preprocessing on the device: uint8 NHWC -> normalised float NCHW, plus training augmentation.

Everything is vectorised over the batch (one random draw per batch, no per-item Python), so it runs
on the GPU next to the model. Augmentations:

- ``crop_flip``: random crop with zero padding then a random horizontal flip (the CIFAR recipe:
  32x32 crops of the image padded by 4 pixels).
- ``crop``: the random crop alone.
- ``flip``: the random horizontal flip alone.
- ``none``.

``auto`` picks by input: text (character ids) gets none; images at least 32 pixels a side get
``crop_flip`` (natural photos, CIFAR-like); images 16..31 pixels (MNIST-like: digits, garments) get
``crop`` only, since a mirrored digit is often another class or none; smaller images (8x8 digits) get
none, since a shift of even one pixel is a large part of the object. The crop padding is an eighth of
the side (4 for 32, 4 for 28, 2 for 16).

Zero padding happens on [0, 1] pixels before normalisation, as torchvision's RandomCrop does on the
image, so padded borders are black, not the mean colour.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "flip", "crop", "crop_flip")
CHOICES = ("auto", *AUGMENTATIONS)


def resolve(name: str, *, input_kind: str, image_size: int | None = None) -> str:
    """The concrete augmentation for ``name`` (``auto`` decided by the input, see module doc)."""
    if name not in CHOICES:
        raise ValueError(f"unknown augment {name!r}; choose one of {', '.join(CHOICES)}")
    if input_kind != "image":
        if name not in ("auto", "none"):
            raise ValueError(f"augment {name!r} applies to images only, not {input_kind!r} inputs")
        return "none"
    if name != "auto":
        return name
    if image_size is None or image_size < 16:
        return "none"
    return "crop_flip" if image_size >= 32 else "crop"


def crop_padding(image_size: int) -> int:
    return max(1, round(image_size / 8))


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image of an N x C x H x W batch left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad each side by ``padding`` and cut an H x W window at a random offset per image."""
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n), device=x.device, generator=generator)
    rows = offsets[0][:, None] + torch.arange(h, device=x.device)  # N x H
    cols = offsets[1][:, None] + torch.arange(w, device=x.device)  # N x W
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def apply(name: str, x: torch.Tensor, *, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the concrete augmentation ``name`` to a float N x C x H x W batch."""
    if name in ("crop", "crop_flip"):
        x = random_crop(x, padding, generator)
    if name in ("flip", "crop_flip"):
        x = random_flip(x, generator)
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augment {name!r}")
    return x


def compute_normalization(images: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 N x H x W x C images, on the [0, 1] scale.

    Accumulated in float64 chunk by chunk, so a memory-mapped pool is never copied whole.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"expected a non-empty N x H x W x C image array, got shape {images.shape}")
    channels = images.shape[3]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    count = 0
    for start in range(0, images.shape[0], chunk):
        block = np.asarray(images[start:start + chunk], dtype=np.float64).reshape(-1, channels) / 255.0
        total += block.sum(axis=0)
        total_sq += np.square(block).sum(axis=0)
        count += block.shape[0]
    mean = total / count
    var = np.maximum(total_sq / count - np.square(mean), 0.0)
    # A constant channel would divide by zero; leave it unscaled instead.
    std = np.where(var > 1e-12, np.sqrt(var), 1.0)
    return [float(v) for v in mean], [float(v) for v in std]


class Preprocess:
    """Turns a batch as stored (uint8 N x H x W x C, or int64 character ids) into model input.

    ``train=True`` adds the augmentation; ``train=False`` (scoring, evaluation) only normalises.
    """

    def __init__(self, *, input_kind: str, device: torch.device, augment: str = "none",
                 normalization: tuple[list[float], list[float]] | None = None, padding: int = 4,
                 seed: int = 0, channels_last: bool = False):
        self.input_kind = input_kind
        self.augment = augment if input_kind == "image" else "none"
        self.padding = padding
        self.channels_last = channels_last and input_kind == "image"
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        if input_kind == "image":
            if normalization is None:
                raise ValueError("image inputs need a per-channel normalization (mean, std)")
            mean, std = normalization
            self.mean = torch.tensor(mean, dtype=torch.float32, device=device)[None, :, None, None]
            self.std = torch.tensor(std, dtype=torch.float32, device=device)[None, :, None, None]

    def __call__(self, batch: torch.Tensor, *, train: bool) -> torch.Tensor:
        if self.input_kind != "image":
            # Character ids travel as uint8 (8x less to copy) and become int64 for the embedding.
            return batch.long()
        x = batch.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        if train and self.augment != "none":
            x = apply(self.augment, x, padding=self.padding, generator=self.generator)
        x = (x - self.mean) / self.std
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()

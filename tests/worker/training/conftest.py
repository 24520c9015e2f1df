"""Small data for the training tests: sklearn's 8x8 digits as uint8 N x H x W x 1 images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

# One intra-op thread: these models are tiny, and on a shared, loaded CPU torch's spinning worker
# threads make a step 10-30x slower than a single thread does.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    # Pixel values are 0..16; scaled to 0..255 like a real greyscale image.
    images = np.clip(data.images * 16, 0, 255).astype(np.uint8)[..., None]
    labels = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    return images[order], labels[order]

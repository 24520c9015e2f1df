"""The small models learn sklearn's 8x8 digits with plain SGD in a few CPU seconds."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from models import build_model


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(y, dtype=torch.int64)
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    train, test = perm[:1200], perm[1200:]
    return x[train], y[train], x[test], y[test]


def accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


@pytest.mark.parametrize("arch", ["mlp", "tinycnn"])
def test_learns_digits(digits, arch):
    x_train, y_train, x_test, y_test = digits
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10, in_channels=1, image_size=8)
    before = accuracy(model, x_test, y_test)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        model.train()
        for idx in torch.randperm(len(y_train), generator=gen).split(32):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
    after = accuracy(model, x_test, y_test)
    assert after > 0.85, f"{arch}: test accuracy {after:.3f} (chance 0.1, before training {before:.3f})"
    assert after > before + 0.5

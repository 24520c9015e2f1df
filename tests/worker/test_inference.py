import numpy as np
import pytest
import torch
from torch import nn

from worker import inference
from worker.training.augment import compute_normalization

torch.set_num_threads(1)  # tiny models on a shared CPU: one thread is the fast choice


class DropoutNet(nn.Module):
    """Contract model with dropout and BatchNorm, so eval mode visibly matters."""

    input_kind = "image"

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                  nn.Dropout(0.5))
        self.classifier = nn.Linear(16, 5)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.classifier(self.features(x))


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    model = DropoutNet()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(37, 4, 4, 3), dtype=np.uint8)
    # Make BN's running stats non-trivial, then leave the model in train mode on purpose.
    model.train()
    with torch.no_grad():
        model(torch.randn(64, 3, 4, 4) * 3 + 1)
    return model, images, compute_normalization(images)


def _reference(model, images, norm):
    mean = torch.tensor(norm[0])[None, :, None, None]
    std = torch.tensor(norm[1])[None, :, None, None]
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(x), 1).numpy(), model.features(x).numpy()


def test_probabilities_are_in_input_order_whatever_the_batch_size(setup):
    model, images, norm = setup
    expected_probs, expected_feats = _reference(model, images, norm)
    model.train()
    probs = inference.predict_proba(model, images, batch_size=8, device="cpu", normalization=norm)
    assert not model.training  # scoring switched it to eval mode
    single = inference.predict_proba(model, images, batch_size=1, device="cpu", normalization=norm)
    assert probs.dtype == np.float32 and probs.shape == (37, 5)
    np.testing.assert_allclose(probs, expected_probs, atol=1e-6)
    np.testing.assert_allclose(single, probs, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    # Permuting the input permutes the output rows.
    order = np.random.default_rng(1).permutation(len(images))
    permuted = inference.predict_proba(model, images[order], batch_size=16, device="cpu", normalization=norm)
    np.testing.assert_allclose(permuted, probs[order], atol=1e-6)


def test_features_and_the_combined_pass_agree(setup):
    model, images, norm = setup
    expected_probs, expected_feats = _reference(model, images, norm)
    feats = inference.features(model, images, batch_size=10, device="cpu", normalization=norm)
    both_probs, both_feats = inference.probs_and_features(model, images, batch_size=10, device="cpu",
                                                          normalization=norm)
    assert feats.shape == (37, 16) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, expected_feats, atol=1e-6)
    np.testing.assert_allclose(both_feats, feats, atol=1e-6)
    np.testing.assert_allclose(both_probs, expected_probs, atol=1e-6)


def test_scoring_is_deterministic_and_takes_memory_maps(setup, tmp_path):
    model, images, norm = setup
    np.save(tmp_path / "pool.npy", images)
    mapped = np.load(tmp_path / "pool.npy", mmap_mode="r")
    a = inference.predict_proba(model, mapped, device="cpu", normalization=norm)
    b = inference.predict_proba(model, images, device="cpu", normalization=norm)
    assert np.array_equal(a, b)


def test_image_models_need_the_normalization(setup):
    model, images, _ = setup
    with pytest.raises(ValueError, match="normalization"):
        inference.predict_proba(model, images, device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        inference.predict_proba(model, images, device="cpu", normalization=([0.0] * 3, [1.0] * 3), batch_size=0)


def test_an_empty_input_gives_empty_arrays_of_the_right_width(setup):
    model, images, norm = setup
    probs, feats = inference.probs_and_features(model, images[:0], device="cpu", normalization=norm)
    assert probs.shape == (0, 5) and feats.shape == (0, 16)

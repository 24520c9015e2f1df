import numpy as np
import pytest

from worker.training import augment as aug
from worker.training import schedules
from worker.training.callbacks import ForgettingTracker
from worker.training.learner import FastTextAdapter, Learner, TorchLearner, load_learner, make_learner

IMAGE = dict(modality="image", num_classes=10, input_shape=(8, 8, 1))


def test_spec_defaults_follow_the_architecture_family():
    preact = make_learner({"arch": "preact20"}, **IMAGE)
    assert preact.config.schedule == schedules.get("paper_resnet")
    assert preact.config.weight_decay == 5e-4 and preact.config.batch_size == 128
    assert preact.config.momentum == 0.9 and preact.config.augment == "auto"
    vdcnn = make_learner({"arch": "vdcnn9"}, modality="text", num_classes=2)
    assert vdcnn.config.schedule == schedules.get("paper_vdcnn") and vdcnn.config.weight_decay == 1e-4
    assert make_learner({"arch": "resnet18"}, **IMAGE).config.schedule == schedules.get("paper_imagenet")
    small = make_learner({"arch": "tinycnn", "batch_size": None, "lr": None}, **IMAGE)
    assert small.config.schedule == schedules.get("cpu_small") and small.config.batch_size == 64


def test_epochs_scale_and_lr_rescales_a_named_or_explicit_schedule():
    proxy = make_learner({"arch": "preact20", "schedule": "paper_resnet_proxy", "epochs": 10, "seed": 7}, **IMAGE)
    assert schedules.total_epochs(proxy.config.schedule) == 10
    assert [lr for _, lr in proxy.config.schedule] == [0.01, 0.1, 0.01]
    assert proxy.config.seed == 7
    custom = make_learner({"arch": "mlp", "schedule": [[2, 0.5], [2, 0.05]], "lr": 0.2, "momentum": 0.5,
                           "weight_decay": 0.0, "batch_size": 16}, **IMAGE)
    assert custom.config.schedule == [(2, pytest.approx(0.2)), (2, pytest.approx(0.02))]
    assert (custom.config.momentum, custom.config.weight_decay, custom.config.batch_size) == (0.5, 0.0, 16)


@pytest.mark.parametrize(
    "spec, kwargs, message",
    [
        ({"arch": "resnet1000"}, IMAGE, "unknown architecture"),
        ({"arch": "mlp", "optimizer": "adam"}, IMAGE, "unknown model spec field"),
        ({"arch": "fasttext"}, IMAGE, "is for text data"),
        ({"arch": "mlp"}, dict(IMAGE, num_classes=1), "num_classes"),
        ({"arch": "mlp", "schedule": "fast"}, IMAGE, "unknown schedule"),
        ({"arch": "mlp", "schedule": [[0, 0.1]]}, IMAGE, "epochs must be a positive integer"),
        ({"arch": "mlp", "augment": "mixup"}, IMAGE, "unknown augment"),
        ({"arch": "mlp", "extra": {"widths": [3]}}, IMAGE, "bad model option"),
        ({"arch": "vdcnn9", "augment": "crop_flip"}, dict(modality="text", num_classes=2), "images only"),
        ({"arch": "fasttext", "schedule": "cpu_small"}, dict(modality="text", num_classes=2), "does not apply to fastText"),
        ({"arch": "fasttext", "extra": {"colour": 1}}, dict(modality="text", num_classes=2), "bad fastText option"),
        ({"epochs": 3}, IMAGE, "'arch'"),
    ],
)
def test_bad_specs_are_refused_with_the_reason(spec, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_learner(spec, **kwargs)


def test_image_learner_fits_evaluates_and_round_trips(tmp_path, digits):
    x, y = digits
    learner = make_learner({"arch": "tinycnn", "epochs": 4, "batch_size": 64}, **IMAGE)
    progress = []
    assert learner.fit(x[:1000], y[:1000], on_progress=lambda *a: progress.append(a)) is learner
    assert [p[0] for p in progress] == [0, 1, 2, 3]
    metrics = learner.evaluate(x[1000:1400], y[1000:1400])
    assert metrics["accuracy"] > 0.6, metrics  # chance is 0.1
    probs = learner.predict_proba(x[1400:])
    feats = learner.features(x[1400:])
    both = learner.probs_and_features(x[1400:])
    assert probs.shape == (len(x) - 1400, 10) and probs.dtype == np.float32
    assert feats.shape == (len(x) - 1400, 64)
    assert np.allclose(both[0], probs, atol=1e-6) and np.allclose(both[1], feats, atol=1e-6)
    expected_loss = -np.mean(np.log(learner.predict_proba(x[1000:1400])[np.arange(400), y[1000:1400]]))
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-5)

    path = tmp_path / "model.ckpt"
    learner.save(path)
    for loaded in (load_learner(path), Learner.load(path), TorchLearner.load(path)):
        assert isinstance(loaded, TorchLearner) and loaded.arch == "tinycnn"
        assert np.array_equal(loaded.predict_proba(x[1400:]), probs)
        assert np.array_equal(loaded.features(x[1400:]), feats)
    with pytest.raises(ValueError, match="not a FastTextAdapter"):
        FastTextAdapter.load(path)


def test_every_fit_starts_from_a_fresh_seeded_model(digits):
    x, y = digits[0][:300], digits[1][:300]
    learner = make_learner({"arch": "mlp", "epochs": 2, "batch_size": 32, "extra": {"hidden": [32]}}, **IMAGE)
    first = learner.fit(x, y).predict_proba(x[:50])
    second = learner.fit(x, y).predict_proba(x[:50])
    # Identical, so the second fit was not warm-started from the first model.
    assert np.array_equal(first, second)
    other = make_learner({"arch": "mlp", "epochs": 2, "batch_size": 32, "seed": 1, "extra": {"hidden": [32]}}, **IMAGE)
    assert not np.array_equal(other.fit(x, y).predict_proba(x[:50]), first)


def test_learner_feeds_a_forgetting_tracker_and_checks_inputs(digits):
    x, y = digits[0][:128], digits[1][:128]
    learner = make_learner({"arch": "mlp", "epochs": 2, "batch_size": 32, "extra": {"hidden": [16]}}, **IMAGE)
    tracker = ForgettingTracker(len(y))
    learner.fit(x, y, forgetting=tracker)
    assert tracker.presentations.tolist() == [2] * len(y)
    with pytest.raises(ValueError, match="expects"):
        learner.fit(np.zeros((4, 9, 9, 1), dtype=np.uint8), y[:4])
    with pytest.raises(ValueError, match="uint8"):
        learner.fit(x.astype(np.float32), y)
    with pytest.raises(ValueError, match="labels must lie"):
        learner.fit(x, np.full(len(y), 10))
    with pytest.raises(ValueError, match="labels must lie"):
        learner.evaluate(x[:4], np.array([0, 1, -1, 2]))
    with pytest.raises(RuntimeError, match="not fitted"):
        make_learner({"arch": "mlp"}, **IMAGE).predict_proba(x)


TEXTS_POS = ["good great fine excellent", "lovely superb nice", "wonderful happy joy"]
TEXTS_NEG = ["bad awful terrible", "poor horrible worst", "sad dreadful pain"]


def _texts(n=60):
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    texts = [f"{rng.choice(TEXTS_POS if label else TEXTS_NEG)} item{i}" for i, label in enumerate(labels)]
    return texts, labels


def test_fasttext_through_make_learner(tmp_path):
    texts, labels = _texts()
    learner = make_learner({"arch": "fasttext", "epochs": 25, "lr": 0.5, "batch_size": 128,
                            "extra": {"bucket": 1000}}, modality="text", num_classes=2)
    assert isinstance(learner, FastTextAdapter) and not learner.supports_forgetting
    assert learner.params["epoch"] == 25 and learner.params["lr"] == 0.5
    learner.fit(texts, labels)
    assert learner.evaluate(texts, labels)["accuracy"] == 1.0
    probs, feats = learner.probs_and_features(texts[:5])
    assert probs.shape == (5, 2) and feats.shape == (5, 10)
    path = tmp_path / "ft.ckpt"
    learner.save(path)
    loaded = load_learner(path)
    assert isinstance(loaded, FastTextAdapter) and loaded.spec["lr"] == 0.5
    assert np.array_equal(loaded.predict_proba(texts), learner.predict_proba(texts))
    with pytest.raises(ValueError, match="fastText does not expose"):
        learner.fit(texts, labels, forgetting=ForgettingTracker(len(texts)))


def test_a_character_level_torch_model_trains_on_texts(tmp_path):
    texts, labels = _texts(64)
    spec = {"arch": "vdcnn9", "epochs": 3, "batch_size": 16, "lr": 0.02,
            "extra": {"text_length": 64, "hidden": 64}}
    learner = make_learner(spec, modality="text", num_classes=2)
    learner.fit(texts, labels)
    history = learner.result.history
    assert history[-1]["loss"] < history[0]["loss"]
    probs = learner.predict_proba(texts)
    assert probs.shape == (64, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert learner.features(texts[:3]).shape == (3, 64)
    learner.save(tmp_path / "v.ckpt")
    assert np.array_equal(load_learner(tmp_path / "v.ckpt").predict_proba(texts), probs)
    with pytest.raises(ValueError, match="list of strings"):
        learner.predict_proba(np.zeros((2, 3)))


def test_the_api_names_match_the_worker():
    from app.schemas import specs

    import models

    assert set(specs.SCHEDULE_PRESETS) == set(schedules.PRESETS)
    assert set(specs.AUGMENTATIONS) <= set(aug.CHOICES)
    for modality, archs in specs.ARCHITECTURES.items():
        assert all(models.ARCHS[a].modality == modality for a in archs)

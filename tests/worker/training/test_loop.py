import numpy as np
import pytest
import torch
from torch import nn

from worker.training import loop
from worker.training.callbacks import ForgettingTracker
from worker.training.device import BatchSource
from worker.training.loop import TrainConfig, TrainingCancelled, TrainingDiverged, make_checkpoint, train


class TinyNet(nn.Module):
    """Follows the models contract: features() feeds classifier; input_kind 'image'."""

    input_kind = "image"

    def __init__(self, num_classes=10, in_channels=1, dropout=0.1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(dropout),
        )
        self.classifier = nn.Linear(32, num_classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.classifier(self.features(x))


def _fresh(seed=0, **kw):
    torch.manual_seed(seed)
    return TinyNet(**kw)


CONFIG = dict(schedule=[(1, 0.02), (2, 0.1)], batch_size=64)


def test_same_seed_gives_identical_weights_and_another_seed_does_not(digits):
    x, y = digits[0][:300], digits[1][:300]
    # crop_flip on purpose: the augmentation's draws must be seeded as well as shuffling and dropout.
    config = TrainConfig(**CONFIG, seed=3, augment="crop_flip")
    runs = []
    for seed in (3, 3, 4):
        model = _fresh(0)
        train(model, x, y, config=TrainConfig(**{**config.to_dict(), "seed": seed}), device="cpu")
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_a_tiny_model_learns_digits(digits):
    x, y = digits
    model = _fresh(0)
    config = TrainConfig(schedule=[(1, 0.02), (5, 0.1), (2, 0.01)], batch_size=64, augment="none")
    result = train(model, x[:1400], y[:1400], config=config, device="cpu")
    assert result.epochs == 8 and len(result.history) == 8
    assert [h["lr"] for h in result.history] == [0.02] + [0.1] * 5 + [0.01] * 2
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
    assert result.normalization is not None and len(result.normalization[0]) == 1
    model.eval()
    from worker import inference

    probs = inference.predict_proba(model, x[1400:], normalization=result.normalization, device="cpu")
    accuracy = float(np.mean(probs.argmax(1) == y[1400:]))
    assert accuracy > 0.7, accuracy  # chance is 0.1


def test_progress_forgetting_and_kwargs(digits):
    x, y = digits[0][:256], digits[1][:256]
    calls = []

    def on_progress(epoch, step, loss, accuracy, *, fraction):
        calls.append((epoch, step, loss, accuracy, fraction))

    tracker = ForgettingTracker(len(y))
    config = TrainConfig(schedule=[(3, 0.05)], batch_size=32, progress_every=3, augment="none")
    train(_fresh(), x, y, config=config, device="cpu", on_progress=on_progress, forgetting=tracker)
    # 8 steps an epoch: reports after steps 3 and 6, and at the epoch's end.
    assert [(e, s) for e, s, *_ in calls] == [(e, s) for e in range(3) for s in (3, 6, 8)]
    assert calls[-1][4] == 1.0 and calls[0][4] == pytest.approx(3 / 8 / 3)
    assert all(np.isfinite(c[2]) and 0 <= c[3] <= 1 for c in calls)
    # Every example was seen once per epoch; some were learned.
    assert tracker.presentations.tolist() == [3] * len(y)
    counts = tracker.counts()
    assert counts.shape == (len(y),) and np.isfinite(counts).sum() > 0


def test_should_stop_cancels_between_epochs(digits):
    x, y = digits[0][:128], digits[1][:128]
    answers = iter([False, False, True])
    with pytest.raises(TrainingCancelled) as info:
        train(_fresh(), x, y, config=TrainConfig(schedule=[(5, 0.05)], batch_size=64), device="cpu",
              should_stop=lambda: next(answers))
    assert info.value.epoch == 2

    class Stop(Exception):
        pass

    def raising():
        raise Stop

    with pytest.raises(Stop):  # a caller's own cancellation exception passes through untouched
        train(_fresh(), x, y, config=TrainConfig(schedule=[(1, 0.05)]), device="cpu", should_stop=raising)


def test_bad_inputs_are_refused_before_training(digits):
    x, y = digits[0][:64], digits[1][:64]
    config = TrainConfig(schedule=[(1, 0.05)])
    with pytest.raises(ValueError, match="out of range"):
        train(_fresh(num_classes=5), x, y, config=config, device="cpu")
    with pytest.raises(ValueError, match="63 labels"):
        train(_fresh(), x, y[:63], config=config, device="cpu")
    with pytest.raises(ValueError, match="empty"):
        train(_fresh(), x[:0], y[:0], config=config, device="cpu")
    with pytest.raises(ValueError, match="forgetting tracker"):
        train(_fresh(), x, y, config=config, device="cpu", forgetting=ForgettingTracker(10))
    with pytest.raises(ValueError, match="unknown augment"):
        TrainConfig(schedule=[(1, 0.1)], augment="mixup")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(schedule=[(1, 0.1)], batch_size=0)


def test_divergence_is_reported_not_silently_returned(digits):
    x, y = digits[0][:128], digits[1][:128]
    model = _fresh()
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        train(model, x, y, config=TrainConfig(schedule=[(1, 0.1)], batch_size=64), device="cpu")


def test_a_trailing_batch_of_one_is_dropped_for_batchnorm(digits):
    x, y = digits[0][:65], digits[1][:65]
    result = train(_fresh(), x, y, config=TrainConfig(schedule=[(1, 0.05)], batch_size=64), device="cpu")
    assert result.steps == 1


def test_checkpoint_is_a_plain_dict_that_loads_safely(tmp_path, digits):
    x, y = digits[0][:64], digits[1][:64]
    model = _fresh()
    config = TrainConfig(schedule=[(1, 0.05)], batch_size=32)
    result = train(model, x, y, config=config, device="cpu")
    ckpt = make_checkpoint(model, arch="tiny", config=config, normalization=result.normalization,
                           epoch=result.epochs, optimizer_state=result.optimizer_state)
    assert {"model", "optimizer", "schedule", "epoch", "config", "arch", "normalization"} <= set(ckpt)
    torch.save(ckpt, tmp_path / "c.pt")
    back = torch.load(tmp_path / "c.pt", weights_only=True)
    assert back["schedule"] == [[1, 0.05]] and back["arch"] == "tiny"
    assert TrainConfig.from_dict(back["config"]).schedule == [(1, 0.05)]
    again = _fresh(5)
    again.load_state_dict(back["model"])
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    assert back["optimizer"]["state"]  # momentum buffers were saved


def test_batch_source_reads_a_memory_map_in_the_requested_order(tmp_path):
    data = np.arange(40 * 3, dtype=np.uint8).reshape(40, 3)
    np.save(tmp_path / "a.npy", data)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    index = torch.tensor([7, 2, 39, 0, 2])
    in_memory = BatchSource(mapped, torch.device("cpu"))
    streamed = BatchSource(mapped, torch.device("cpu"), in_memory_max_bytes=0)
    assert streamed._array is not None and in_memory._tensor is not None
    for source in (in_memory, streamed):
        assert source.gather(index).numpy().tolist() == data[[7, 2, 39, 0, 2]].tolist()
        assert source.slice(5, 9).numpy().tolist() == data[5:9].tolist()


def test_progress_reporter_only_passes_declared_keywords():
    got = []
    report = loop._progress_reporter(lambda e, s, l, a: got.append((e, s)), total_epochs=2, steps_per_epoch=4)
    report(1, 2, 0.5, 0.5)
    report_kw = loop._progress_reporter(lambda *a, **k: got.append(k), total_epochs=2, steps_per_epoch=4)
    report_kw(1, 2, 0.5, 0.5)
    assert got == [(1, 2), {"total_epochs": 2, "steps_per_epoch": 4, "fraction": 0.75}]

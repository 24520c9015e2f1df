"""The training loop shared by every torch model (proxies and targets, images and text).

SGD with momentum and weight decay, the learning rate set at the start of each epoch from a
piecewise-constant schedule. Reproducible on the CPU: the caller seeds torch before building the
model, and the loop seeds everything it draws (shuffling, augmentation, dropout) from ``config.seed``.
On CUDA it uses bf16 autocast, channels_last for image models, and keeps small datasets resident on
the device; per-step host syncs are avoided (losses and accuracies are accumulated as tensors and
read only when progress is reported).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worker.training import augment as aug
from worker.training import schedules
from worker.training.callbacks import ForgettingTracker
from worker.training.device import BatchSource, autocast, is_cuda, resolve_device, stage

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "svp-torch/1"


class TrainingCancelled(Exception):
    """``should_stop()`` answered true; raised between epochs (or at a progress point)."""

    def __init__(self, epoch: int):
        super().__init__(f"training cancelled at epoch {epoch}")
        self.epoch = epoch


class TrainingDiverged(RuntimeError):
    """The loss stopped being finite: the learning rate is too high for this model and data."""


@dataclass
class TrainConfig:
    schedule: list[tuple[int, float]]
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    seed: int = 0
    # "auto" | "none" | "flip" | "crop" | "crop_flip" (see worker.training.augment).
    augment: str = "auto"
    # Per-channel (mean, std) on the [0, 1] scale; computed from the training images when None.
    normalization: tuple[list[float], list[float]] | None = None
    # Steps between on_progress calls inside an epoch (each costs one host sync); 0: epoch ends only.
    progress_every: int = 50
    # bf16 autocast on CUDA.
    amp: bool = True

    def __post_init__(self) -> None:
        self.schedule = schedules.validate(self.schedule)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (0 <= self.momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.augment not in aug.CHOICES:
            raise ValueError(f"unknown augment {self.augment!r}; choose one of {', '.join(aug.CHOICES)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (checkpoints, job results)."""
        out = dataclasses.asdict(self)
        out["schedule"] = [[epochs, lr] for epochs, lr in self.schedule]
        if self.normalization is not None:
            out["normalization"] = [list(self.normalization[0]), list(self.normalization[1])]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if kwargs.get("normalization") is not None:
            mean, std = kwargs["normalization"]
            kwargs["normalization"] = (list(mean), list(std))
        return cls(**kwargs)


@dataclass
class TrainResult:
    epochs: int
    steps: int
    loss: float  # mean training loss of the last epoch (augmented inputs, train mode)
    accuracy: float  # training accuracy of the last epoch, same caveat
    seconds: float
    device: str
    augment: str  # the concrete augmentation used
    normalization: tuple[list[float], list[float]] | None
    history: list[dict[str, float]] = field(default_factory=list)
    optimizer_state: dict[str, Any] | None = None


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    bounds = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    # A trailing batch of one breaks BatchNorm in train mode (no variance to normalise with); that
    # example simply sits out this epoch (the next permutation puts it elsewhere).
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds.pop()
    return bounds


def _check_labels(model: nn.Module, labels: np.ndarray) -> None:
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be class indices >= 0")
    classifier = getattr(model, "classifier", None)
    # An out-of-range label on CUDA is a device-side assert that poisons the process: check first.
    if isinstance(classifier, nn.Linear) and labels.size and labels.max() >= classifier.out_features:
        raise ValueError(
            f"label {int(labels.max())} out of range for a model with {classifier.out_features} classes"
        )


def _progress_reporter(
    on_progress: Callable[..., None] | None, *, total_epochs: int, steps_per_epoch: int
) -> Callable[[int, int, float, float], None] | None:
    """Call ``on_progress(epoch, step, loss, accuracy)``, adding the keyword arguments
    ``total_epochs``, ``steps_per_epoch`` and ``fraction`` (of the whole run, 0..1) when the callback
    declares them (by name or with ``**kwargs``), so it can show overall progress."""
    if on_progress is None:
        return None
    try:
        params = inspect.signature(on_progress).parameters.values()
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        params = []
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    names = {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL}

    def report(epoch: int, step: int, loss: float, accuracy: float) -> None:
        extras = {
            "total_epochs": total_epochs,
            "steps_per_epoch": steps_per_epoch,
            "fraction": min(1.0, (epoch + step / steps_per_epoch) / total_epochs),
        }
        on_progress(epoch, step, loss, accuracy,
                    **{k: v for k, v in extras.items() if any_keyword or k in names})

    return report


def train(
    model: nn.Module,
    inputs: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    config: TrainConfig,
    device: str | torch.device | None = None,
    on_progress: Callable[[int, int, float, float], None] | None = None,
    forgetting: ForgettingTracker | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``inputs`` (uint8 N x H x W x C images or int64 N x L character
    ids, matching ``model.input_kind``) and integer ``labels``.

    ``on_progress(epoch, step, loss, accuracy)``: epoch is 0-based, step counts the epoch's batches
    done so far, loss/accuracy are that epoch's running means; called every ``config.progress_every``
    steps and at each epoch's end (throttle it on the caller's side, see ProgressThrottle); a callback
    that declares ``total_epochs``, ``steps_per_epoch`` or ``fraction`` (or ``**kwargs``) gets them.
    ``forgetting``: a ForgettingTracker over the N examples, fed every batch.
    ``should_stop()``: polled before each epoch and at progress points; raises TrainingCancelled.
    """
    device = resolve_device(device)
    label_array = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    label_array = label_array.astype(np.int64, copy=False)
    n = len(label_array)
    if n == 0:
        raise ValueError("cannot train on an empty set")
    if len(inputs) != n:
        raise ValueError(f"{len(inputs)} inputs but {n} labels")
    _check_labels(model, label_array)
    if forgetting is not None and forgetting.n != n:
        raise ValueError(f"forgetting tracker sized for {forgetting.n} examples, training set has {n}")

    input_kind = getattr(model, "input_kind", "image")
    normalization = config.normalization
    image_size = None
    if input_kind == "image":
        if inputs.ndim != 4:
            raise ValueError(f"image inputs must be N x H x W x C, got shape {tuple(inputs.shape)}")
        image_size = min(int(inputs.shape[1]), int(inputs.shape[2]))
        if normalization is None:
            array = inputs.cpu().numpy() if isinstance(inputs, torch.Tensor) else inputs
            normalization = aug.compute_normalization(array)
    augment = aug.resolve(config.augment, input_kind=input_kind, image_size=image_size)

    # Dropout and any other stochastic layer draw from the global generator: seed it too.
    torch.manual_seed(config.seed)
    cuda = is_cuda(device)
    if cuda:
        torch.backends.cudnn.benchmark = True
    model.to(device)
    if cuda and input_kind == "image":
        model.to(memory_format=torch.channels_last)

    source = BatchSource(inputs, device)
    targets = stage(torch.from_numpy(label_array), device)
    preprocess = aug.Preprocess(
        input_kind=input_kind, device=device, augment=augment, normalization=normalization,
        padding=aug.crop_padding(image_size or 32), seed=config.seed, channels_last=cuda,
    )
    schedule = config.schedule
    optimizer = torch.optim.SGD(
        model.parameters(), lr=schedule[0][1], momentum=config.momentum,
        weight_decay=config.weight_decay, nesterov=config.nesterov and config.momentum > 0,
    )
    shuffle = torch.Generator().manual_seed(config.seed)
    if forgetting is not None:
        forgetting.to(device)
    bounds = _batches(n, config.batch_size)
    total = schedules.total_epochs(schedule)
    report = _progress_reporter(on_progress, total_epochs=total, steps_per_epoch=len(bounds))
    history: list[dict[str, float]] = []
    steps = 0
    started = time.perf_counter()
    log.info("training %s on %d examples for %d epochs on %s (augment=%s)",
             type(model).__name__, n, total, device, augment)

    for epoch in range(total):
        if should_stop is not None and should_stop():
            raise TrainingCancelled(epoch)
        epoch_started = time.perf_counter()
        lr = schedules.lr_at(schedule, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        order = torch.randperm(n, generator=shuffle)
        order_device = stage(order, device)
        loss_sum = torch.zeros((), device=device)
        correct_sum = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        for step, (start, stop) in enumerate(bounds, start=1):
            index, index_device = order[start:stop], order_device[start:stop]
            x = preprocess(source.gather(index, index_device), train=True)
            y = targets.index_select(0, index_device)
            with autocast(device, config.amp):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                correct = logits.argmax(dim=1) == y
                loss_sum += loss.detach() * (stop - start)
                correct_sum += correct.sum()
                if forgetting is not None:
                    forgetting.update(index_device, correct)
            seen += stop - start
            steps += 1
            if config.progress_every and step % config.progress_every == 0 and step < len(bounds):
                if report is not None:
                    report(epoch, step, loss_sum.item() / seen, correct_sum.item() / seen)
                if should_stop is not None and should_stop():
                    raise TrainingCancelled(epoch)
        epoch_loss = loss_sum.item() / seen
        epoch_accuracy = correct_sum.item() / seen
        if not math.isfinite(epoch_loss):
            raise TrainingDiverged(
                f"training loss became {epoch_loss} in epoch {epoch} (lr {lr}); lower the learning rate"
            )
        history.append({"epoch": epoch, "lr": lr, "loss": epoch_loss, "accuracy": epoch_accuracy,
                        "seconds": time.perf_counter() - epoch_started})
        log.debug("epoch %d lr %g loss %.4f acc %.4f", epoch, lr, epoch_loss, epoch_accuracy)
        if report is not None:
            report(epoch, len(bounds), epoch_loss, epoch_accuracy)

    model.eval()
    return TrainResult(
        epochs=total, steps=steps, loss=history[-1]["loss"], accuracy=history[-1]["accuracy"],
        seconds=time.perf_counter() - started, device=str(device), augment=augment,
        normalization=normalization, history=history, optimizer_state=optimizer.state_dict(),
    )


def make_checkpoint(
    model: nn.Module,
    *,
    arch: str,
    config: TrainConfig,
    normalization: tuple[list[float], list[float]] | None,
    epoch: int,
    optimizer_state: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A plain-dict checkpoint (loadable with ``torch.load(weights_only=True)``)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer_state,
        "schedule": [[epochs, lr] for epochs, lr in config.schedule],
        "epoch": epoch,
        "config": config.to_dict(),
        "normalization": None if normalization is None else [list(normalization[0]), list(normalization[1])],
        **extra,
    }

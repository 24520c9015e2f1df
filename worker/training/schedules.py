"""Piecewise-constant learning-rate schedules.

A schedule is a list of ``(epochs, lr)`` segments run in order: ``[(1, 0.01), (90, 0.1)]`` means one
epoch at 0.01, then 90 at 0.1. The presets follow the paper's training recipes (DESIGN.md section 7).
Pure Python: no torch, so it can be used to validate a spec cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Schedule = list[tuple[int, float]]

# Warm-up to 0.1 in five equal steps, then the usual step decay at epochs 30, 60 and 80 (100 in all).
_IMAGENET = [(1, 0.1 * k / 5) for k in range(1, 6)] + [(25, 0.1), (30, 0.01), (20, 0.001), (20, 0.0001)]

PRESETS: dict[str, Schedule] = {
    # ResNet164 target on CIFAR: a one-epoch warm-up at 0.01 helps the deep net start training.
    "paper_resnet": [(1, 0.01), (90, 0.1), (45, 0.01), (45, 0.001)],
    # The paper's shortened proxy schedule (50 epochs).
    "paper_resnet_proxy": [(1, 0.01), (45, 0.1), (4, 0.01)],
    # VDCNN: 15 epochs, lr 0.01 halved every 3 epochs.
    "paper_vdcnn": [(3, 0.01 / 2**k) for k in range(5)],
    "paper_imagenet": _IMAGENET,
    # A short recipe with the same shape as paper_resnet, for small models on CPU (tests, demo).
    "cpu_small": [(1, 0.01), (6, 0.1), (3, 0.01)],
}

# Optimiser settings that belong with a preset; explicit spec values override them.
PRESET_DEFAULTS: dict[str, dict[str, float | int]] = {
    "paper_resnet": {"weight_decay": 5e-4, "batch_size": 128},
    "paper_resnet_proxy": {"weight_decay": 5e-4, "batch_size": 128},
    "paper_vdcnn": {"weight_decay": 1e-4, "batch_size": 128},
    "paper_imagenet": {"weight_decay": 1e-4, "batch_size": 256},
    "cpu_small": {"weight_decay": 5e-4, "batch_size": 64},
}


def validate(schedule: Sequence[Sequence[float]]) -> Schedule:
    """Return ``schedule`` as a list of ``(int epochs, float lr)``; ValueError names the bad segment."""
    if isinstance(schedule, (str, bytes)) or not isinstance(schedule, Sequence) or not schedule:
        raise ValueError("schedule must be a non-empty list of [epochs, lr] pairs")
    out: Schedule = []
    for i, segment in enumerate(schedule):
        if isinstance(segment, (str, bytes)) or not isinstance(segment, Sequence) or len(segment) != 2:
            raise ValueError(f"schedule segment {i} must be a pair [epochs, lr], got {segment!r}")
        epochs, lr = segment
        if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or epochs != int(epochs) or epochs < 1:
            raise ValueError(f"schedule segment {i}: epochs must be a positive integer, got {epochs!r}")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"schedule segment {i}: lr must be a positive finite number, got {lr!r}")
        out.append((int(epochs), float(lr)))
    return out


def get(name_or_schedule: str | Sequence[Sequence[float]]) -> Schedule:
    """A preset by name, or a validated copy of an explicit schedule."""
    if isinstance(name_or_schedule, str):
        try:
            return list(PRESETS[name_or_schedule])
        except KeyError:
            raise ValueError(
                f"unknown schedule {name_or_schedule!r}; presets: {', '.join(sorted(PRESETS))}"
            ) from None
    return validate(name_or_schedule)


def total_epochs(schedule: Sequence[tuple[int, float]]) -> int:
    return sum(int(epochs) for epochs, _ in schedule)


def lr_at(schedule: Sequence[tuple[int, float]], epoch: int) -> float:
    """Learning rate of 0-based ``epoch``; past the end the last segment's rate continues."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    end = 0
    for epochs, lr in schedule:
        end += epochs
        if epoch < end:
            return lr
    return schedule[-1][1]


def scale(schedule: Sequence[tuple[int, float]], total: int) -> Schedule:
    """Shrink (or stretch) ``schedule`` to ``total`` epochs keeping each segment's share.

    Segment lengths are apportioned by largest remainder, and every segment keeps at least one
    epoch while ``total`` allows it, so a short run still gets its warm-up and its final low-lr
    phase; when ``total`` is smaller than the number of segments, the longest segments are kept.
    """
    schedule = validate(schedule)
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ValueError(f"epochs must be a positive integer, got {total!r}")
    n = len(schedule)
    full = total_epochs(schedule)
    if total < n:
        # Keep the longest segments (earlier first on ties), in their original order.
        keep = sorted(sorted(range(n), key=lambda i: (-schedule[i][0], i))[:total])
        return [(1, schedule[i][1]) for i in keep]
    # Give each segment its floor share of the epochs beyond the one it is guaranteed.
    spare = total - n
    shares = [(epochs - 1) / (full - n) * spare if full > n else spare / n for epochs, _ in schedule]
    lengths = [1 + math.floor(s) for s in shares]
    left = total - sum(lengths)
    by_remainder = sorted(range(n), key=lambda i: (-(shares[i] - math.floor(shares[i])), i))
    for i in by_remainder[:left]:
        lengths[i] += 1
    return [(length, lr) for length, (_, lr) in zip(lengths, schedule, strict=True)]


def with_peak_lr(schedule: Sequence[tuple[int, float]], peak: float) -> Schedule:
    """Multiply every rate so the largest equals ``peak`` (the shape of the schedule is kept)."""
    if isinstance(peak, bool) or not isinstance(peak, (int, float)) or not math.isfinite(peak) or peak <= 0:
        raise ValueError(f"lr must be a positive finite number, got {peak!r}")
    top = max(lr for _, lr in schedule)
    return [(epochs, lr * peak / top) for epochs, lr in schedule]

"""Training callbacks: forgetting-event counting (Toneva et al. 2019) and progress throttling."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


class ForgettingTracker:
    """Counts forgetting events per training example, on the training device.

    Feed it, for every mini-batch, the examples' dataset indices and whether the batch's own
    train-mode forward pass classified each correctly. An event is a correct -> incorrect transition
    between two consecutive presentations of the same example. Examples never classified correctly
    ("unforgettable" is the opposite: learned once and never forgotten) count as +inf.

    Updates are pure tensor ops on the device (no ``.item()``, no host sync), so tracking does not
    stall the GPU; only :meth:`counts` copies to the host.
    """

    def __init__(self, n: int, device: torch.device | str | None = None):
        device = torch.device(device) if device is not None else torch.device("cpu")
        self.n = n
        self.device = device
        self.previous = torch.zeros(n, dtype=torch.bool, device=device)
        self.events = torch.zeros(n, dtype=torch.int64, device=device)
        self.ever_correct = torch.zeros(n, dtype=torch.bool, device=device)
        self.presentations = torch.zeros(n, dtype=torch.int64, device=device)

    def to(self, device: torch.device | str) -> ForgettingTracker:
        """Move the state to ``device`` (the loop does this to follow the model)."""
        device = torch.device(device)
        for name in ("previous", "events", "ever_correct", "presentations"):
            setattr(self, name, getattr(self, name).to(device))
        self.device = device
        return self

    def update(self, indices: torch.Tensor, correct: torch.Tensor) -> None:
        """Record one batch. ``indices`` must not repeat within a batch (a permutation's slice)."""
        indices = indices.to(self.device, non_blocking=True)
        correct = correct.to(self.device, non_blocking=True).bool()
        forgotten = self.previous[indices] & ~correct
        self.events.index_add_(0, indices, forgotten.to(torch.int64))
        self.ever_correct[indices] = self.ever_correct[indices] | correct
        self.previous[indices] = correct
        self.presentations.index_add_(0, indices, torch.ones_like(indices))

    def counts(self) -> np.ndarray:
        """Forgetting events per example as float64, +inf where never predicted correctly."""
        events = self.events.cpu().numpy().astype(np.float64)
        events[~self.ever_correct.cpu().numpy()] = np.inf
        return events


class ProgressThrottle:
    """Lets a progress report through at most once every ``min_interval_s`` seconds.

    ``ready()`` answers whether to report now (and, if so, starts a new interval); the first call is
    always ready, and ``force=True`` reports regardless (e.g. the last step). ``wrap(fn)`` returns a
    callable that forwards to ``fn`` only when ready, so ``train(on_progress=throttle.wrap(save))``
    writes a job row every few seconds instead of every step.
    """

    def __init__(self, min_interval_s: float, clock: Callable[[], float] = time.monotonic):
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._last: float | None = None

    def ready(self, *, force: bool = False) -> bool:
        now = self.clock()
        if force or self._last is None or now - self._last >= self.min_interval_s:
            self._last = now
            return True
        return False

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., None]:
        # functools.wraps keeps fn's signature visible to the loop's keyword-argument detection.
        @functools.wraps(fn)
        def throttled(*args: Any, **kwargs: Any) -> None:
            if self.ready():
                fn(*args, **kwargs)

        return throttled

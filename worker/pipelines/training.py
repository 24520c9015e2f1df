"""Training glue shared by the pipelines: build a learner from a project's model spec, fit it with
progress and cancellation wired to the job row."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from app.config import Settings
from app.storage import BlobStore
from worker.jobs import JobContext
from worker.training.learner import make_learner  # imports torch now, not inside a timed section


def take(inputs, mask_or_positions):
    """Rows of ``inputs`` (a uint8 array or a list of texts) by boolean mask or positions."""
    positions = np.flatnonzero(mask_or_positions) if np.asarray(mask_or_positions).dtype == bool else mask_or_positions
    if isinstance(inputs, np.ndarray):
        return inputs[positions]
    return [inputs[i] for i in positions]


def input_shape(inputs) -> tuple[int, ...] | None:
    return tuple(inputs.shape[1:]) if isinstance(inputs, np.ndarray) else None


def fit_learner(ctx: JobContext, spec: dict[str, Any], project, inputs, labels, *, phase: str = "training", forgetting=None):
    configure_torch_threads(ctx.settings.torch_threads)
    learner = make_learner(
        spec, modality=project.modality, num_classes=project.num_classes, input_shape=input_shape(inputs),
        device=ctx.settings.device,
    )

    def on_progress(epoch: int, step: int, loss: float, accuracy: float, fraction: float | None = None) -> None:
        ctx.progress(phase=phase, fraction=fraction, epoch=epoch, loss=round(float(loss), 4),
                     accuracy=round(float(accuracy), 4))

    learner.fit(inputs, np.asarray(labels, dtype=np.int64), on_progress=on_progress,
                should_stop=ctx.should_stop, forgetting=forgetting)
    return learner


def configure_torch_threads(threads: int | None) -> None:
    """Honour settings.torch_threads (e.g. cores / workers on a shared host); torch's default otherwise."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def save_learner(settings: Settings, learner) -> tuple[str, int]:
    """Store a trained learner's checkpoint in the blob store; returns (key, size in bytes)."""
    blobs = BlobStore(settings.resolved_blob_dir)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.ckpt"
        learner.save(path)
        with open(path, "rb") as source:
            key, _sha, size = blobs.put_file(source, kind="artifacts")
    return key, size

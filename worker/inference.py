"""Batched inference for torch models: class probabilities and penultimate features.

Selection scores must come from the model in eval mode on un-augmented inputs (DESIGN.md section 6):
these functions switch to eval mode, run under ``torch.inference_mode``, and only normalise. Results
come back as numpy arrays in input order. Per-batch results are copied into pinned host memory
asynchronously, so the GPU is not stalled batch by batch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from worker.training import augment as aug
from worker.training.device import BatchSource, autocast, is_cuda, resolve_device

DEFAULT_BATCH_SIZE = 512


def _run(
    model: nn.Module,
    inputs: np.ndarray | torch.Tensor,
    *,
    want_probs: bool,
    want_features: bool,
    batch_size: int,
    device: str | torch.device | None,
    normalization: tuple[list[float], list[float]] | None,
    amp: bool,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = resolve_device(device)
    input_kind = getattr(model, "input_kind", "image")
    if input_kind == "image" and normalization is None:
        raise ValueError("image models need the training set's normalization (mean, std)")
    if want_features and not (hasattr(model, "features") and hasattr(model, "classifier")):
        raise ValueError(f"{type(model).__name__} exposes no features()/classifier")
    cuda = is_cuda(device)
    model.to(device)
    if cuda and input_kind == "image":
        model.to(memory_format=torch.channels_last)
    model.eval()
    preprocess = aug.Preprocess(input_kind=input_kind, device=device, normalization=normalization,
                                channels_last=cuda)
    source = BatchSource(inputs, device)
    n = len(source)
    if n == 0:
        classifier = getattr(model, "classifier", None)
        empty = (lambda width: np.zeros((0, width), dtype=np.float32))
        return (empty(getattr(classifier, "out_features", 0)) if want_probs else None,
                empty(getattr(classifier, "in_features", 0)) if want_features else None)
    probs_out: torch.Tensor | None = None
    features_out: torch.Tensor | None = None
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            x = preprocess(source.slice(start, stop), train=False)
            with autocast(device, amp):
                if want_features:
                    feats = model.features(x)
                    logits = model.classifier(feats) if want_probs else None
                else:
                    logits = model(x)
            # The softmax and every returned value in float32, whatever autocast computed in.
            results = []
            if want_probs:
                results.append(("probs", torch.softmax(logits.float(), dim=1)))
            if want_features:
                results.append(("features", feats.float().flatten(1)))
            for name, value in results:
                out = probs_out if name == "probs" else features_out
                if out is None:
                    out = torch.empty((n, value.shape[1]), dtype=torch.float32, pin_memory=cuda)
                    if name == "probs":
                        probs_out = out
                    else:
                        features_out = out
                out[start:stop].copy_(value, non_blocking=cuda)
    if cuda:
        torch.cuda.synchronize(device)
    return (
        probs_out.numpy() if probs_out is not None else None,
        features_out.numpy() if features_out is not None else None,
    )


def predict_proba(
    model: nn.Module,
    inputs: np.ndarray | torch.Tensor,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    normalization: tuple[list[float], list[float]] | None = None,
    amp: bool = True,
) -> np.ndarray:
    """Softmax probabilities, (N, C) float32, rows in input order."""
    probs, _ = _run(model, inputs, want_probs=True, want_features=False, batch_size=batch_size,
                    device=device, normalization=normalization, amp=amp)
    return _or_empty(probs, 0)


def features(
    model: nn.Module,
    inputs: np.ndarray | torch.Tensor,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    normalization: tuple[list[float], list[float]] | None = None,
    amp: bool = True,
) -> np.ndarray:
    """Penultimate activations (the input of ``model.classifier``), (N, d) float32, in input order."""
    _, feats = _run(model, inputs, want_probs=False, want_features=True, batch_size=batch_size,
                    device=device, normalization=normalization, amp=amp)
    return _or_empty(feats, 0)


def probs_and_features(
    model: nn.Module,
    inputs: np.ndarray | torch.Tensor,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    normalization: tuple[list[float], list[float]] | None = None,
    amp: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Both in one forward pass: ``classifier(features(x))`` is the model's output."""
    probs, feats = _run(model, inputs, want_probs=True, want_features=True, batch_size=batch_size,
                        device=device, normalization=normalization, amp=amp)
    return _or_empty(probs, 0), _or_empty(feats, 0)


def _or_empty(array: np.ndarray | None, width: int) -> np.ndarray:
    return array if array is not None else np.zeros((0, width), dtype=np.float32)

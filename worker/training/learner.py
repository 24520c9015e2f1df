"""One learner interface over torch models and fastText, built from a project's model spec.

A spec is the JSON a project stores for its proxy or target::

    {"arch": "preact20", "epochs": 50, "schedule": "paper_resnet_proxy" | [[1, 0.01], [45, 0.1]],
     "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "augment": "auto",
     "seed": 0, "extra": {...}}

Only ``arch`` is required; ``None`` means "not given". For torch models:

- ``schedule`` defaults to the architecture family's recipe: preact* -> paper_resnet, resnet18/50 ->
  paper_imagenet, vdcnn* -> paper_vdcnn, mlp/tinycnn -> cpu_small (a proxy that wants the paper's
  50-epoch proxy recipe names ``paper_resnet_proxy``).
- ``epochs`` scales the schedule (named or explicit) to that many epochs, keeping its shape.
- ``lr`` rescales the schedule so that its peak rate is ``lr``.
- ``weight_decay`` and ``batch_size`` default to the family's recipe (1e-4 for VDCNN and the
  ImageNet ResNets, 5e-4 for the CIFAR ones).
- ``extra`` goes to the model's constructor, except ``text_length`` (characters per text for
  character-level models, default 1014).

For fastText, ``epochs`` and ``lr`` map to fastText's own, ``extra`` to FastTextLearner's options
(dim, word_ngrams, bucket, ...); the SGD-only keys (schedule, momentum, weight_decay) are refused.
"""

from __future__ import annotations

import logging
import os
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import models
from worker import inference
from worker.training import augment as aug
from worker.training import schedules
from worker.training.callbacks import ForgettingTracker
from worker.training.device import resolve_device
from worker.training.loop import CHECKPOINT_FORMAT, TrainConfig, TrainResult, make_checkpoint, train

log = logging.getLogger(__name__)

SPEC_KEYS = frozenset(
    {"arch", "epochs", "schedule", "batch_size", "lr", "momentum", "weight_decay", "nesterov", "augment", "seed", "extra"}
)
DEFAULT_TEXT_LENGTH = 1014
INFERENCE_BATCH_SIZE = 512
LEARNER_META = "svp-learner.json"  # the learner's own record inside a fastText checkpoint zip


def default_schedule_name(arch: str) -> str:
    if arch.startswith("preact"):
        return "paper_resnet"
    if arch in ("resnet18", "resnet50"):
        return "paper_imagenet"
    if arch.startswith("vdcnn"):
        return "paper_vdcnn"
    return "cpu_small"


class Learner(ABC):
    """fit / predict_proba / features / evaluate / save over one architecture."""

    arch: str
    modality: str
    num_classes: int
    spec: dict[str, Any]
    # Whether fit() can count forgetting events (needs a per-example training trace).
    supports_forgetting: bool = False

    @abstractmethod
    def fit(
        self,
        inputs: Any,
        labels: np.ndarray,
        *,
        on_progress: Callable[..., None] | None = None,
        forgetting: ForgettingTracker | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Learner:
        """Train a freshly initialised model on ``inputs`` (uint8 N x H x W x C images, or texts)."""

    @abstractmethod
    def predict_proba(self, inputs: Any) -> np.ndarray:
        """(N, num_classes) float32 class probabilities, eval mode, un-augmented inputs."""

    @abstractmethod
    def features(self, inputs: Any) -> np.ndarray:
        """(N, d) float32 penultimate features (what greedy k-centers measures distances on)."""

    def probs_and_features(self, inputs: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.predict_proba(inputs), self.features(inputs)

    @abstractmethod
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write one checkpoint file that :func:`load_learner` reads back."""

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | torch.device | None = None) -> Learner:
        learner = load_learner(path, device=device)
        if not isinstance(learner, cls):
            raise ValueError(f"{path} holds a {type(learner).__name__}, not a {cls.__name__}")
        return learner

    def evaluate(self, inputs: Any, labels: np.ndarray) -> dict[str, float]:
        """Accuracy and mean cross-entropy (natural log) of the eval-mode predictions."""
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) != len(inputs):
            raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
        if len(labels) == 0:
            raise ValueError("cannot evaluate on an empty set")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"labels must lie in [0, {self.num_classes - 1}]")
        probs = self.predict_proba(inputs)
        picked = probs[np.arange(len(labels)), labels].astype(np.float64)
        return {
            "accuracy": float(np.mean(probs.argmax(axis=1) == labels)),
            # Clipped so a confidently wrong prediction costs a large finite loss, not inf.
            "loss": float(np.mean(-np.log(np.clip(picked, 1e-12, None)))),
        }


class TorchLearner(Learner):
    supports_forgetting = True

    def __init__(
        self,
        *,
        arch: str,
        modality: str,
        num_classes: int,
        config: TrainConfig,
        input_shape: tuple[int, ...] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        text_length: int = DEFAULT_TEXT_LENGTH,
        spec: dict[str, Any] | None = None,
        device: str | torch.device | None = None,
    ):
        self.arch = arch
        self.modality = modality
        self.num_classes = num_classes
        self.config = config
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.model_kwargs = dict(model_kwargs or {})
        self.text_length = text_length
        self.spec = dict(spec or {"arch": arch})
        self.device = resolve_device(device)
        self.model: torch.nn.Module | None = None
        self.normalization: tuple[list[float], list[float]] | None = None
        self.result: TrainResult | None = None

    # -- inputs ---------------------------------------------------------------------------------

    def _prepare(self, inputs: Any) -> np.ndarray:
        """Images checked against the model's shape; texts encoded as uint8 character ids."""
        if self.modality == "text":
            if isinstance(inputs, np.ndarray) and inputs.dtype != object and not np.issubdtype(inputs.dtype, np.str_):
                raise ValueError("text models take a list of strings")
            from models.text_encoding import encode_chars

            # 69 ids fit a byte: 8x less memory and host-to-device traffic than int64.
            return encode_chars(list(inputs), length=self.text_length).astype(np.uint8)
        if not isinstance(inputs, np.ndarray) or inputs.dtype != np.uint8 or inputs.ndim != 4:
            shape = getattr(inputs, "shape", None)
            raise ValueError(f"image models take a uint8 N x H x W x C array, got {type(inputs).__name__} {shape}")
        if self.input_shape is not None and tuple(inputs.shape[1:]) != self.input_shape:
            raise ValueError(f"images are {tuple(inputs.shape[1:])}, the model expects {self.input_shape}")
        return inputs

    def _build(self, shape: tuple[int, ...]) -> torch.nn.Module:
        if self.modality == "text":
            return models.build_model(self.arch, num_classes=self.num_classes, **self.model_kwargs)
        height, width, channels = shape
        if self.arch == "mlp" and height != width:
            raise ValueError(f"the mlp model needs square images, got {height} x {width}")
        return models.build_model(self.arch, num_classes=self.num_classes, in_channels=channels,
                                  image_size=height, **self.model_kwargs)

    def _require_model(self) -> torch.nn.Module:
        if self.model is None:
            raise RuntimeError("the learner is not fitted")
        return self.model

    # -- training and inference -----------------------------------------------------------------

    def fit(self, inputs, labels, *, on_progress=None, forgetting=None, should_stop=None) -> TorchLearner:
        data = self._prepare(inputs)
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes - 1}]")
        if self.modality == "image":
            self.input_shape = tuple(data.shape[1:])
        # A fresh, seeded initialisation every fit: the paper retrains from scratch each round.
        torch.manual_seed(self.config.seed)
        model = self._build(self.input_shape or ())
        config = TrainConfig.from_dict({**self.config.to_dict(), "normalization": None})
        result = train(model, data, labels, config=config, device=self.device, on_progress=on_progress,
                       forgetting=forgetting, should_stop=should_stop)
        self.model = model
        self.normalization = result.normalization
        self.result = result
        return self

    def _infer(self, inputs: Any, *, probs: bool, feats: bool):
        model = self._require_model()
        data = self._prepare(inputs)
        kwargs = {"batch_size": INFERENCE_BATCH_SIZE, "device": self.device, "normalization": self.normalization,
                  "amp": self.config.amp}
        if probs and feats:
            return inference.probs_and_features(model, data, **kwargs)
        if probs:
            return inference.predict_proba(model, data, **kwargs)
        return inference.features(model, data, **kwargs)

    def predict_proba(self, inputs) -> np.ndarray:
        return self._infer(inputs, probs=True, feats=False)

    def features(self, inputs) -> np.ndarray:
        return self._infer(inputs, probs=False, feats=True)

    def probs_and_features(self, inputs) -> tuple[np.ndarray, np.ndarray]:
        return self._infer(inputs, probs=True, feats=True)

    # -- persistence ----------------------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        model = self._require_model()
        result = self.result
        return make_checkpoint(
            model, arch=self.arch, config=self.config, normalization=self.normalization,
            epoch=result.epochs if result is not None else 0,
            optimizer_state=result.optimizer_state if result is not None else None,
            modality=self.modality, num_classes=self.num_classes,
            input_shape=list(self.input_shape) if self.input_shape is not None else None,
            model_kwargs=self.model_kwargs, text_length=self.text_length, spec=self.spec,
            train={"loss": result.loss, "accuracy": result.accuracy, "seconds": result.seconds,
                   "augment": result.augment, "device": result.device} if result is not None else None,
        )

    def save(self, path) -> None:
        torch.save(self.checkpoint(), Path(path))

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], *, device: str | torch.device | None = None) -> TorchLearner:
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"unsupported checkpoint format {checkpoint.get('format')!r}")
        learner = cls(
            arch=checkpoint["arch"], modality=checkpoint["modality"], num_classes=checkpoint["num_classes"],
            config=TrainConfig.from_dict(checkpoint["config"]), input_shape=checkpoint["input_shape"],
            model_kwargs=checkpoint["model_kwargs"], text_length=checkpoint["text_length"],
            spec=checkpoint["spec"], device=device,
        )
        model = learner._build(learner.input_shape or ())
        model.load_state_dict(checkpoint["model"])
        model.eval()
        learner.model = model
        norm = checkpoint["normalization"]
        learner.normalization = None if norm is None else (list(norm[0]), list(norm[1]))
        return learner


class FastTextAdapter(Learner):
    """FastTextLearner behind the Learner interface (texts only; no per-example training trace)."""

    supports_forgetting = False

    def __init__(self, *, num_classes: int, params: dict[str, Any], spec: dict[str, Any] | None = None):
        from models.fasttext_learner import FastTextLearner

        self.arch = "fasttext"
        self.modality = "text"
        self.num_classes = num_classes
        self.params = dict(params)
        self.spec = dict(spec or {"arch": "fasttext"})
        # Constructed now so that bad options fail at make_learner time, not after data loading.
        self.inner = FastTextLearner(num_classes, **self.params)

    def fit(self, inputs, labels, *, on_progress=None, forgetting=None, should_stop=None) -> FastTextAdapter:
        from models.fasttext_learner import FastTextLearner

        if forgetting is not None:
            raise ValueError("forgetting events need a per-example training trace, which fastText does not "
                             "expose; use a torch proxy (e.g. preact20 or vdcnn9)")
        if should_stop is not None and should_stop():
            from worker.training.loop import TrainingCancelled

            raise TrainingCancelled(0)
        self.inner = FastTextLearner(self.num_classes, **self.params)
        self.inner.fit(_texts(inputs), np.asarray(labels, dtype=np.int64))
        return self

    def predict_proba(self, inputs) -> np.ndarray:
        return self.inner.predict_proba(_texts(inputs))

    def features(self, inputs) -> np.ndarray:
        return self.inner.features(_texts(inputs))

    def save(self, path) -> None:
        import json

        self.inner.save(path)
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr(LEARNER_META, json.dumps({"arch": "fasttext", "spec": self.spec}))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> FastTextAdapter:
        import json

        from models.fasttext_learner import FastTextLearner

        inner = FastTextLearner.load(path)
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read(LEARNER_META)) if LEARNER_META in zf.namelist() else {}
        learner = cls(num_classes=inner.num_classes, params=inner.params, spec=meta.get("spec"))
        learner.inner = inner
        return learner


def _texts(inputs: Any) -> list[str]:
    if isinstance(inputs, str) or not isinstance(inputs, Sequence | np.ndarray):
        raise ValueError("text models take a list of strings")
    return [str(t) for t in inputs]


def make_learner(
    spec: dict[str, Any],
    *,
    modality: str,
    num_classes: int,
    input_shape: tuple[int, ...] | None = None,
    device: str | torch.device | None = None,
) -> Learner:
    """Build the learner for ``spec`` (see the module doc). ValueError names any bad field.

    ``input_shape`` is (H, W, C) for images (None: taken from the first fit's data), None for text.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("arch"), str):
        raise ValueError("a model spec must be an object with an 'arch' string")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ValueError(f"unknown model spec field(s): {', '.join(unknown)}")
    arch = spec["arch"]
    if arch not in models.ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(models.ARCHS)}")
    if models.ARCHS[arch].modality != modality:
        raise ValueError(f"architecture {arch!r} is for {models.ARCHS[arch].modality} data, not {modality}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    extra = spec.get("extra") or {}
    if not isinstance(extra, dict):
        raise ValueError("'extra' must be an object")
    seed = spec.get("seed")
    seed = 0 if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")

    if models.is_fasttext(arch):
        for key in ("schedule", "momentum", "weight_decay", "nesterov"):
            if spec.get(key) is not None:
                raise ValueError(f"{key!r} does not apply to fastText (it trains with its own linear-decay SGD)")
        if spec.get("augment") not in (None, "auto", "none"):
            raise ValueError("fastText takes no augmentation")
        params = {**extra, "seed": seed}
        if spec.get("epochs") is not None:
            params["epoch"] = spec["epochs"]
        if spec.get("lr") is not None:
            params["lr"] = spec["lr"]
        try:
            return FastTextAdapter(num_classes=num_classes, params=params, spec=spec)
        except TypeError as exc:  # an unknown option in extra
            raise ValueError(f"bad fastText option in 'extra': {exc}") from None

    family = default_schedule_name(arch)
    schedule = schedules.get(spec["schedule"] if spec.get("schedule") is not None else family)
    if spec.get("epochs") is not None:
        schedule = schedules.scale(schedule, spec["epochs"])
    if spec.get("lr") is not None:
        schedule = schedules.with_peak_lr(schedule, spec["lr"])
    defaults = schedules.PRESET_DEFAULTS[family]
    model_kwargs = dict(extra)
    text_length = model_kwargs.pop("text_length", DEFAULT_TEXT_LENGTH)
    if isinstance(text_length, bool) or not isinstance(text_length, int) or text_length < 1:
        raise ValueError(f"text_length must be a positive integer, got {text_length!r}")
    config = TrainConfig(
        schedule=schedule,
        batch_size=_pick(spec, "batch_size", defaults["batch_size"]),
        momentum=_pick(spec, "momentum", 0.9),
        weight_decay=_pick(spec, "weight_decay", defaults["weight_decay"]),
        nesterov=bool(_pick(spec, "nesterov", False)),
        seed=seed,
        augment=_pick(spec, "augment", "auto"),
    )
    if modality == "text":
        aug.resolve(config.augment, input_kind="chars")
    if input_shape is not None:
        input_shape = tuple(int(v) for v in input_shape)
        if modality == "image" and len(input_shape) != 3:
            raise ValueError(f"image input_shape must be (H, W, C), got {input_shape}")
        if modality == "image":
            aug.resolve(config.augment, input_kind="image", image_size=min(input_shape[:2]))
    learner = TorchLearner(arch=arch, modality=modality, num_classes=num_classes, config=config,
                           input_shape=input_shape if modality == "image" else None,
                           model_kwargs=model_kwargs, text_length=text_length, spec=spec, device=device)
    if model_kwargs and (input_shape is not None or modality == "text"):
        # Building once here surfaces a bad 'extra' option before any data is loaded or trained on.
        try:
            learner._build(learner.input_shape or ())
        except TypeError as exc:
            raise ValueError(f"bad model option in 'extra': {exc}") from None
    return learner


def _pick(spec: dict[str, Any], key: str, default: Any) -> Any:
    value = spec.get(key)
    return default if value is None else value


def load_learner(path: str | os.PathLike[str], *, device: str | torch.device | None = None) -> Learner:
    """Read back any learner's checkpoint (torch or fastText)."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
        # fastText checkpoints are our zip of meta.json + model.bin; torch.save writes a zip too,
        # but of <archive>/data.pkl and tensor records.
        if {"meta.json", "model.bin"} <= names:
            return FastTextAdapter.from_file(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return TorchLearner.from_checkpoint(checkpoint, device=device)

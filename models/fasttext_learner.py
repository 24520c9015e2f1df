"""fastText classifier (Joulin et al. 2016) behind a small fit/predict_proba/features API.

fastText is the paper's cheapest text proxy (dim 10, word bigrams, lr 0.05, 5 epochs). It trains
in-process from a temporary file of `__label__<index> <text>` lines; the file is always deleted.
fastText with more than one thread is not deterministic, hence `threads=1` by default.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import fasttext
import numpy as np

logger = logging.getLogger(__name__)

LABEL_PREFIX = "__label__"
_FORMAT_VERSION = 1

# fastText's random initialisation fills only `thread`/10 of the input matrix (blocks of one tenth
# per thread) and this build allocates that matrix without zeroing it, so with threads < 10 most
# rows start as whatever the heap held before: NaN ("Encountered NaN" at any learning rate), 1e32,
# or leftovers of an earlier model, making training non-deterministic. glibc's M_PERTURB with byte
# 0xff makes malloc hand out zero-filled memory, which restores upstream fastText's behaviour
# (uncovered rows start at zero). It is process-wide, so it is switched on only around training
# and trainings in one process are serialised.
_M_PERTURB = -6
_TRAIN_LOCK = threading.Lock()


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") else None


_LIBC = _load_libc()


@contextlib.contextmanager
def _zeroed_allocations() -> Iterator[None]:
    with _TRAIN_LOCK:
        enabled = _LIBC is not None and _LIBC.mallopt(_M_PERTURB, 0xFF) == 1
        if not enabled:
            logger.warning("cannot zero fastText's allocations (no glibc mallopt); training may be non-deterministic")
        try:
            yield
        finally:
            if enabled:
                _LIBC.mallopt(_M_PERTURB, 0)


def clean_text(text: str) -> str:
    """One line that fastText reads back as exactly the given words.

    fastText reads one example per line and treats any `__label__` word as a label, so newlines
    become spaces and the prefix is defused; lone surrogates (which cannot be UTF-8 encoded) are
    replaced rather than crashing the native call.
    """
    text = str(text).replace("\r", " ").replace("\n", " ").replace(LABEL_PREFIX, "_label_")
    return text.encode("utf-8", "replace").decode("utf-8")


class FastTextLearner:
    """Supervised fastText over texts with integer labels 0..num_classes-1."""

    input_kind = "text"

    def __init__(
        self,
        num_classes: int,
        *,
        dim: int = 10,
        word_ngrams: int = 2,
        lr: float = 0.05,
        epoch: int = 5,
        min_count: int = 1,
        seed: int = 0,
        threads: int = 1,
        loss: str = "softmax",
        bucket: int = 2_000_000,
    ) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if loss not in ("softmax", "hs", "ova", "ns"):
            raise ValueError(f"unknown fastText loss {loss!r}")
        self.num_classes = int(num_classes)
        # bucket: fastText's default number of hashed n-gram rows; it dominates the saved size
        # (bucket x dim floats), so tests and small projects may lower it.
        self.params: dict[str, Any] = {
            "dim": int(dim),
            "word_ngrams": int(word_ngrams),
            "lr": float(lr),
            "epoch": int(epoch),
            "min_count": int(min_count),
            "seed": int(seed),
            "threads": int(threads),
            "loss": loss,
            "bucket": int(bucket),
        }
        self._model: Any = None
        self._index: dict[str, int] = {}

    @property
    def dim(self) -> int:
        return self.params["dim"]

    @property
    def is_fitted(self) -> bool:
        return self._model is not None

    def fit(self, texts: Sequence[str], labels: np.ndarray) -> FastTextLearner:
        labels = np.asarray(labels)
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        if len(texts) == 0:
            raise ValueError("cannot fit fastText on an empty training set")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError("labels must be a 1-D array of integer class indices")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"labels must lie in [0, {self.num_classes - 1}]")
        p = self.params
        fd, path = tempfile.mkstemp(prefix="svp-fasttext-", suffix=".txt")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for text, y in zip(texts, labels.tolist(), strict=True):
                    f.write(f"{LABEL_PREFIX}{y} {clean_text(text)}\n")
            with _zeroed_allocations():
                model = fasttext.train_supervised(
                    input=path,
                    dim=p["dim"],
                    wordNgrams=p["word_ngrams"],
                    lr=p["lr"],
                    epoch=p["epoch"],
                    minCount=p["min_count"],
                    seed=p["seed"],
                    thread=p["threads"],
                    loss=p["loss"],
                    bucket=p["bucket"],
                    verbose=0,
                )
        except RuntimeError as exc:
            if "NaN" in str(exc):
                raise RuntimeError(f"fastText training diverged (NaN) with lr={p['lr']}; lower the learning rate") from exc
            raise
        finally:
            os.unlink(path)
        # The output matrix is small (classes x dim) and absorbs any non-finite input row.
        if not np.isfinite(model.get_output_matrix()).all():
            raise RuntimeError(f"fastText training diverged (non-finite weights) with lr={p['lr']}")
        self._model = model
        self._index = self._label_index()
        logger.info("fastText trained on %d texts, %d classes seen", len(texts), len(self._index))
        return self

    def _label_index(self) -> dict[str, int]:
        return {label: int(label[len(LABEL_PREFIX) :]) for label in self._model.labels}

    def _require_model(self) -> Any:
        if self._model is None:
            raise RuntimeError("FastTextLearner is not fitted")
        return self._model

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (N, num_classes) in class-index order; rows sum to 1.

        Classes never seen in training get probability 0. fastText adds 1e-5 to every probability it
        reports (its log guard), so rows are renormalised.
        """
        model = self._require_model()
        out = np.zeros((len(texts), self.num_classes), dtype=np.float64)
        if len(texts) == 0:
            return out.astype(np.float32)
        all_labels, all_probs = model.predict([clean_text(t) for t in texts], k=-1, threshold=0.0)
        index = self._index
        for i, (labels, probs) in enumerate(zip(all_labels, all_probs, strict=True)):
            out[i, [index[label] for label in labels]] = probs
        total = out.sum(axis=1, keepdims=True)
        # A row of zeros cannot occur with k=-1 and threshold 0, but dividing by it would yield NaN.
        out = np.divide(out, total, out=np.full_like(out, 1.0 / self.num_classes), where=total > 0)
        return out.astype(np.float32)

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Sentence vectors (N, dim): the averaged word and n-gram embeddings the classifier sees."""
        model = self._require_model()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = model.get_sentence_vector(clean_text(text))
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        """One zip file (stored, not compressed: the matrix is incompressible floats) holding the
        fastText binary and our metadata (num_classes cannot be recovered from fastText alone)."""
        model = self._require_model()
        path = Path(path)
        meta = {"format": _FORMAT_VERSION, "num_classes": self.num_classes, "params": self.params}
        with tempfile.TemporaryDirectory(prefix="svp-fasttext-") as tmp:
            bin_path = os.path.join(tmp, "model.bin")
            model.save_model(bin_path)
            with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
                zf.writestr("meta.json", json.dumps(meta))
                zf.write(bin_path, "model.bin")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FastTextLearner:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("meta.json"))
            if meta.get("format") != _FORMAT_VERSION:
                raise ValueError(f"unsupported fastText checkpoint format {meta.get('format')!r}")
            learner = cls(meta["num_classes"], **meta["params"])
            with tempfile.TemporaryDirectory(prefix="svp-fasttext-") as tmp:
                bin_path = zf.extract("model.bin", tmp)
                learner._model = fasttext.load_model(bin_path)
        learner._index = learner._label_index()
        return learner

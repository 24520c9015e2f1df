"""Training and inference throughput of proxies and targets: the raw cost ratios behind SVP's speed-up.

Every model goes through the service's own code: ``worker.training.learner.make_learner`` with the
architecture's recipe (the worker's defaults: optimizer, weight decay, augmentation), ``fit`` (the
shared training loop) and ``predict_proba`` (batched eval-mode inference, as selection scores are
computed). Real data from ``../shared/datasets`` (never copied into the repository):

- CIFAR-10 (JPEGs decoded once, in memory, straight from the tarball): preact20 and preact164, the
  paper's proxy and target, batch 128.
- Fashion-MNIST: mlp and tinycnn, the CPU demo's proxy and target (their recipe's batch 64).
- AG News: fastText (dim 10, word bigrams, lr 0.05, 5 epochs: the paper's settings) as the proxy
  of VDCNN9 and VDCNN29 (1,014 characters, batch 128).

Training: one epoch over ``(steps + 1) x batch`` examples; the loop reports progress after every
step and each step is timed from those reports. The first step (model build, normalisation, encoding,
allocator and oneDNN warm-up) is reported apart; throughput is the batch over the median of the other
steps. fastText trains on the whole AG News training set for its 5 epochs; its rate counts texts x
epochs over the whole ``fit`` (writing fastText's input file and building its vocabulary included:
the service pays for them too). Inference: ``predict_proba`` over held-out examples (the test split).
Next to the rates: parameters, forward FLOPs and activation values per example, and (preact pair) a
profiled step split into convolutions and the rest, to explain the ratios.

Each proxy runs before and after its target and the two runs are pooled, so that a change in the
load of a shared machine during the target's long run weighs on both sides of the ratio.

    .venv/bin/python bench/train_throughput.py            # ~10 min on 2 CPUs; writes docs/benchmarks.md
    .venv/bin/python bench/train_throughput.py --quick    # ~1 min, smaller batches; prints only
    .venv/bin/python bench/train_throughput.py --synthetic --quick --models mlp,tinycnn,fasttext
    .venv/bin/python bench/train_throughput.py --threads 1 --json bench/out/tt.json   # a busy machine
    .venv/bin/python bench/train_throughput.py --render bench/out/tt.json --docs docs/benchmarks.md

``--synthetic`` replaces the datasets by generated ones of the same shapes (random pixels; texts of
AG News's length from a made-up vocabulary), for a machine without ``../shared``. ``--threads N``
sets torch's intra-op threads (default: torch's own, one per core) and measures a few steps at both
settings side by side: on a machine whose cores are busy with other work, threads that wait for each
other at every operator make steps slower and erratic. ``--render`` re-prints (or re-writes) the
report of a ``--json`` file without measuring again.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import logging
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import DOCS, load_average, machine, write_section  # noqa: E402

log = logging.getLogger("bench.train_throughput")

DATASETS = ROOT.parent / "shared" / "datasets"
SECTION = "train_throughput"


@dataclass(frozen=True)
class Case:
    arch: str
    data: str  # "cifar10" | "fashion" | "ag_news"
    batch_size: int  # fastText: unused
    steps: int  # timed training steps after the first (fastText: unused, it trains on all texts)
    infer: int  # held-out examples scored


# The targets are slow on CPU (a step of 128 takes preact164 or VDCNN29 ~15-20 s on one core), so they
# get a few timed steps; the proxies run twice (before and after their target) and get more.
FULL = {c.arch: c for c in [
    Case("preact20", "cifar10", 128, 8, 1024), Case("preact164", "cifar10", 128, 5, 256),
    Case("mlp", "fashion", 64, 40, 4096), Case("tinycnn", "fashion", 64, 40, 4096),
    Case("fasttext", "ag_news", 0, 0, 7600), Case("vdcnn9", "ag_news", 128, 3, 256),
    Case("vdcnn29", "ag_news", 128, 3, 256),
]}
QUICK = {c.arch: c for c in [
    Case("preact20", "cifar10", 16, 3, 256), Case("preact164", "cifar10", 16, 1, 32),
    Case("mlp", "fashion", 64, 10, 1024), Case("tinycnn", "fashion", 64, 10, 1024),
    Case("fasttext", "ag_news", 0, 0, 2000), Case("vdcnn9", "ag_news", 8, 1, 16),
    Case("vdcnn29", "ag_news", 8, 1, 16),
]}
# Proxies around their targets (see the module doc).
ORDER = ["preact20", "preact164", "preact20", "mlp", "tinycnn", "mlp", "tinycnn",
         "fasttext", "vdcnn9", "vdcnn29", "vdcnn9", "fasttext"]
# (target, proxy, what the paper reports for the pair).
PAIRS = [
    ("preact164", "preact20",
     "ResNet20 ~8× faster to train than ResNet164 (30 min vs 4 h for 181 epochs on one GPU); core-set "
     "selection runtime 218 vs 24 min (9.1×), 7 min with the 50-epoch proxy (31×)"),
    ("vdcnn29", "fasttext",
     "VDCNN29 16 h 40 min on a Titan V GPU vs fastText < 10 min on a CPU over Amazon Review Polarity "
     "(> 100×); active-learning selection 10.6–51.3× faster"),
    ("vdcnn29", "vdcnn9", "selection 1.8× faster at every budget"),
    ("vdcnn9", "fasttext", "—"),
    ("tinycnn", "mlp", "— (the CPU demo's pair)"),
]
ROLES = {"preact20": "proxy", "preact164": "target", "mlp": "proxy (demo)", "tinycnn": "target (demo)",
         "fasttext": "proxy", "vdcnn9": "proxy", "vdcnn29": "target"}
FASTTEXT_SPEC = {"arch": "fasttext", "epochs": 5, "lr": 0.05, "extra": {"dim": 10, "word_ngrams": 2}}


# -- data ---------------------------------------------------------------------------------------


@dataclass
class Data:
    train_x: Any
    train_y: np.ndarray
    test_x: Any
    num_classes: int
    source: str


def _pick(n_total: int, n: int, rng: np.random.Generator) -> np.ndarray:
    if n > n_total:
        raise SystemExit(f"asked for {n} examples, the dataset has {n_total}")
    return np.sort(rng.choice(n_total, n, replace=False))


def load_cifar(n_train: int, n_test: int, seed: int) -> Data:
    """``n_train``/``n_test`` random images of each split, decoded from the tarball in memory."""
    from PIL import Image

    path = DATASETS / "cifar10_jpg_q75.tgz"
    classes = json.loads((DATASETS / "cifar10.meta.json").read_text())["classes"]
    index = {name: i for i, name in enumerate(classes)}
    files: dict[str, list[tuple[str, bytes, int]]] = {"train": [], "test": []}
    # One streaming pass keeps only the (small) encoded files; nothing is written to disk.
    with tarfile.open(path, mode="r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and parts[3].endswith(".jpg") and parts[1] in files:
                files[parts[1]].append((member.name, tar.extractfile(member).read(), index[parts[2]]))
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        entries = sorted(files[split])  # tar order is not guaranteed; names are
        chosen = [entries[i] for i in _pick(len(entries), n, rng)]
        images = np.stack([np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")) for _, blob, _ in chosen])
        out[split] = images, np.array([label for _, _, label in chosen], dtype=np.int64)
    return Data(out["train"][0], out["train"][1], out["test"][0], len(classes),
                f"CIFAR-10 ({path.name}): {n_train:,} training and {n_test:,} test images drawn at random")


def load_fashion(n_train: int, n_test: int, seed: int) -> Data:
    rng = np.random.default_rng(seed)
    with np.load(DATASETS / "fashion_mnist.npz") as f:
        # Stored sorted by class: random draws, not the first rows.
        i = _pick(len(f["train_y"]), n_train, rng)
        j = _pick(len(f["test_y"]), n_test, rng)
        train_x, train_y, test_x = f["train_x"][i], f["train_y"][i], f["test_x"][j]
    return Data(train_x[..., None], train_y.astype(np.int64), test_x[..., None], 10,
                f"Fashion-MNIST: {n_train:,} training and {n_test:,} test images drawn at random")


def _jsonl(path: Path) -> tuple[list[str], np.ndarray]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["text"] for r in rows], np.array([r["label"] for r in rows], dtype=np.int64)


def load_ag_news(n_test: int, seed: int) -> Data:
    texts, labels = _jsonl(DATASETS / "ag_news" / "train.jsonl.gz")
    test, _ = _jsonl(DATASETS / "ag_news" / "test.jsonl.gz")
    # Shuffled once: the torch models train on the first (steps + 1) x batch texts.
    order = np.random.default_rng(seed).permutation(len(texts))
    test_idx = _pick(len(test), n_test, np.random.default_rng(seed + 1))
    chars = np.mean([len(t) for t in texts])
    return Data([texts[i] for i in order], labels[order], [test[i] for i in test_idx], int(labels.max()) + 1,
                f"AG News: all {len(texts):,} training texts (mean {chars:.0f} characters), "
                f"{n_test:,} test texts")


def synthetic_images(n_train: int, n_test: int, shape: tuple[int, int, int], seed: int) -> Data:
    rng = np.random.default_rng(seed)
    return Data(rng.integers(0, 256, (n_train, *shape), dtype=np.uint8), rng.integers(0, 10, n_train),
                rng.integers(0, 256, (n_test, *shape), dtype=np.uint8), 10,
                f"synthetic {shape[0]}×{shape[1]}×{shape[2]} images (uniform random pixels)")


def synthetic_texts(n_train: int, n_test: int, seed: int) -> Data:
    """Texts of AG News's size (~31 words, ~190 characters) over a made-up 5,000-word vocabulary."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(5000)]

    def texts(n: int) -> list[str]:
        return [" ".join(vocab[w] for w in rng.integers(0, len(vocab), max(3, int(rng.normal(31, 8)))))
                for _ in range(n)]

    return Data(texts(n_train), rng.integers(0, 4, n_train), texts(n_test), 4,
                "synthetic texts (~31 random words of 2-9 letters)")


def load_data(cases: dict[str, Case], archs: list[str], synthetic: bool, seed: int) -> dict[str, Data]:
    wanted: dict[str, tuple[int, int]] = {}
    for arch in archs:
        c = cases[arch]
        n = (c.steps + 1) * c.batch_size
        have = wanted.get(c.data, (0, 0))
        wanted[c.data] = (max(have[0], n), max(have[1], c.infer))
    data = {}
    for name, (n_train, n_test) in wanted.items():
        if synthetic:
            if name == "ag_news":
                data[name] = synthetic_texts(max(n_train, 8000), n_test, seed)
            else:
                shape = (32, 32, 3) if name == "cifar10" else (28, 28, 1)
                data[name] = synthetic_images(n_train, n_test, shape, seed)
        elif name == "cifar10":
            data[name] = load_cifar(n_train, n_test, seed)
        elif name == "fashion":
            data[name] = load_fashion(n_train, n_test, seed)
        else:
            data[name] = load_ag_news(n_test, seed)
    return data


# -- measurement --------------------------------------------------------------------------------


@dataclass
class Result:
    arch: str
    data: str
    batch_size: int
    first_step_s: list[float] = field(default_factory=list)  # per run (fastText: whole fits)
    step_s: list[float] = field(default_factory=list)  # timed steps, pooled over runs
    fit_examples: int = 0  # fastText: texts x epochs of one fit
    infer_examples: int = 0
    infer_s: float = 0.0
    loadavg: list[float] = field(default_factory=list)  # 1-minute load average at each run's start
    params: int | None = None
    gflops: float | None = None  # forward pass, per example
    activations_m: float | None = None  # values written by the forward pass, per example, millions
    recipe_epochs: int | None = None

    @property
    def train_rate(self) -> float:
        """Examples per second of the median step (fastText: of the median fit). The median, not the
        mean: on a shared machine some steps are slowed by other processes."""
        if self.arch == "fasttext":
            return self.fit_examples / float(np.median(self.first_step_s))
        return self.batch_size / float(np.median(self.step_s))

    @property
    def infer_rate(self) -> float:
        return self.infer_examples / self.infer_s


def recipe_epochs(arch: str) -> int:
    """Epochs of one full training with the worker's default recipe for ``arch``."""
    import models
    from worker.training import schedules
    from worker.training.learner import default_schedule_name

    if models.is_fasttext(arch):
        return int(FASTTEXT_SPEC["epochs"])
    return schedules.total_epochs(schedules.get(default_schedule_name(arch)))


def _example(arch: str, data: Data, batch: int):
    """A freshly built model for ``arch`` and a zero input batch of the data's shape."""
    import torch

    import models
    from models.text_encoding import encode_chars

    if isinstance(data.train_x, np.ndarray):
        h, w, c = data.train_x.shape[1:]
        model = models.build_model(arch, num_classes=data.num_classes, in_channels=c, image_size=h)
        return model, torch.zeros(batch, c, h, w)
    model = models.build_model(arch, num_classes=data.num_classes)
    return model, torch.from_numpy(encode_chars(data.train_x[:batch]))


def model_cost(arch: str, data: Data) -> tuple[int, float, float]:
    """Parameters, forward GFLOPs and forward activation values (millions) for one example."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model, x = _example(arch, data, 1)
    model.eval()
    written = [0]

    def count(_module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            written[0] += output.numel()

    # Leaf modules only: each activation is counted once, where it is produced.
    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        model(x)
    for hook in hooks:
        hook.remove()
    return sum(p.numel() for p in model.parameters()), flops.get_total_flops() / 1e9, written[0] / 1e6


def run_torch(case: Case, data: Data, result: Result, device: str, seed: int) -> None:
    """One fit of 1 + ``case.steps`` steps through make_learner, each step timed, then inference."""
    from worker.training.learner import make_learner

    modality = "text" if case.data == "ag_news" else "image"
    n = (case.steps + 1) * case.batch_size
    x, y = data.train_x[:n], data.train_y[:n]
    learner = make_learner({"arch": case.arch, "epochs": 1, "batch_size": case.batch_size, "seed": seed},
                           modality=modality, num_classes=data.num_classes,
                           input_shape=tuple(x.shape[1:]) if modality == "image" else None, device=device)
    # A progress report after every step times each step; on the CPU a report costs one scalar read.
    learner.config.progress_every = 1
    stamps: list[float] = []

    def tick(epoch: int, step: int, loss: float, accuracy: float) -> None:
        stamps.append(time.perf_counter())

    started = time.perf_counter()
    learner.fit(x, y, on_progress=tick)
    if len(stamps) != case.steps + 1:
        raise RuntimeError(f"{case.arch}: expected {case.steps + 1} progress reports, got {len(stamps)}")
    result.first_step_s.append(stamps[0] - started)
    result.step_s += np.diff(stamps).tolist()
    if case.infer:
        t0 = time.perf_counter()
        probs = learner.predict_proba(data.test_x[: case.infer])
        result.infer_s += time.perf_counter() - t0
        result.infer_examples += len(probs)


def run_fasttext(case: Case, data: Data, result: Result, seed: int) -> None:
    from worker.training.learner import make_learner

    learner = make_learner({**FASTTEXT_SPEC, "seed": seed}, modality="text", num_classes=data.num_classes)
    t0 = time.perf_counter()
    learner.fit(data.train_x, data.train_y)
    result.first_step_s.append(time.perf_counter() - t0)
    result.fit_examples = len(data.train_x) * int(FASTTEXT_SPEC["epochs"])
    t0 = time.perf_counter()
    probs = learner.predict_proba(data.test_x[: case.infer])
    result.infer_s += time.perf_counter() - t0
    result.infer_examples += len(probs)


def measure(cases: dict[str, Case], order: list[str], data: dict[str, Data], device: str, seed: int) -> dict[str, Result]:
    results: dict[str, Result] = {}
    for arch in order:
        case = cases[arch]
        result = results.get(arch)
        if result is None:
            result = results[arch] = Result(arch, case.data, case.batch_size, recipe_epochs=recipe_epochs(arch))
            if arch != "fasttext":
                result.params, result.gflops, result.activations_m = model_cost(arch, data[case.data])
        load = load_average()
        result.loadavg.append(load[0] if load else float("nan"))
        log.info("%s on %s ...", arch, case.data)
        t0 = time.perf_counter()
        if arch == "fasttext":
            run_fasttext(case, data[case.data], result, seed)
        else:
            run_torch(case, data[case.data], result, device, seed)
        log.info("%s: %.1f s", arch, time.perf_counter() - t0)
    return results


def threads_check(case: Case, data: Data, threads: tuple[int, int], device: str, seed: int) -> dict[int, list[float]]:
    """Step times of ``case`` at each thread count, alternated twice (A B A B) so that load changes
    weigh on both: what ``--threads`` changes on this machine at this moment."""
    import torch

    steps: dict[int, list[float]] = {n: [] for n in threads}
    before = torch.get_num_threads()
    try:
        for n in threads * 2:
            torch.set_num_threads(n)
            result = Result(case.arch, case.data, case.batch_size)
            run_torch(case, data, result, device, seed)
            steps[n] += result.step_s
    finally:
        torch.set_num_threads(before)
    return steps


CONV_OPS = ("convolution",)  # aten::mkldnn_convolution, aten::convolution_backward, ...


def op_breakdown(arch: str, data: Data, batch: int) -> dict[str, float]:
    """Seconds per example of one training step (after a warm-up step) in convolutions, forward and
    backward, and in everything else (BatchNorm, ReLU, residual adds, optimizer): where the time goes.
    A plain step on the model the registry builds, under the CPU profiler: for shares, not throughput."""
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    model, x = _example(arch, data, batch)
    model.train()
    y = torch.zeros(batch, dtype=torch.int64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    conv = other = 0.0
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        if any(op in event.key for op in CONV_OPS):
            conv += event.self_cpu_time_total
        else:
            other += event.self_cpu_time_total
    return {"conv": conv / 1e6 / batch, "other": other / 1e6 / batch}


# -- report -------------------------------------------------------------------------------------


def _rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _ratio(v: float) -> str:
    return f"{v:,.0f}×" if v >= 100 else f"{v:.1f}×"


def table(results: dict[str, Result]) -> str:
    lines = [
        "| model | role | data | batch | timed training | first step s | step s, median (min–max) | train ex/s "
        "| ms / example | inference ex/s | params | fwd GFLOPs / ex | fwd activations / ex |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results.values():
        if r.arch == "fasttext":
            epochs = int(FASTTEXT_SPEC["epochs"])
            timed = f"{len(r.first_step_s)} fits of {r.fit_examples // epochs:,} texts × {epochs} epochs"
            fits = sorted(r.first_step_s)
            first, batch = "—", "—"
            steps = f"fit {np.median(fits):.2f} ({fits[0]:.2f}–{fits[-1]:.2f})"
            params = gflops = acts = "—"
        else:
            timed = f"{len(r.step_s)} steps ({len(r.step_s) * r.batch_size:,} ex)"
            first = " / ".join(f"{s:.1f}" for s in r.first_step_s)
            steps = f"{np.median(r.step_s):.3g} ({min(r.step_s):.3g}–{max(r.step_s):.3g})"
            batch = str(r.batch_size)
            params, gflops, acts = f"{r.params / 1e6:.2f}M", f"{r.gflops:.3g}", f"{r.activations_m:.3g}M"
        lines.append(
            f"| {r.arch} | {ROLES.get(r.arch, '')} | {r.data} | {batch} | {timed} | {first} | {steps} "
            f"| {_rate(r.train_rate)} | {1000 / r.train_rate:.3g} | {_rate(r.infer_rate)} | {params} | {gflops} | {acts} |"
        )
    return "\n".join(lines)


def ratios(results: dict[str, Result]) -> list[dict[str, Any]]:
    from worker.training import schedules

    out = []
    for target, proxy, paper in PAIRS:
        if target not in results or proxy not in results:
            continue
        t, p = results[target], results[proxy]
        train = p.train_rate / t.train_rate
        row = {"target": target, "proxy": proxy, "train": train, "infer": p.infer_rate / t.infer_rate,
               "recipe": train * t.recipe_epochs / p.recipe_epochs,
               "recipe_epochs": (t.recipe_epochs, p.recipe_epochs), "paper": paper}
        if t.gflops and p.gflops:
            row["flops"] = t.gflops / p.gflops
            row["activations"] = t.activations_m / p.activations_m
        if proxy == "preact20":
            # The paper's shortened proxy recipe (50 epochs).
            short = schedules.total_epochs(schedules.get("paper_resnet_proxy"))
            row["recipe_short"] = (train * t.recipe_epochs / short, short)
        out.append(row)
    return out


def ratio_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| target ÷ proxy | training time / example | inference time / example | one full training "
        "(recipes' epochs) | fwd FLOPs | fwd activations | the paper (GPU) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        te, pe = r["recipe_epochs"]
        recipe = f"{_ratio(r['recipe'])} ({te} vs {pe} ep)"
        if "recipe_short" in r:
            recipe += f"; {_ratio(r['recipe_short'][0])} ({te} vs {r['recipe_short'][1]} ep)"
        flops = _ratio(r["flops"]) if "flops" in r else "—"
        acts = _ratio(r["activations"]) if "activations" in r else "—"
        lines.append(f"| {r['target']} ÷ {r['proxy']} | {_ratio(r['train'])} | {_ratio(r['infer'])} | {recipe} "
                     f"| {flops} | {acts} | {r['paper']} |")
    return "\n".join(lines)


def header(meta: dict[str, Any]) -> str:
    load = meta["loadavg"]
    threads = f"{meta['threads']} intra-op thread(s)"
    threads += (" (the machine's default)" if meta["threads"] == meta["default_threads"]
                else f" (set with `--threads`; the machine's default is {meta['default_threads']})")
    return (
        f"{meta['date']}; {meta['nproc']} CPUs ({meta['cpu']}), torch {meta['torch']} on `{meta['device']}` with "
        f"{threads} and {meta['interop']} inter-op, fastText with 1 thread (the learner's default, for "
        f"determinism), Python {meta['python']}. Load average (1 min) {load['start']:.1f} at the start, "
        f"{load['max']:.1f} at most, {load['end']:.1f} at the end; the run took {meta['elapsed_s']:.0f} s."
    )


def sizes_text(cases: dict[str, Case], order: list[str]) -> str:
    parts = []
    for arch in dict.fromkeys(order):
        c, runs = cases[arch], order.count(arch)
        if arch == "fasttext":
            parts.append(f"fasttext {runs} fit(s) of the whole training set (5 epochs), {c.infer:,} scored")
        else:
            parts.append(f"{arch} {runs} run(s) of 1 + {c.steps} steps of {c.batch_size}, {c.infer:,} scored")
    return "Per model: " + "; ".join(parts) + "."


PAPER_RATIOS = {("preact164", "preact20"): 8.0, ("vdcnn29", "vdcnn9"): 1.8}


def _versus(ours: float, paper: float) -> str:
    """How a ratio measured here compares with the paper's, in words (within 25%: about the same)."""
    if ours > paper * 1.25:
        return "above"
    if ours < paper / 1.25:
        return "below"
    return "about"


def findings(results: dict[str, Result], rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """The reading of the numbers; every quantity comes from this run (or the runs given to --render)."""
    out = ["What the ratios say:", ""]
    by = {(r["target"], r["proxy"]): r for r in rows}
    r = by.get(("preact164", "preact20"))
    if r is not None:
        versus = _versus(r["train"], PAPER_RATIOS[("preact164", "preact20")])
        text = (f"- **preact164 ÷ preact20: {_ratio(r['train'])} per training example on this CPU, {versus} the "
                f"paper's ~8× on a GPU** (4 h vs 30 min for 181 epochs). Work per example: {_ratio(r['flops'])} the "
                f"FLOPs and {_ratio(r['activations'])} the activation values written (bottleneck blocks at 64-256 "
                "channels)")
        ops = meta.get("ops")
        if ops:
            rest = {a: v["other"] / (v["conv"] + v["other"]) for a, v in ops.items()}
            text += (f". In a profiled step, the work outside convolutions (BatchNorm, ReLU, residual adds, the "
                     "optimizer: passes over memory, which grow with the activations rather than the FLOPs) takes "
                     f"{rest['preact164']:.0%} of preact164's time and {rest['preact20']:.0%} of preact20's")
        if r["train"] > r["flops"] * 1.1:
            text += (", so on a CPU the time ratio exceeds the FLOP ratio (1×1 bottleneck convolutions, with little "
                     "arithmetic per byte moved, add to that)")
        full_h = 50_000 * results["preact164"].recipe_epochs / results["preact164"].train_rate / 3600
        text += (f". At this rate a 181-epoch preact164 training on CIFAR-10's 50,000 images would take "
                 f"{full_h:,.0f} h here, against the paper's 4 h on one GPU. On a GPU (not measured here), "
                 "ResNet20's small layers at batch 128 leave much of the device idle, so its time shrinks less than "
                 "its FLOPs, which pulls the ratio down")
        text += (": the likely reason the paper's ratio is lower." if versus == "above" else ".")
        out.append(text)
    r = by.get(("vdcnn29", "fasttext"))
    if r is not None:
        ft = results["fasttext"]
        texts = ft.fit_examples // int(FASTTEXT_SPEC["epochs"])
        vd_h = texts * results["vdcnn29"].recipe_epochs / results["vdcnn29"].train_rate / 3600
        out.append(
            f"- **VDCNN29 ÷ fastText: {_ratio(r['train'])} per training text, {_ratio(r['recipe'])} for one full "
            f"training (15 vs 5 epochs), both on this CPU**: fastText trains on all {texts:,} texts for 5 epochs "
            f"in {np.median(ft.first_step_s):.1f} s, VDCNN29 would need {vd_h:,.1f} h for its 15. The paper's \"two "
            "orders of magnitude\" compares VDCNN29 on a Titan V GPU with fastText on a CPU: a GPU runs VDCNN29's "
            "convolutions orders of magnitude faster than a couple of CPU cores, while fastText gains nothing "
            "from one. On CPU workers VDCNN29 is no practical target, and fastText is what makes text projects "
            "workable.")
    r = by.get(("vdcnn29", "vdcnn9"))
    if r is not None:
        versus = _versus(r["train"], PAPER_RATIOS[("vdcnn29", "vdcnn9")])
        out.append(
            f"- **VDCNN29 ÷ VDCNN9: {_ratio(r['train'])}** per training text ({_ratio(r['flops'])} the FLOPs), "
            f"{versus} the paper's 1.8×, which is a whole-selection speed-up on a GPU rather than a per-example "
            "training ratio. Either way VDCNN9 is a modest proxy next to fastText.")
    r = by.get(("tinycnn", "mlp"))
    if r is not None:
        out.append(f"- tinycnn ÷ mlp (the demo's pair, Fashion-MNIST): {_ratio(r['train'])} per training example.")
    out += [
        "- A selection round costs training plus scoring the pool; the inference column is the second part "
        "(eval mode, batches of 512, no augmentation).",
        "- Ratios are per example. For the paper's full recipes, multiply by the epoch ratio (the `one full "
        "training` column): the 50-epoch ResNet20 proxy recipe makes each round 3.6× cheaper again.",
    ]
    busy = meta["loadavg"]["max"] > int(meta["nproc"])
    check = meta.get("threads_check")
    if check:
        (a, sa), (b, sb) = check.items()
        out.append(
            f"- **Threads.** A step of {meta['threads_check_case']} measured in this run, alternately: median "
            f"{np.median(sa):.2f} s ({min(sa):.2f}–{max(sa):.2f}) with {a} thread(s), {np.median(sb):.2f} s "
            f"({min(sb):.2f}–{max(sb):.2f}) with {b}. With every core already busy with other work, torch's "
            "threads wait for each other at every operator (a descheduled thread stalls the others), which makes "
            f"steps slower and erratic; hence `--threads {b}` for this run. On an idle machine the default is the "
            "faster setting; the ratios, per-core costs of the models, should change little"
            + (" (not measured: the machine was never idle)." if busy else "."))
    if busy:
        out.append(
            f"- **The CPUs were shared** with other engineers' jobs during the run (1-minute load average up to "
            f"{meta['loadavg']['max']:.1f} on {meta['nproc']} CPUs): absolute throughputs are lower bounds for an "
            "idle machine. Each proxy was measured before and after its target and the median step taken, so load "
            "changes weigh on both sides of a ratio, but not evenly: see the repeat runs below.")
    out.append(
        "- The targets have few timed steps (a step of preact164 or VDCNN29 takes many seconds here); see the "
        "step-time spread.")
    return out


def repeats_table(runs: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> str:
    """The ratios of several runs side by side: how far one run's figures can be trusted."""
    pairs = [(t, p) for t, p, _ in PAIRS if any((r["target"], r["proxy"]) == (t, p) for _, rows in runs for r in rows)]
    lines = ["| run | load avg max | " + " | ".join(f"{t} ÷ {p}" for t, p in pairs) + " |",
             "|---|---:|" + "---:|" * len(pairs)]
    for meta, rows in runs:
        by = {(r["target"], r["proxy"]): r["train"] for r in rows}
        cells = [_ratio(by[pair]) if pair in by else "—" for pair in pairs]
        lines.append(f"| {meta['date']} | {meta['loadavg']['max']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_docs(path: Path, meta: dict[str, Any], results: dict[str, Result], rows: list[dict[str, Any]],
               repeats: str | None) -> None:
    body = [
        "## Training throughput, proxy vs target (`bench/train_throughput.py`)",
        "",
        header(meta),
        "",
        "Data: " + "; ".join(meta["sources"]) + ". " + meta["sizes"] + " Models are built and trained by the "
        "worker's own code (`make_learner` with each architecture's default recipe, `fit`, `predict_proba`); each "
        "training step is timed from the loop's per-step progress reports, the first step (model build, "
        "normalisation or encoding, warm-up) apart.",
        "",
        table(results),
        "",
        ratio_table(rows),
        "",
        *meta["findings"],
    ]
    if repeats:
        body += ["", "Training time ratios of repeat runs of the same script on this machine (the first is the run "
                 "above); the spread is that of a shared machine, not of the models:", "", repeats]
    flags = [f"--threads {meta['threads']}"] if meta["threads"] != meta["default_threads"] else []
    flags += [f"--{name}" for name in ("quick", "synthetic") if meta.get(name)]
    made = f"`.venv/bin/python bench/train_throughput.py {' '.join(flags + ['--json RUN.json'])}`"
    if repeats:
        made += ", the runs then combined with `--render RUN1.json RUN2.json ... --docs docs/benchmarks.md`"
    body += [
        "",
        f"Made with {made}. Plain `.venv/bin/python bench/train_throughput.py` measures and writes this section "
        "(about 5-10 minutes on 2 cores); `--quick`: about a minute with smaller batches, printed only; "
        "`--synthetic`: generated data of the same shapes; `--device cuda` measures the torch models on a GPU "
        "(not tried here: no GPU).",
    ]
    write_section(SECTION, "\n".join(body), path)


def report(meta: dict[str, Any], results: dict[str, Result], rows: list[dict[str, Any]], docs: Path | None,
           repeats: str | None = None) -> None:
    meta["findings"] = findings(results, rows, meta)
    print(header(meta), "", table(results), "", ratio_table(rows) if rows else "(no target/proxy pair measured)", "",
          *meta["findings"], *(["", repeats] if repeats else []), sep="\n")
    if docs is not None:
        write_docs(docs, meta, results, rows, repeats)
        print(f"\nwrote the {SECTION} section of {docs}")


def _load_run(path: Path) -> tuple[dict[str, Any], dict[str, Result]]:
    raw = json.loads(path.read_text())
    meta = raw["meta"]
    if "threads_check" in meta:  # JSON object keys are strings
        meta["threads_check"] = {int(k): v for k, v in meta["threads_check"].items()}
    return meta, {k: Result(**v) for k, v in raw["results"].items()}


def render(paths: list[Path], docs: Path | None) -> int:
    """The report of the first ``--json`` run; with more runs, their ratios side by side as well."""
    runs = [_load_run(path) for path in paths]
    meta, results = runs[0]
    repeats = repeats_table([(m, ratios(r)) for m, r in runs]) if len(runs) > 1 else None
    report(meta, results, ratios(results), docs, repeats)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="about a minute: smaller batches, fewer steps; prints only")
    p.add_argument("--synthetic", action="store_true", help="generated data instead of ../shared/datasets")
    p.add_argument("--models", help=f"comma-separated subset of {', '.join(dict.fromkeys(ORDER))}")
    p.add_argument("--steps", type=int, help="timed training steps per run of every torch model (default: the "
                   "sizes above; more where the machine allows, e.g. on a GPU)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: the machine's default); when "
                   "set, a short side-by-side check against the default is measured and reported")
    p.add_argument("--no-profile", action="store_true", help="skip the per-operator breakdown of the preact pair")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--docs", type=Path, help="write the section to this file (default: docs/benchmarks.md, "
                   "for full runs on real data only)")
    p.add_argument("--no-docs", action="store_true", help="print only")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--render", type=Path, nargs="+", metavar="JSON", help="measure nothing: print (and with "
                   "--docs, write) the report of earlier --json runs: the first in full, all runs' ratios side by side")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.render:
        return render(args.render, None if args.no_docs else args.docs)

    cases = QUICK if args.quick else FULL
    order = ORDER
    if args.models:
        chosen = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = sorted(set(chosen) - set(cases))
        if unknown or not chosen:
            p.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(cases)}")
        order = [a for a in ORDER if a in chosen]
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if args.steps is not None:
        if args.steps < 1:
            p.error("--steps must be >= 1")
        cases = {a: c if a == "fasttext" else replace(c, steps=args.steps) for a, c in cases.items()}
    if not args.synthetic and not DATASETS.is_dir():
        p.error(f"{DATASETS} is missing: run with --synthetic")

    import torch

    started = time.time()
    load_start = load_average()
    default_threads = torch.get_num_threads()
    data = load_data(cases, order, args.synthetic, args.seed)
    meta: dict[str, Any] = {}
    torch_archs = [a for a in dict.fromkeys(order) if a != "fasttext"]
    if args.threads is not None and args.threads != default_threads and torch_archs:
        # Small steps: at the default thread count on a busy machine a full one can take many seconds.
        case = replace(cases[torch_archs[0]], batch_size=min(32, cases[torch_archs[0]].batch_size), steps=2, infer=0)
        log.info("threads check on %s: %d vs %d", case.arch, default_threads, args.threads)
        meta["threads_check"] = threads_check(case, data[case.data], (default_threads, args.threads),
                                              args.device, args.seed)
        meta["threads_check_case"] = f"{case.arch} (batch {case.batch_size})"
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        results = measure(cases, order, data, args.device, args.seed)
        if not args.no_profile and args.device == "cpu" and {"preact20", "preact164"} <= set(order):
            batch = cases["preact20"].batch_size
            meta["ops"] = {a: op_breakdown(a, data["cifar10"], batch) for a in ("preact20", "preact164")}
        threads = torch.get_num_threads()
    finally:  # callers in the same process (tests) keep their setting
        torch.set_num_threads(default_threads)
    load_end = load_average()
    rows = ratios(results)
    samples = [x for r in results.values() for x in r.loadavg] + [load_end[0] if load_end else float("nan")]
    meta.update({
        **machine(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__, "threads": threads, "default_threads": default_threads,
        "interop": torch.get_num_interop_threads(), "device": args.device, "elapsed_s": time.time() - started,
        "loadavg": {"start": load_start[0] if load_start else float("nan"), "max": float(np.nanmax(samples)),
                    "end": load_end[0] if load_end else float("nan")},
        "sources": [d.source for d in data.values()], "sizes": sizes_text(cases, order),
        "quick": args.quick, "synthetic": args.synthetic,
    })
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": {k: asdict(v) for k, v in results.items()},
                                         "ratios": rows}, indent=2, default=str))
    report(meta, results, rows, None if args.no_docs else args.docs or (None if args.quick or args.synthetic else DOCS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

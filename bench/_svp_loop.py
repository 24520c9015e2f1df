"""The in-process reference for ``bench/svp_speedup.py``: the same active-learning rounds as the
service runs (same schedule, seeds, models, selection code), in a plain loop over in-memory arrays:
no HTTP, no database, no blob store, no pool cache; the oracle labels the picks directly.

It mirrors ``worker/pipelines/al_round.py`` and ``target.py`` step by step (round 0 drawn with
``draw_initial_sample``, a fresh proxy seeded ``seed + round`` on every label in pool order, the
pool scored in eval mode, ``select`` with ``seed + round``, the proxy evaluated on the test split,
the target seeded ``seed`` at the budget), so on a deterministic device it picks the same items as
the service and the two wall times differ only by what the service adds.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.services.rounds import draw_initial_sample
from app.services.schedule import budget_count, round_size
from svp.simulation import Dataset, Experiment
from worker.pipelines.training import configure_torch_threads, input_shape, take
from worker.selection import select
from worker.training.learner import make_learner


def thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of every live thread of this process by native id; {} off Linux."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out = {}
    try:
        tasks = list(os.scandir("/proc/self/task"))
    except OSError:
        return out
    for task in tasks:
        try:
            with open(os.path.join(task.path, "stat")) as stat:
                fields = stat.read().rsplit(")", 1)[1].split()  # the name may hold spaces
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


class CpuSplit:
    """Process CPU time over a span, and the part spent by the *compute* threads: the given Python
    threads plus every thread that Python did not start (torch's and fastText's worker pools).
    The rest is everything else the process did: the HTTP server, database calls, the simulated
    annotators and the driver, job bookkeeping."""

    def __init__(self) -> None:
        self.start = thread_cpu()
        self.total_start = time.process_time()

    def stop(self, compute_threads: Iterable[threading.Thread]) -> tuple[float, float | None]:
        """(total CPU seconds, compute CPU seconds or None when per-thread times are unavailable)."""
        total = time.process_time() - self.total_start
        end = thread_cpu()
        if not end:
            return total, None
        python = {t.native_id for t in threading.enumerate()}
        chosen = {t.native_id for t in compute_threads}
        compute = sum(cpu - self.start.get(tid, 0.0) for tid, cpu in end.items() if tid in chosen or tid not in python)
        return total, min(compute, total)


@dataclass
class RoundRecord:
    index: int
    labeled: int
    selected: int
    train_s: float
    inference_s: float
    ranking_s: float
    proxy_accuracy: float | None

    @property
    def total_s(self) -> float:
        return self.train_s + self.inference_s + self.ranking_s


@dataclass
class ReferenceRun:
    experiment: Experiment
    wall_s: float
    cpu_s: float  # CPU time of the whole process (every thread) during the run
    compute_cpu_s: float | None  # of which this loop's thread and the native (torch) threads
    labeled_positions: np.ndarray
    target_accuracy: float
    target_train_s: float
    rounds: list[RoundRecord] = field(default_factory=list)

    @property
    def selection_s(self) -> float:
        return sum(r.total_s for r in self.rounds)


def as_model_inputs(x: Any) -> Any:
    """What the pool cache hands the models: uint8 N x H x W x C images (grey gets C = 1), or texts."""
    if isinstance(x, np.ndarray):
        return x[..., None] if x.ndim == 3 else x
    return list(x)


def run_reference(dataset: Dataset, experiment: Experiment, *, threads: int | None) -> ReferenceRun:
    configure_torch_threads(threads)
    pool_x, test_x = as_model_inputs(dataset.pool_x), as_model_inputs(dataset.test_x)
    modality, num_classes = dataset.modality, len(dataset.classes)
    seed, schedule, n = experiment.seed, experiment.schedule, len(dataset.pool_y)
    started, cpu = time.perf_counter(), CpuSplit()

    labels = np.full(n, -1, dtype=np.int64)
    first = draw_initial_sample(list(range(n)), size=round_size(schedule, round_index=0, pool_size=n, labeled=0),
                                seed=seed)
    labels[first] = dataset.pool_y[first]  # the oracle
    budget = budget_count(schedule, n)
    records = []
    index = 1
    while True:
        labeled = labels >= 0
        count = int(labeled.sum())
        k = round_size(schedule, round_index=index, pool_size=n, labeled=count)
        # The service's rule for "budget reached" (app/services/rounds.py, _finish_round).
        if count >= budget or count >= n or k < 1:
            break
        record, picks = _round(experiment, index, k, pool_x, labels, labeled, test_x, dataset.test_y,
                               modality=modality, num_classes=num_classes)
        records.append(record)
        labels[picks] = dataset.pool_y[picks]
        index += 1

    labeled = labels >= 0
    t0 = time.perf_counter()
    target = make_learner({"seed": seed, **experiment.target}, modality=modality, num_classes=num_classes,
                          input_shape=input_shape(pool_x))
    target.fit(take(pool_x, labeled), labels[labeled])
    target_train_s = time.perf_counter() - t0
    accuracy = target.evaluate(test_x, dataset.test_y)["accuracy"]
    wall_s = time.perf_counter() - started
    cpu_s, compute_cpu_s = cpu.stop([threading.current_thread()])
    return ReferenceRun(experiment, wall_s, cpu_s, compute_cpu_s, np.flatnonzero(labeled), accuracy, target_train_s,
                        records)


def _round(experiment: Experiment, index: int, k: int, pool_x, labels: np.ndarray, labeled: np.ndarray, test_x,
           test_y: np.ndarray, *, modality: str, num_classes: int) -> tuple[RoundRecord, np.ndarray]:
    seed = experiment.seed + index
    if experiment.strategy == "random":
        t0 = time.perf_counter()
        picks, _ = select("random", k=k, labeled_mask=labeled, seed=seed)
        return RoundRecord(index, int(labeled.sum()), k, 0.0, 0.0, time.perf_counter() - t0, None), picks
    t0 = time.perf_counter()
    learner = make_learner({"seed": seed, **experiment.proxy}, modality=modality, num_classes=num_classes,
                           input_shape=input_shape(pool_x))
    learner.fit(take(pool_x, labeled), labels[labeled])
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if experiment.strategy == "kcenters":
        probs, features = learner.probs_and_features(pool_x)
    else:
        probs, features = learner.predict_proba(pool_x), None
    inference_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    picks, _ = select(experiment.strategy, k=k, probs=probs, features=features, labeled_mask=labeled, seed=seed)
    ranking_s = time.perf_counter() - t0
    # Evaluated like the service does every round (its learning curve), outside the selection time.
    accuracy = learner.evaluate(test_x, test_y)["accuracy"]
    record = RoundRecord(index, int(labeled.sum()), len(picks), train_s, inference_s, ranking_s, accuracy)
    return record, np.asarray(picks, dtype=np.int64)

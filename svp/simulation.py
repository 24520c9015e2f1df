"""Simulated annotation: drive a project through the service's HTTP API like a real annotation tool,
with the true labels as the oracle. Used by ``svp demo`` and ``svp simulate``.

Every step goes over HTTP: create the project, import the pool and the test split, start, then
annotators lease batches with ``queries/next`` and send labels until the target is trained.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
import numpy as np

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    """A labeled dataset: images as uint8 (N, H, W[, C]) or texts, integer labels, class names."""

    name: str
    modality: str
    classes: list[str]
    pool_x: Any
    pool_y: np.ndarray
    test_x: Any
    test_y: np.ndarray


@dataclass
class Experiment:
    name: str
    proxy: dict[str, Any]
    target: dict[str, Any]
    strategy: str
    schedule: dict[str, Any]
    seed: int = 0


@dataclass
class Outcome:
    experiment: Experiment
    project_id: int
    curve: dict[str, Any]
    wall_s: float
    labels_sent: int
    errors: list[str] = field(default_factory=list)

    @property
    def target_accuracy(self) -> float | None:
        result = self.curve.get("target_result") or {}
        return result.get("accuracy")

    @property
    def selection_s(self) -> float:
        return float(self.curve.get("data_selection_s") or 0.0)


class ServiceClient:
    def __init__(self, base_url: str, key: str, timeout: float = 120.0):
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    def call(self, method: str, url: str, **kwargs) -> httpx.Response:
        response = self.http.request(method, url, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {url} -> {response.status_code}: {response.text[:500]}")
        return response

    def close(self) -> None:
        self.http.close()


def _upload(client: ServiceClient, project_id: int, dataset: Dataset, split: str, x, y: np.ndarray | None) -> None:
    ids = [f"{split}-{i}" for i in range(len(y if y is not None else x))]
    if dataset.modality == "image":
        buffer = io.BytesIO()
        arrays = {"x": np.asarray(x, dtype=np.uint8), "ids": np.asarray(ids)}
        if y is not None:
            arrays["y"] = np.asarray(y, dtype=np.int64)
        np.savez(buffer, **arrays)
        files = {"file": (f"{split}.npz", buffer.getvalue(), "application/octet-stream")}
    else:
        lines = []
        for i, text in enumerate(x):
            row = {"external_id": ids[i], "text": text}
            if y is not None:
                row["label"] = dataset.classes[int(y[i])]
            lines.append(json.dumps(row))
        files = {"file": (f"{split}.jsonl", ("\n".join(lines) + "\n").encode(), "application/x-ndjson")}
    client.call("POST", f"/projects/{project_id}/items/upload", data={"split": split}, files=files)


def _annotate(client: ServiceClient, project_id: int, oracle: dict[str, str], batch: int, stop: threading.Event,
              counter: list[int], errors: list[str]) -> None:
    """One annotator: lease a batch, label it, repeat; wait politely while a round is being selected."""
    while not stop.is_set():
        try:
            response = client.call("GET", f"/projects/{project_id}/queries/next", params={"limit": batch})
            body = response.json()
            items = body.get("items") or []
            if not items:
                if body.get("status") in ("completed",) or body.get("reason") == "completed":
                    return
                # A short wait instead of Retry-After: the simulation wants rounds back to back.
                stop.wait(min(0.2, float(response.headers.get("Retry-After", 1))))
                continue
            labels = [{"item_id": item["item_id"], "label": oracle[item["external_id"]]} for item in items]
            client.call("POST", f"/projects/{project_id}/labels/bulk", json={"labels": labels})
            counter[0] += len(labels)
        except Exception as exc:  # keep the simulation going, but report
            errors.append(str(exc))
            log.warning("annotator error: %s", exc)
            stop.wait(0.5)


def run_experiment(
    base_url: str,
    admin_key: str,
    dataset: Dataset,
    experiment: Experiment,
    *,
    annotators: int = 2,
    batch: int = 20,
    timeout_s: float = 3600,
    on_status: Callable[[str, dict[str, Any]], None] | None = None,
    http_timeout_s: float = 120.0,
) -> Outcome:
    # http_timeout_s bounds each request; importing a large pool (e.g. 50,000 images) is one request.
    admin = ServiceClient(base_url, admin_key, timeout=http_timeout_s)
    started = time.perf_counter()
    project = admin.call(
        "POST",
        "/projects",
        json={
            "name": f"{experiment.name}-{int(time.time() * 1000)}",
            "modality": dataset.modality,
            "classes": dataset.classes,
            "proxy": experiment.proxy,
            "target": experiment.target,
            "strategy": experiment.strategy,
            "schedule": experiment.schedule,
            "seed": experiment.seed,
        },
    ).json()
    project_id = project["id"]
    _upload(admin, project_id, dataset, "pool", dataset.pool_x, None)
    _upload(admin, project_id, dataset, "test", dataset.test_x, dataset.test_y)
    admin.call("POST", f"/projects/{project_id}/start")
    oracle = {f"pool-{i}": dataset.classes[int(label)] for i, label in enumerate(dataset.pool_y)}

    stop = threading.Event()
    counter = [0]
    errors: list[str] = []
    clients = []
    threads = []
    for n in range(annotators):
        key = admin.call("POST", "/keys", json={"role": "annotator", "name": f"{experiment.name}-annotator-{n}",
                                                "project_id": project_id}).json()["secret"]
        client = ServiceClient(base_url, key)
        clients.append(client)
        thread = threading.Thread(target=_annotate, args=(client, project_id, oracle, batch, stop, counter, errors),
                                  daemon=True)
        threads.append(thread)
        thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = admin.call("GET", f"/projects/{project_id}").json()
            if on_status:
                on_status(experiment.name, status)
            if status["status"] in ("completed", "failed"):
                break
            failed = [j for j in admin.call("GET", f"/projects/{project_id}/jobs").json() if j["status"] == "failed"]
            if failed:
                raise RuntimeError(f"{experiment.name}: job {failed[0]['id']} failed: {failed[0].get('error')}")
            time.sleep(0.25)
        else:
            raise TimeoutError(f"{experiment.name} did not complete within {timeout_s} s")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        for client in clients:
            client.close()
    curve = admin.call("GET", f"/projects/{project_id}/learning-curve").json()
    admin.close()
    return Outcome(experiment, project_id, curve, time.perf_counter() - started, counter[0], errors)

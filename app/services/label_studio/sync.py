"""Keeping the connected Label Studio project on the service's current model version.

Label Studio 1.23's "Uncertainty sampling" only looks at predictions whose ``model_version``
equals the *project's* model version, and a project connected to a backend starts on the
backend's title, which no prediction carries; nor does Label Studio move the project to a new
version by itself. So after every retrain (a new version) the project must (1) retrieve
predictions for its tasks and (2) switch its model version. This module does both through Label
Studio's API, with the host and token of the last ``/setup``, in the background after a webhook
has been answered: ``GET /api/projects/<id>``, then the data manager's
``retrieve_tasks_predictions`` action (Label Studio calls ``/predict`` for the tasks that lack the
version), then ``PATCH /api/projects/<id>`` with the version.

A webhook that leaves a round being selected (the proxy retraining) starts a watcher instead: it
waits for the round to be published and syncs at once, so annotators are served the new batch
from their next task on.

The token Label Studio hands out is its legacy API token; an organization that disabled legacy
tokens refuses it, and the sync logs how to fix that (or to switch the version by hand).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.db import tables as t
from app.services.label_studio.media import authorization_header

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
RETRIEVE_TIMEOUT_S = 600.0  # Label Studio predicts every task in the request that triggers it
RETRY_AFTER_S = 300.0
FOLLOW_POLL_S = 2.0
FOLLOW_MAX_S = 6 * 3600.0  # how long to wait for a retrain to publish its round


class SyncError(Exception):
    pass


@dataclass(frozen=True)
class Target:
    """The Label Studio project to keep in step, and how to reach it."""

    hostname: str
    token: str
    ls_project: int


def target_of(link: t.LabelStudioLink | None) -> Target | None:
    """Where to sync, when the last /setup said enough (host, token and project uid ``<id>.<created>``)."""
    if link is None or not link.hostname or not link.access_token or not link.ls_project:
        return None
    head = link.ls_project.split(".", 1)[0]
    if not head.isdigit():
        return None
    return Target(hostname=link.hostname.rstrip("/"), token=link.access_token, ls_project=int(head))


def _call(target: Target, method: str, path: str, body: Any = None, timeout: float = TIMEOUT_S) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{target.hostname}{path}", data=data, method=method)
    request.add_unredirected_header("Authorization", authorization_header(target.token))
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) host from /setup
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode("utf-8", "replace")
        hint = ""
        if exc.code == 401:
            hint = (" (Label Studio refused its own token: enable legacy API tokens for the organization, "
                    "or switch the project's model version by hand)")
        raise SyncError(f"{method} {path}: HTTP {exc.code}{hint}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise SyncError(f"{method} {path}: {getattr(exc, 'reason', exc)}") from None
    return json.loads(raw) if raw else None


def sync_project(target: Target, version: str) -> None:
    """Bring the Label Studio project to ``version``, every task predicted with it."""
    project = _call(target, "GET", f"/api/projects/{target.ls_project}")
    current = project.get("model_version") if isinstance(project, dict) else None
    # Tasks without a prediction of this version get one (Label Studio skips the others); it must
    # come first: Label Studio only accepts a model version that some prediction carries.
    _call(
        target,
        "POST",
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={target.ls_project}",
        {"project": target.ls_project, "selectedItems": {"all": True, "excluded": []}},
        timeout=RETRIEVE_TIMEOUT_S,
    )
    if current != version:
        _call(target, "PATCH", f"/api/projects/{target.ls_project}", {"model_version": version})
        log.info("Label Studio project %s switched to model version %s", target.ls_project, version)


class VersionSync:
    """One sync at a time per project; a version already reached is not synced again unless
    new tasks arrived; a failure is retried after a while, not on every webhook."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reached: dict[int, str] = {}
        self._running: set[int] = set()
        self._failed: dict[int, tuple[str, float]] = {}

    def claim(self, project_id: int, version: str, *, new_tasks: bool = False, follow: bool = False) -> bool:
        with self._lock:
            if project_id in self._running:
                return False
            if follow:  # a watcher for the coming version, whatever happened to this one
                self._running.add(project_id)
                return True
            failed = self._failed.get(project_id)
            if failed is not None and failed[0] == version and time.monotonic() - failed[1] < RETRY_AFTER_S:
                return False
            if not new_tasks and self._reached.get(project_id) == version:
                return False
            self._running.add(project_id)
            return True

    def run(self, project_id: int, version: str, target: Target) -> None:
        """Call after a successful ``claim``."""
        try:
            sync_project(target, version)
        except SyncError as exc:
            log.warning("Label Studio project %s not switched to %s: %s", target.ls_project, version, exc)
            with self._lock:
                self._failed[project_id] = (version, time.monotonic())
        except Exception:  # a background task must not die silently
            log.exception("Label Studio sync of project %s failed", project_id)
            with self._lock:
                self._failed[project_id] = (version, time.monotonic())
        else:
            with self._lock:
                self._reached[project_id] = version
                self._failed.pop(project_id, None)
        finally:
            with self._lock:
                self._running.discard(project_id)

    def follow(self, project_id: int, version: str, target: Target, standing: Callable[[], tuple[str, bool]]) -> None:
        """Call after ``claim(..., follow=True)``: in a daemon thread, wait while ``standing()``
        says a round is being selected, then sync to the version it reports."""

        def watch() -> None:
            current, selecting = version, True
            deadline = time.monotonic() + FOLLOW_MAX_S
            try:
                while selecting and time.monotonic() < deadline:
                    time.sleep(FOLLOW_POLL_S)
                    current, selecting = standing()
            except Exception:
                log.exception("watching project %s for its next round failed", project_id)
            self.run(project_id, current, target)

        threading.Thread(target=watch, name=f"label-studio-sync-{project_id}", daemon=True).start()

"""Monitoring: structured logs, request ids and Prometheus metrics.

- ``configure_logging(settings)``: one JSON object per line when ``SVP_LOG_FORMAT=json`` (time,
  level, logger, message, request_id, job_id and any ``extra`` fields), plain lines otherwise.
- ``RequestContextMiddleware``: takes the caller's ``X-Request-ID`` (or makes one), exposes it to
  every log line of the request, echoes it on the response, and times the request by route template.
- ``Metrics``: a registry per app. Request latency is observed live; queue depth, job outcomes and
  durations, and labels of the last minute are read from the database at scrape time, because the
  jobs run in other processes and the database is the one place that sees them all.
- ``log_context(job_id=...)``: binds a job id (or request id) to the log lines emitted inside it,
  for worker code.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta, timezone
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import tables as t
from app.db.base import utcnow

log = logging.getLogger(__name__)
access_log = logging.getLogger("svp.access")

REQUEST_ID_HEADER = "X-Request-ID"
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

request_id_var: ContextVar[str | None] = ContextVar("svp_request_id", default=None)
job_id_var: ContextVar[int | None] = ContextVar("svp_job_id", default=None)

# A client's id is echoed into headers and logs: accept only short, plain tokens.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")

JOB_TYPES = (t.JOB_SELECT_ROUND, t.JOB_TRAIN_TARGET, t.JOB_CORESET)
JOB_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)


# --------------------------------------------------------------------------------------- logging

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is emitted.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's copy of the message with terminal colour codes
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, job_id, extras, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # "-" is the text format's placeholder (_ContextFilter), not an id.
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id and request_id != "-":
            entry["request_id"] = request_id
        job_id = getattr(record, "job_id", None)
        job_id = job_id_var.get() if job_id in (None, "-") else job_id
        if job_id is not None:
            entry["job_id"] = job_id
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        # default=str: an extra that is not JSON (a Path, a datetime) must not lose the line.
        return json.dumps(entry, default=str, ensure_ascii=False)


class _ContextFilter(logging.Filter):
    """Puts the request and job ids on records so the text format can show them too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get() or "-"
        if getattr(record, "job_id", None) is None:
            job_id = job_id_var.get()
            record.job_id = job_id if job_id is not None else "-"
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [req=%(request_id)s job=%(job_id)s] %(message)s"

# Loggers that servers configure with handlers of their own; in JSON mode their lines must go
# through ours instead, or a log collector gets a mix of formats.
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task", "celery.worker")


def configure_logging(settings: Settings, *, stream=None) -> logging.Handler | None:
    """Install the service's log handler on the root logger; returns it (None when left alone).

    JSON: always installed (replacing one installed before), server loggers routed through it.
    Text: installed only when nothing configured logging yet, so a host application (or pytest)
    keeps its own handlers.
    """
    root = logging.getLogger()
    level = logging.getLevelName(str(settings.log_level).upper())
    level = level if isinstance(level, int) else logging.INFO
    for handler in list(root.handlers):
        if getattr(handler, "_svp_handler", False):
            root.removeHandler(handler)
    if settings.log_format == "json":
        handler: logging.Handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter())
        for name in _SERVER_LOGGERS:
            server_logger = logging.getLogger(name)
            # Only loggers with handlers of their own are rerouted: one switched off on purpose
            # (no handlers, no propagation: uvicorn's --no-access-log) must stay off.
            if server_logger.handlers:
                server_logger.handlers.clear()
                server_logger.propagate = True
    elif not root.handlers:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
        handler.addFilter(_ContextFilter())
    else:
        return None
    handler._svp_handler = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    return handler


@contextmanager
def log_context(*, request_id: str | None = None, job_id: int | None = None) -> Iterator[None]:
    """Log lines emitted inside carry these ids (worker code: ``with log_context(job_id=...)``)."""
    tokens = []
    if request_id is not None:
        tokens.append((request_id_var, request_id_var.set(request_id)))
    if job_id is not None:
        tokens.append((job_id_var, job_id_var.set(job_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def bind_job_id(func):
    """Decorator for ``f(settings, job_id, ...)``: every line logged inside carries the job id."""

    @functools.wraps(func)
    def wrapper(settings, job_id, *args, **kwargs):
        with log_context(job_id=job_id):
            return func(settings, job_id, *args, **kwargs)

    return wrapper


# -------------------------------------------------------------------------------------- labels

class _LabelCounter:
    """Annotations committed by this process. A process-wide count, as a Prometheus counter is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


LABELS_COMMITTED = _LabelCounter()
_PENDING_LABELS = "svp_pending_label_count"


@event.listens_for(Session, "after_flush")
def _count_new_annotations(session: Session, _flush_context) -> None:
    # after_flush still sees the pre-flush ``new`` set; counted only once the transaction commits.
    n = sum(1 for obj in session.new if isinstance(obj, t.Annotation))
    if n:
        session.info[_PENDING_LABELS] = session.info.get(_PENDING_LABELS, 0) + n


def count_new_labels(session: Session, n: int) -> None:
    """Annotations inserted without the ORM's unit of work (the labeling hot path writes them with
    one Core statement): counted at commit, as flushed ones are."""
    if n:
        session.info[_PENDING_LABELS] = session.info.get(_PENDING_LABELS, 0) + n


@event.listens_for(Session, "after_commit")
def _commit_label_count(session: Session) -> None:
    n = session.info.pop(_PENDING_LABELS, 0)
    if n:
        LABELS_COMMITTED.add(n)


@event.listens_for(Session, "after_rollback")
def _drop_label_count(session: Session) -> None:
    session.info.pop(_PENDING_LABELS, None)


# ----------------------------------------------------------------------------------- readiness

_redis_clients: dict[str, Any] = {}
_redis_lock = threading.Lock()


def broker_client(url: str):
    """One Redis client per broker URL with short timeouts: a probe must answer, not hang."""
    with _redis_lock:
        client = _redis_clients.get(url)
        if client is None:
            import redis

            client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
            _redis_clients[url] = client
        return client


def _is_redis(url: str | None) -> bool:
    return bool(url) and url.startswith(("redis://", "rediss://", "unix://"))


def readiness(sessionmaker, settings: Settings) -> dict[str, str]:
    """``{"database": "ok", "broker": "ok"}``; a failing part holds its error instead of "ok".

    The broker is checked only when one is configured (embedded mode has none); a non-Redis broker
    is reported as "unchecked" rather than failing readiness.
    """
    checks: dict[str, str] = {}
    try:
        with sessionmaker() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure, not only SQLAlchemy's: the probe reports, never raises
        checks["database"] = f"error: {type(exc).__name__}: {exc}".splitlines()[0][:300]
    if settings.broker_url:
        if not _is_redis(settings.broker_url):
            checks["broker"] = "unchecked"
        else:
            try:
                broker_client(settings.broker_url).ping()
                checks["broker"] = "ok"
            except Exception as exc:
                checks["broker"] = f"error: {type(exc).__name__}: {exc}".splitlines()[0][:300]
    return checks


# ------------------------------------------------------------------------------------- metrics

class DatabaseCollector:
    """Series read at scrape time from the job and annotation tables (and the broker's queue)."""

    def __init__(self, sessionmaker, settings: Settings):
        self.sessionmaker = sessionmaker
        self.settings = settings

    def collect(self):
        up = GaugeMetricFamily("svp_metrics_source_up", "Whether a scrape-time source answered (1) or not (0).",
                               labels=["source"])
        try:
            yield from self._database_families()
            up.add_metric(["database"], 1)
        except Exception:  # a scrape must not fail because the database is down; /ready reports that
            log.warning("metrics: database query failed", exc_info=True)
            up.add_metric(["database"], 0)
        if _is_redis(self.settings.broker_url):
            depth = GaugeMetricFamily("svp_broker_queue_length", "Messages waiting in the broker's queue.",
                                      labels=["queue"])
            try:
                depth.add_metric([self.settings.gpu_queue], float(broker_client(self.settings.broker_url).llen(self.settings.gpu_queue)))
                up.add_metric(["broker"], 1)
                yield depth
            except Exception:
                log.warning("metrics: broker query failed", exc_info=True)
                up.add_metric(["broker"], 0)
        yield CounterMetricFamily("svp_labels", "Annotations committed through this process.",
                                  value=LABELS_COMMITTED.value)
        yield up

    def _database_families(self):
        with self.sessionmaker() as session:
            active = session.execute(
                select(t.Job.type, t.Job.status, func.count())
                .where(t.Job.status.in_([t.JOB_QUEUED, t.JOB_RUNNING]))
                .group_by(t.Job.type, t.Job.status)
            ).all()
            finished = session.execute(
                select(t.Job.type, t.Job.status, t.Job.started_at, t.Job.finished_at).where(
                    t.Job.status.in_(t.JOB_FINISHED)
                )
            ).all()
            recent_labels = session.scalar(
                select(func.count()).select_from(t.Annotation).where(
                    t.Annotation.created_at >= utcnow() - timedelta(minutes=1)
                )
            )

        queue = GaugeMetricFamily("svp_jobs_queue_depth", "Jobs waiting or running, by type and status.",
                                  labels=["type", "status"])
        counts = {(job_type, status): 0 for job_type in JOB_TYPES for status in (t.JOB_QUEUED, t.JOB_RUNNING)}
        for job_type, status, n in active:
            counts[(job_type, status)] = n
        for (job_type, status), n in sorted(counts.items()):
            queue.add_metric([job_type, status], n)
        yield queue

        outcomes: dict[tuple[str, str], int] = {}
        durations: dict[tuple[str, str], list[float]] = {}
        for job_type, status, started_at, finished_at in finished:
            outcomes[(job_type, status)] = outcomes.get((job_type, status), 0) + 1
            if started_at is not None and finished_at is not None:
                seconds = max((finished_at - started_at).total_seconds(), 0.0)
                durations.setdefault((job_type, status), []).append(seconds)
        # A job retried after failing leaves the finished set, so this count can fall: Prometheus'
        # rate() treats that as a counter reset, which is close enough for an outcome dashboard.
        finished_family = CounterMetricFamily("svp_jobs_finished", "Finished jobs, by type and outcome.",
                                              labels=["type", "status"])
        for key in sorted(outcomes):
            finished_family.add_metric(list(key), outcomes[key])
        yield finished_family

        histogram = HistogramMetricFamily("svp_job_duration_seconds",
                                          "Run time of finished jobs (started to finished), by type and outcome.",
                                          labels=["type", "status"])
        for key in sorted(durations):
            values = durations[key]
            buckets = [(str(float(bound)), sum(1 for v in values if v <= bound)) for bound in JOB_DURATION_BUCKETS]
            buckets.append(("+Inf", len(values)))
            histogram.add_metric(list(key), buckets, sum(values))
        yield histogram

        yield GaugeMetricFamily("svp_labels_last_minute",
                                "Annotations created in the last 60 seconds (every process).",
                                value=recent_labels or 0)


class Metrics:
    """The app's registry: process metrics, request latency, and the scrape-time collectors."""

    def __init__(self, sessionmaker, settings: Settings):
        # A registry per app, not the global one: tests and embedded use build several apps per process.
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.request_duration = Histogram(
            "svp_http_request_duration_seconds",
            "HTTP request latency, by route template, method and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.registry.register(DatabaseCollector(sessionmaker, settings))

    def render(self) -> bytes:
        return generate_latest(self.registry)


# ----------------------------------------------------------------------------------- middleware

_PROBE_ROUTES = frozenset({"/health", "/ready", "/metrics"})


def _route_template(scope: dict[str, Any]) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths are one series, or a scanner could create a series per URL it tries.
    return path if isinstance(path, str) else "<unmatched>"


class RequestContextMiddleware:
    """Pure ASGI middleware (no response buffering, streaming stays intact)."""

    def __init__(self, app, metrics: Metrics | None = None):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if incoming and _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        status = {"code": 500}
        header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode())

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = [h for h in message.get("headers", []) if h[0].lower() != header[0]]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        token = request_id_var.set(request_id)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            if self.metrics is not None:
                self.metrics.request_duration.labels(scope["method"], route, str(status["code"])).observe(elapsed)
            # Probes hit these every few seconds; at INFO they would drown the requests that matter.
            level = logging.DEBUG if route in _PROBE_ROUTES else logging.INFO
            if access_log.isEnabledFor(level):  # the extras cost something on every request; build them only when logged
                access_log.log(
                    level,
                    "%s %s %s %.1fms", scope["method"], scope.get("path", ""), status["code"], elapsed * 1000,
                    extra={"method": scope["method"], "path": scope.get("path", ""), "route": route,
                           "status": status["code"], "duration_ms": round(elapsed * 1000, 2)},
                )
            request_id_var.reset(token)


def metrics_for(app) -> Metrics:
    """The app's metrics; an app built without install_observability gets a registry on first use."""
    metrics = getattr(app.state, "metrics", None)
    if metrics is None:
        metrics = app.state.metrics = Metrics(app.state.sessionmaker, app.state.settings)
    return metrics


def install_observability(app, settings: Settings) -> Metrics:
    """Logging, the request-id/latency middleware and the metrics registry (``app.state.metrics``)."""
    configure_logging(settings)
    metrics = Metrics(app.state.sessionmaker, settings)
    app.state.metrics = metrics
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return metrics

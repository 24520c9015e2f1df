"""Monitoring endpoints and logs: /ready, /metrics (series exist and move), request ids, JSON logs.

Runs on SQLite and PostgreSQL (the ``client`` fixture); the broker checks use the real Redis.
"""

from __future__ import annotations

import io
import json
import logging
import os
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.db import tables as t
from app.db.base import utcnow
from app.db.session import session_scope
from app.main import create_app
from app.observability import JsonFormatter, configure_logging, log_context
from app.queue import NullDispatcher

REDIS_URL = os.environ.get("SVP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one /metrics answer."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def add_project(url: str) -> int:
    with session_scope(url) as session:
        project = t.Project(
            name=f"p-{uuid.uuid4().hex[:8]}", modality="text", classes=["a", "b"], proxy={"arch": "fasttext"},
            target={"arch": "fasttext"}, strategy="least_confidence", schedule={"initial": 2, "rounds": [2], "budget": 4},
        )
        session.add(project)
        session.flush()
        return project.id


# ------------------------------------------------------------------------------------ /ready


def test_ready_when_database_answers(client):
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok"}}  # embedded: no broker to check


def test_ready_checks_the_broker_when_one_is_configured(settings):
    ok = settings.model_copy(update={"broker_url": REDIS_URL})
    with TestClient(create_app(ok, dispatcher=NullDispatcher())) as client:
        response = client.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}

    down = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})  # nothing listens on port 1
    with TestClient(create_app(down, dispatcher=NullDispatcher())) as client:
        response = client.get("/ready")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "not_ready"
    assert error["message"] == "not ready: broker"
    checks = {d["check"]: d["status"] for d in error["details"]}
    assert checks["database"] == "ok"
    assert checks["broker"].startswith("error: ")


def test_ready_names_the_database_when_it_does_not_answer(tmp_path):
    settings = Settings(data_dir=tmp_path, database_url="postgresql+psycopg://postgres@127.0.0.1:1/none",
                        broker_url=None, _env_file=None)
    with TestClient(create_app(settings)) as client:
        response = client.get("/ready")
        assert response.status_code == 503
        assert response.json()["error"]["message"] == "not ready: database"
        # The scrape still answers, and says which source failed.
        samples = scrape(client)
    assert value(samples, "svp_metrics_source_up", source="database") == 0


# ---------------------------------------------------------------------------------- /metrics


def test_request_latency_is_recorded_by_route_template(client, admin_headers):
    before = scrape(client)
    for project_id in (101, 102, 103):
        assert client.get(f"/projects/{project_id}", headers=admin_headers).status_code == 404
    client.get("/no/such/route")
    after = scrape(client)
    key = dict(method="GET", route="/projects/{project_id}", status="404")
    assert (value(after, "svp_http_request_duration_seconds_count", **key) or 0) - (
        value(before, "svp_http_request_duration_seconds_count", **key) or 0
    ) == 3
    assert value(after, "svp_http_request_duration_seconds_sum", **key) > 0
    # Unmatched paths share one series instead of one per URL.
    assert value(after, "svp_http_request_duration_seconds_count", method="GET", route="<unmatched>", status="404") == 1
    assert not any("/projects/101" in str(labels) for _, labels in after)


def test_job_and_label_series_are_read_from_the_database(client, settings):
    url = settings.resolved_database_url
    project_id = add_project(url)
    now = utcnow()
    initial = scrape(client)
    assert value(initial, "svp_jobs_queue_depth", type="select_round", status="queued") == 0
    assert value(initial, "svp_labels_last_minute") == 0
    labels_before = value(initial, "svp_labels_total")

    with session_scope(url) as session:
        session.add_all([
            t.Job(project_id=project_id, type=t.JOB_SELECT_ROUND, status=t.JOB_QUEUED),
            t.Job(project_id=project_id, type=t.JOB_SELECT_ROUND, status=t.JOB_QUEUED),
            t.Job(project_id=project_id, type=t.JOB_TRAIN_TARGET, status=t.JOB_RUNNING, started_at=now),
            t.Job(project_id=project_id, type=t.JOB_SELECT_ROUND, status=t.JOB_SUCCEEDED,
                  started_at=now - timedelta(seconds=3), finished_at=now),
            t.Job(project_id=project_id, type=t.JOB_SELECT_ROUND, status=t.JOB_SUCCEEDED,
                  started_at=now - timedelta(seconds=100), finished_at=now),
            t.Job(project_id=project_id, type=t.JOB_TRAIN_TARGET, status=t.JOB_FAILED,
                  started_at=now - timedelta(seconds=20), finished_at=now),
            t.Job(project_id=project_id, type=t.JOB_CORESET, status=t.JOB_CANCELLED, finished_at=now),  # never ran
        ])
        items = [t.Item(project_id=project_id, external_id=f"x{i}", split="pool", content_type="text/plain",
                        content_sha256=f"{i:064d}", text=f"text {i}") for i in range(4)]
        session.add_all(items)
        session.flush()
        session.add_all([t.Annotation(project_id=project_id, item_id=item.id, label="a", annotator="ann")
                         for item in items[:3]])
        # An old annotation: counted by the process counter, not by the last-minute gauge.
        session.add(t.Annotation(project_id=project_id, item_id=items[3].id, label="b", annotator="ann",
                                 created_at=now - timedelta(minutes=5)))
    # A rolled-back annotation counts nowhere.
    with pytest.raises(RuntimeError):
        with session_scope(url) as session:
            session.add(t.Annotation(project_id=project_id, item_id=items[0].id, label="b", annotator="ann"))
            session.flush()
            raise RuntimeError("abort")

    samples = scrape(client)
    assert value(samples, "svp_jobs_queue_depth", type="select_round", status="queued") == 2
    assert value(samples, "svp_jobs_queue_depth", type="train_target", status="running") == 1
    assert value(samples, "svp_jobs_queue_depth", type="coreset", status="queued") == 0
    assert value(samples, "svp_jobs_finished_total", type="select_round", status="succeeded") == 2
    assert value(samples, "svp_jobs_finished_total", type="train_target", status="failed") == 1
    assert value(samples, "svp_jobs_finished_total", type="coreset", status="cancelled") == 1
    duration = dict(type="select_round", status="succeeded")
    assert value(samples, "svp_job_duration_seconds_count", **duration) == 2
    assert value(samples, "svp_job_duration_seconds_sum", **duration) == pytest.approx(103)
    assert value(samples, "svp_job_duration_seconds_bucket", le="1.0", **duration) == 0
    assert value(samples, "svp_job_duration_seconds_bucket", le="5.0", **duration) == 1
    assert value(samples, "svp_job_duration_seconds_bucket", le="120.0", **duration) == 2
    assert value(samples, "svp_job_duration_seconds_bucket", le="+Inf", **duration) == 2
    # The cancelled job never started: an outcome, but no duration.
    assert value(samples, "svp_job_duration_seconds_count", type="coreset", status="cancelled") is None
    assert value(samples, "svp_labels_last_minute") == 3
    assert value(samples, "svp_labels_total") - labels_before == 4
    assert value(samples, "svp_metrics_source_up", source="database") == 1


def test_broker_queue_length_is_scraped_from_redis(settings):
    queue = f"gpu-metrics-{uuid.uuid4().hex[:8]}"
    conf = settings.model_copy(update={"broker_url": REDIS_URL, "gpu_queue": queue})
    r = redis.Redis.from_url(REDIS_URL)
    try:
        with TestClient(create_app(conf, dispatcher=NullDispatcher())) as client:
            assert value(scrape(client), "svp_broker_queue_length", queue=queue) == 0
            r.lpush(queue, b"m1", b"m2")
            samples = scrape(client)
        assert value(samples, "svp_broker_queue_length", queue=queue) == 2
        assert value(samples, "svp_metrics_source_up", source="broker") == 1
    finally:
        r.delete(queue)
        r.close()


# ------------------------------------------------------------------------------ request ids


def test_request_id_is_echoed_or_made(client):
    response = client.get("/health", headers={"X-Request-ID": "tool-42.a"})
    assert response.headers["x-request-id"] == "tool-42.a"
    first = client.get("/health").headers["x-request-id"]
    second = client.get("/health").headers["x-request-id"]
    assert first != second and len(first) == 32
    # Anything that is not a short plain token is replaced, so it cannot inject into headers or logs.
    for bad in (b"has space", b"x" * 300, "a\u00e9b".encode(), b"a;b"):
        echoed = client.get("/health", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert echoed.encode() != bad and len(echoed) == 32
    # Error responses carry it too.
    assert client.get("/projects/1", headers={"X-Request-ID": "err-1"}).headers["x-request-id"] == "err-1"


# ------------------------------------------------------------------------------------- logs


@pytest.fixture
def json_logs(tmp_path):
    """Routes the root logger to a buffer in JSON; restores logging afterwards.

    Sets up uvicorn's loggers the way `uvicorn --no-access-log` leaves them: "uvicorn" with a handler
    of its own, "uvicorn.access" switched off.
    """
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    server = {name: (logging.getLogger(name).propagate, list(logging.getLogger(name).handlers))
              for name in ("uvicorn", "uvicorn.error", "uvicorn.access")}
    own = logging.StreamHandler(io.StringIO())
    logging.getLogger("uvicorn").handlers[:] = [own]
    logging.getLogger("uvicorn").propagate = False
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False
    buffer = io.StringIO()
    handler = configure_logging(Settings(data_dir=tmp_path, log_format="json", log_level="DEBUG", _env_file=None),
                                stream=buffer)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        for name, (propagate, handlers) in server.items():
            logging.getLogger(name).propagate = propagate
            logging.getLogger(name).handlers[:] = handlers


def lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_json_logs_one_object_per_line_with_ids(client, json_logs):  # client first: building an app configures logging
    logger = logging.getLogger("svp.test")
    with log_context(job_id=7):
        logger.info("training %s", "proxy", extra={"epoch": 3, "path": Path("/data/x")})
    logger.warning("outside")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    # Warning level: a server started earlier in the same test session (log_level="warning") leaves
    # uvicorn's loggers at that level, and info lines would be dropped before any formatter saw them.
    logging.getLogger("uvicorn.error").warning("server line", extra={"color_message": "\x1b[36mserver line\x1b[0m"})
    client.get("/projects/5", headers={"X-Request-ID": "req-json-1"})

    entries = lines(json_logs)
    training = next(e for e in entries if e["message"] == "training proxy")
    assert training["level"] == "INFO" and training["logger"] == "svp.test"
    assert training["job_id"] == 7 and training["epoch"] == 3 and training["path"] == "/data/x"
    assert training["time"].endswith("+00:00")
    outside = next(e for e in entries if e["message"] == "outside")
    assert "job_id" not in outside and "request_id" not in outside
    failed = next(e for e in entries if e["message"] == "failed")
    assert failed["level"] == "ERROR" and "ValueError: boom" in failed["exc_info"]
    server_line = next(e for e in entries if e["logger"] == "uvicorn.error" and e["message"] == "server line")
    assert "color_message" not in server_line  # terminal colour codes have no place in a log collector
    # Switched off stays off: not rerouted to the root (pytest may hang capture handlers on it).
    assert logging.getLogger("uvicorn.access").propagate is False
    access = next(e for e in entries if e.get("logger") == "svp.access" and e.get("request_id") == "req-json-1")
    assert access["route"] == "/projects/{project_id}" and access["status"] == 401
    assert access["method"] == "GET" and access["duration_ms"] >= 0


def test_json_formatter_keeps_a_line_per_record_whatever_the_message():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "two\nlines \"quoted\" %s", ("\u00e9",), None)
    out = JsonFormatter().format(record)
    assert "\n" not in out
    assert json.loads(out)["message"] == "two\nlines \"quoted\" \u00e9"


def test_bind_job_id_tags_every_line_of_a_job(json_logs):
    from app.observability import bind_job_id

    @bind_job_id
    def job(settings, job_id, *, fail=False):
        logging.getLogger("worker.test").info("step of %s", job_id)
        if fail:
            raise RuntimeError("broken")
        return "done"

    assert job(None, 41) == "done"
    with pytest.raises(RuntimeError):
        job(None, 42, fail=True)
    logging.getLogger("worker.test").info("between jobs")
    entries = {e["message"]: e for e in lines(json_logs)}
    assert entries["step of 41"]["job_id"] == 41
    assert entries["step of 42"]["job_id"] == 42
    assert "job_id" not in entries["between jobs"]  # the binding ends with the job, even when it raised


def test_text_logs_show_the_ids_when_nothing_else_configured_logging(tmp_path):
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    root.handlers[:] = []  # a bare process, as a worker or uvicorn leaves the root logger
    buffer = io.StringIO()
    try:
        handler = configure_logging(Settings(data_dir=tmp_path, log_level="INFO", _env_file=None), stream=buffer)
        assert handler is not None
        logger = logging.getLogger("svp.text")
        with log_context(request_id="r-1", job_id=9):
            logger.info("inside")
        logger.info("outside")
        logger.debug("too detailed")  # below SVP_LOG_LEVEL
        # Building an app while a host configured logging leaves the host's handlers alone.
        root.handlers[:] = [logging.NullHandler()]
        assert configure_logging(Settings(data_dir=tmp_path, _env_file=None)) is None
        assert len(root.handlers) == 1
    finally:
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])
    inside, outside = buffer.getvalue().splitlines()
    assert inside.endswith("INFO svp.text [req=r-1 job=9] inside")
    assert outside.endswith("INFO svp.text [req=- job=-] outside")

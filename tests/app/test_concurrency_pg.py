"""Many annotators against one real server on PostgreSQL: leases never overlap, every query of the
round is handed out and labeled exactly once, and the round's completion queues exactly one next
round and one job."""

from __future__ import annotations

import socket
import threading
import time
from collections import defaultdict

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from app.config import Settings
from app.db import tables as t
from app.db.session import session_scope
from app.main import create_app
from app.services.keys import create_api_key
from tests.app._lifecycle import make_project, queries_of

pytestmark = pytest.mark.postgres

ANNOTATORS = 20
ROUND_SIZE = 300
LIMIT = 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(postgres_database, tmp_path):
    """One uvicorn server in a thread, no job dispatcher (jobs stay queued for inspection)."""
    settings = Settings(data_dir=tmp_path, database_url=postgres_database, broker_url=None, _env_file=None)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", postgres_database
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _key(url: str, role: str, name: str, project_id: int | None = None) -> dict[str, str]:
    with session_scope(url) as session:
        _, secret = create_api_key(session, role=role, name=name, project_id=project_id)
    return {"Authorization": f"Bearer {secret}"}


def test_annotators_racing_through_a_round(server):
    base_url, url = server
    pid, _, _ = make_project(url, pool=400, schedule={"initial": ROUND_SIZE, "rounds": [50], "budget": 380})
    admin = _key(url, "admin", "admin")
    assert httpx.post(f"{base_url}/projects/{pid}/start", headers=admin).status_code == 200
    round0 = {q.item_id for q in queries_of(url, pid, 0)}
    assert len(round0) == ROUND_SIZE

    barrier = threading.Barrier(ANNOTATORS)
    received: dict[str, list[list[int]]] = defaultdict(list)  # annotator -> batches, in order
    errors: list[str] = []
    statuses: list[str] = []

    def annotate(n: int) -> None:
        name = f"ann-{n}"
        headers = _key(url, "annotator", name, pid)
        try:
            with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
                barrier.wait(timeout=30)  # everyone asks for the first batch at the same moment
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    response = http.get(f"/projects/{pid}/queries/next", params={"limit": LIMIT})
                    assert response.status_code == 200, response.text
                    body = response.json()
                    items = [i["item_id"] for i in body["items"]]
                    if not items:
                        statuses.append(body["status"])
                        if body["status"] == "all_leased":
                            time.sleep(0.02)
                            continue
                        return  # the round is complete: "selecting"
                    assert len(items) <= LIMIT and body["round"] == 0
                    received[name].append(items)
                    # Half the annotators send one request per label, half one bulk request.
                    if n % 2:
                        for item_id in items:
                            r = http.post(f"/projects/{pid}/labels", json={"item_id": item_id, "label": "dog"})
                            assert r.status_code == 200, r.text
                    else:
                        r = http.post(f"/projects/{pid}/labels/bulk",
                                      json={"labels": [{"item_id": i, "label": "cat"} for i in items]})
                        assert r.status_code == 200, r.text
                errors.append(f"{name}: ran out of time")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"{name}: {exc!r}")

    threads = [threading.Thread(target=annotate, args=(n,)) for n in range(ANNOTATORS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:5]

    # The first, simultaneous calls got disjoint full batches.
    first = [batches[0] for batches in received.values()]
    assert len(first) == ANNOTATORS and all(len(b) == LIMIT for b in first)
    assert len({i for b in first for i in b}) == ANNOTATORS * LIMIT

    # No item was ever handed to two annotators (leases are 10 min, so any second holder would
    # have overlapped a live lease), and the union is the whole round.
    holders: dict[int, set[str]] = defaultdict(set)
    for name, batches in received.items():
        for batch in batches:
            for item_id in batch:
                holders[item_id].add(name)
    shared = {item: names for item, names in holders.items() if len(names) > 1}
    assert not shared, list(shared.items())[:5]
    assert set(holders) == round0
    assert set(statuses) <= {"all_leased", "selecting"} and "selecting" in statuses

    with session_scope(url) as session:
        queries = queries_of(url, pid, 0)
        assert all(q.labeled_at is not None and q.leased_to is None for q in queries)
        per_item = dict(
            session.execute(
                select(t.Annotation.item_id, func.count())
                .where(t.Annotation.project_id == pid)
                .group_by(t.Annotation.item_id)
            ).all()
        )
        assert set(per_item) == round0 and set(per_item.values()) == {1}
        # The annotator recorded on each item is the one it was leased to.
        by_item = {name: {i for b in batches for i in b} for name, batches in received.items()}
        for annotation in session.scalars(select(t.Annotation).where(t.Annotation.project_id == pid)):
            assert annotation.item_id in by_item[annotation.annotator] and annotation.round_index == 0
        rounds = session.execute(
            select(t.Round.index, t.Round.status).where(t.Round.project_id == pid).order_by(t.Round.index)
        ).all()
        assert [tuple(r) for r in rounds] == [(0, "completed"), (1, "selecting")]
        jobs = session.execute(select(t.Job.type, t.Job.params).where(t.Job.project_id == pid)).all()
        assert [tuple(j) for j in jobs] == [("select_round", {"round_index": 1})]
        project = session.get(t.Project, pid)
        assert (project.status, project.current_round) == ("active", 1)

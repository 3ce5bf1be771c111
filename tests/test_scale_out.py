"""Scale-out: three worker "hosts" share one Redis and one database.

Each worker is a separate ``celery worker`` process with its own ``--hostname``
and ``--concurrency``, as it would be on its own machine. A burst of messages
arrives over the API while they run; every message must be completed exactly
once, and every worker must have done part of the work. Which worker processed
how many is read from the workers' own logs: Celery logs each drain's return
value, the number of messages it handled.

A drain that keeps up with the flow takes it alone; other workers join when
batches come back full, each full batch asking for help. Small batches here
make the burst a backlog, as a larger flow would with the default size.

PostgreSQL is the database for workers on several hosts. SQLite stands for
``docker-compose up --scale worker=3`` on one host (one volume); its burst is
smaller because one SQLite file takes the writes of the API and of all three
workers in turn, which makes the test slow, not the workers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask

from app import create_app, tallies
from app.config import load_config
from app.database import read_connection
from app.extensions import db
from tests.conftest import (
    DatabaseFactory,
    database_scalar,
    keyed_client,
    stack_environment,
    start_worker,
)
from tests.support.polling import wait_for
from tests.support.processes import ManagedProcess, RedisServer

pytestmark = pytest.mark.slow

BURST = {"postgresql": 3000, "sqlite": 600}
CLAIM_SIZE = 10
HOSTS = {"host-a": 1, "host-b": 2, "host-c": 2}  # hostname: concurrency
DRAIN_SUCCEEDED = re.compile(r"Task n3hub\.drain_messages\[[0-9a-f-]+\] succeeded in \S+s: (\d+)")


@dataclass
class Cluster:
    """An app (the API, in this process) and workers on one database and one Redis."""

    app: Flask
    workers: dict[str, ManagedProcess]
    burst: int

    def handled_per_worker(self) -> dict[str, int]:
        """Messages each worker's drains reported as handled, summed from its log."""
        return {
            host: sum(int(n) for n in DRAIN_SUCCEEDED.findall(worker.log_path.read_text()))
            for host, worker in self.workers.items()
        }


@pytest.fixture(params=sorted(BURST))
def cluster(
    request: pytest.FixtureRequest, databases: DatabaseFactory, tmp_path: Path
) -> Iterator[Cluster]:
    database_url = databases.create(request.param)  # may skip: before any process starts
    # A Redis of their own: a worker of another test would take these drain tasks.
    redis = RedisServer(tmp_path / "redis").start()
    env = stack_environment(database_url, redis.url, N3HUB_CLAIM_SIZE=str(CLAIM_SIZE))
    app = create_app(load_config(env))
    with ThreadPoolExecutor(max_workers=len(HOSTS)) as pool:
        started = [
            pool.submit(start_worker, env, tmp_path, hostname=host, concurrency=HOSTS[host])
            for host in HOSTS
        ]
    try:
        workers = dict(zip(HOSTS, [future.result() for future in started], strict=True))
        yield Cluster(app, workers, BURST[request.param])
    finally:
        with ThreadPoolExecutor(max_workers=len(HOSTS)) as pool:
            stopping = [pool.submit(stop_started, future) for future in started]
        for future in stopping:
            future.result()
        redis.stop()
        with app.app_context():
            db.engine.dispose()


def stop_started(start: Future[ManagedProcess]) -> None:
    """Stop the worker that ``start`` started, if it did."""
    if start.exception() is None:
        start.result().stop()


def create_burst(app: Flask, count: int) -> list[int]:
    """POST ``count`` messages from 16 client threads; return their ids."""

    def post(index: int) -> int:
        response = keyed_client(app).post("/messages", json={"content": f"burst {index}"})
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(post, range(count)))


def test_three_workers_complete_a_burst_exactly_once_and_share_it(cluster: Cluster) -> None:
    count = cluster.burst
    client = keyed_client(cluster.app)
    assert len(set(create_burst(cluster.app, count))) == count

    def settled() -> dict[str, int] | None:
        stats = client.get("/messages/stats").get_json()
        return stats if stats["completed"] + stats["failed"] == count else None

    stats = wait_for(settled, timeout=60, interval=0.2, what="the burst to complete")
    assert stats == {
        "total": count,
        "pending": 0,
        "processing": 0,
        "completed": count,
        "failed": 0,
        "cancelled": 0,
    }
    assert database_scalar(cluster.app, "SELECT count(*) FROM messages WHERE attempts <> 1") == 0
    assert database_scalar(cluster.app, "SELECT count(*) FROM messages WHERE result IS NULL") == 0
    with cluster.app.app_context(), read_connection() as connection:
        assert tallies.read(connection)[tallies.PROCESSED_COMPLETED] == count

    # A drain logs its count after its last commit, so the logs may trail the database.
    def logged() -> dict[str, int] | None:
        counts = cluster.handled_per_worker()
        return counts if sum(counts.values()) >= count else None

    per_worker = wait_for(logged, timeout=15, what="every drain to be logged")
    assert sum(per_worker.values()) == count, per_worker
    assert all(handled > 0 for handled in per_worker.values()), per_worker

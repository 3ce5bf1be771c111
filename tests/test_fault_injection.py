"""Faults injected into real processes: killed workers, a flushed or stopped Redis, crashes.

And one pool process running many messages at once, hung processors included.

Each test runs on a database and a Redis of its own, so that it may kill, flush
and restart them without disturbing other tests.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.request import Request, urlopen

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app, tallies
from app.config import load_config
from app.database import read_connection
from app.extensions import db
from app.wakeups import (
    DRAIN_HELP_KEY_PREFIX,
    DRAIN_MARKER_KEY_PREFIX,
    DRAIN_MARKER_TTL_SECONDS,
)
from tests.conftest import (
    DatabaseFactory,
    app_key,
    bearer,
    keyed_client,
    stack_environment,
    start_web,
    start_worker,
)
from tests.support.polling import wait_for
from tests.support.processes import ManagedProcess, RedisServer

pytestmark = pytest.mark.slow

LEASE_SECONDS = "2"


@dataclass
class FaultStack:
    """A database, a Redis and the processes a test starts against them."""

    redis: RedisServer
    env: dict[str, str]
    app: Flask
    log_dir: Path
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def client(self) -> FlaskClient:
        return keyed_client(self.app)

    def start_worker(self, hostname: str = "w1", concurrency: int = 2) -> ManagedProcess:
        worker = start_worker(self.env, self.log_dir, hostname=hostname, concurrency=concurrency)
        self.processes.append(worker)
        return worker

    def start_web(self, workers: int) -> tuple[ManagedProcess, int]:
        web, port = start_web(self.env, self.log_dir, workers)
        self.processes.append(web)
        return web, port

    def restart_redis_empty(self) -> None:
        self.redis.stop()
        self.redis = RedisServer(self.log_dir / "redis2", port=self.redis.port).start()

    def stats(self) -> dict[str, int]:
        return self.client.get("/messages/stats").get_json()

    def processed_completed(self) -> int:
        with self.app.app_context(), read_connection() as connection:
            return tallies.read(connection).get(tallies.PROCESSED_COMPLETED, 0)

    def create(self, contents: list[str], threads: int = 8) -> list[int]:
        def post(content: str) -> int:
            response = self.client.post("/messages", json={"content": content})
            assert response.status_code == 201, response.get_json()
            return response.get_json()["id"]

        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(post, contents))

    def attempts(self, message_id: int) -> list[dict]:
        return self.client.get(f"/messages/{message_id}/attempts").get_json()["attempts"]

    def wait_all_completed(self, count: int, timeout: float = 90) -> dict[str, int]:
        def done() -> dict[str, int] | None:
            stats = self.stats()
            return stats if stats["completed"] + stats["failed"] == count else None

        return wait_for(done, timeout=timeout, interval=0.2, what=f"{count} messages to settle")


@pytest.fixture
def stack(
    request: pytest.FixtureRequest, databases: DatabaseFactory, tmp_path: Path
) -> Iterator[FaultStack]:
    database_url = databases.create(request.param)  # may skip: before any process starts
    redis = RedisServer(tmp_path / "redis").start()
    fault_stack: FaultStack | None = None
    try:
        env = stack_environment(database_url, redis.url, N3HUB_LEASE_SECONDS=LEASE_SECONDS)
        fault_stack = FaultStack(redis, env, create_app(load_config(env)), tmp_path)
        yield fault_stack
    finally:
        if fault_stack is not None:
            for process in fault_stack.processes:
                process.stop()
            fault_stack.redis.stop()
            with fault_stack.app.app_context():
                db.engine.dispose()
        redis.stop()


both_databases = pytest.mark.parametrize("stack", ["sqlite", "postgresql"], indirect=True)
# The faults whose outcome rests on the database's locking (claims, recovery, released
# claims, concurrent writers) run on MySQL too; the others test the worker, not the database.
every_database = pytest.mark.parametrize("stack", ["sqlite", "postgresql", "mysql"], indirect=True)
sqlite_only = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)


@every_database
def test_sigkill_of_every_worker_loses_nothing_and_completes_each_once(
    stack: FaultStack,
) -> None:
    count = 3000
    # I/O-bound messages, hundreds in flight in each pool process when the kill comes: each
    # waits 1 s, so the 1,000 slots of the worker need three rounds for all of them.
    stack.create([f"sleep:1 message {i}" for i in range(count)])
    first = stack.start_worker()
    # Killed while it holds claims: between two batches (or on a loaded machine, after
    # the sweep took back a stalled claim) it may briefly hold none.
    wait_for(
        lambda: (stats := stack.stats())["completed"] >= 300 and stats["processing"] > 0,
        timeout=60,
        interval=0.01,
        what="progress, with claims held",
    )
    first.kill()
    assert stack.stats()["processing"] > 0, "the kill should strand claimed messages"
    stack.start_worker(hostname="w2")
    stats = stack.wait_all_completed(count)
    assert stats == {
        "total": count,
        "pending": 0,
        "processing": 0,
        "completed": count,
        "failed": 0,
        "cancelled": 0,
    }
    assert stack.processed_completed() == count
    metrics = stack.client.get("/metrics").get_data(as_text=True)
    recoveries = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("n3hub_message_recoveries_total ")
    )
    assert recoveries > 0


@every_database
def test_redis_flushed_and_restarted_empty_mid_run(stack: FaultStack) -> None:
    count = 2000
    stack.start_worker()
    stack.create([f"sleep:0.002 flush {i}" for i in range(count)])
    wait_for(lambda: stack.stats()["completed"] >= 200, timeout=60, what="progress")
    stack.redis.client().flushall()
    wait_for(lambda: stack.stats()["completed"] >= 1000, timeout=60, what="progress after flush")
    stack.restart_redis_empty()
    stats = stack.wait_all_completed(count)
    assert stats["completed"] == count
    assert stack.processed_completed() == count


@every_database
def test_messages_created_while_broker_is_down_complete_after_it_returns(
    stack: FaultStack,
) -> None:
    stack.start_worker()
    stack.redis.stop()
    ids = stack.create([f"created during outage {i}" for i in range(50)], threads=4)
    assert len(set(ids)) == 50
    assert stack.stats()["pending"] == 50
    stack.redis = RedisServer(stack.log_dir / "redis-back", port=stack.redis.port).start()
    stats = stack.wait_all_completed(50)
    assert stats["completed"] == 50


@every_database
def test_poison_message_ends_failed_and_spares_its_batch(stack: FaultStack) -> None:
    stack.start_worker()
    ids = stack.create(["crash poison" if i == 3 else f"healthy {i}" for i in range(20)], 1)
    stack.wait_all_completed(20)
    bodies = [stack.client.get(f"/messages/{i}").get_json() for i in ids]
    poison = bodies.pop(3)
    assert poison["status"] == "failed"
    assert poison["attempts"] == int(stack.env["N3HUB_MAX_ATTEMPTS"])
    assert "lease expired" in poison["last_error"]
    assert [body for body in bodies if body["status"] != "completed"] == []
    lost = stack.attempts(poison["id"])
    assert [a["outcome"] for a in lost] == ["recovered"] * poison["attempts"]
    assert all(a["worker"] for a in lost)  # the pool process that died, not the sweeper


@both_databases
def test_sigterm_lets_a_worker_finish_its_in_flight_message(stack: FaultStack) -> None:
    worker = stack.start_worker()
    [message_id] = stack.create(["sleep:1.5 slow"])
    wait_for(
        lambda: stack.client.get(f"/messages/{message_id}").get_json()["status"] == "processing",
        timeout=30,
        what="the message to be claimed",
    )
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(30) == 0
    body = stack.client.get(f"/messages/{message_id}").get_json()
    assert body["status"] == "completed"
    assert body["attempts"] == 1


@both_databases
def test_sigterm_lets_every_message_in_flight_finish(stack: FaultStack) -> None:
    worker = stack.start_worker(concurrency=1)
    ids = stack.create([f"sleep:1.5 slow {i}" for i in range(40)])
    wait_for(lambda: stack.stats()["processing"] == 40, timeout=30, what="all 40 in flight")
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(30) == 0
    bodies = [stack.client.get(f"/messages/{i}").get_json() for i in ids]
    assert {(body["status"], body["attempts"]) for body in bodies} == {("completed", 1)}


@every_database
def test_sigterm_gives_back_what_outlasts_the_grace(stack: FaultStack) -> None:
    stack.env["N3HUB_SHUTDOWN_GRACE"] = "0.5"
    worker = stack.start_worker(concurrency=1)
    ids = stack.create([f"sleep:60 very slow {i}" for i in range(5)])
    wait_for(lambda: stack.stats()["processing"] == 5, timeout=30, what="all 5 in flight")
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(30) == 0
    for message_id in ids:
        body = stack.client.get(f"/messages/{message_id}").get_json()
        assert (body["status"], body["attempts"]) == ("pending", 1)
        assert "worker stopped during attempt" in body["last_error"]
        [released] = stack.attempts(message_id)
        assert (released["outcome"], released["error"]) == ("released", body["last_error"])


@sqlite_only
def test_a_processor_that_never_returns_cannot_wedge_the_worker(stack: FaultStack) -> None:
    stack.env.update(
        N3HUB_PROCESS_CONCURRENCY="2", N3HUB_PROCESS_TIMEOUT="0.5", N3HUB_MAX_ATTEMPTS="1"
    )
    worker = stack.start_worker(concurrency=1)
    # Three hung runs in a process of two slots: the third one abandoned makes it restart.
    hung = stack.create([f"sleep:3600 hung {i}" for i in range(3)], threads=1)
    stack.wait_all_completed(3)
    for message_id in hung:
        body = stack.client.get(f"/messages/{message_id}").get_json()
        assert body["status"] == "failed"
        assert "processing took longer than 0.5s" in body["last_error"]
    wait_for(lambda: "restarts" in worker.log_tail(500), timeout=30, what="the restart")
    healthy = stack.create([f"healthy {i}" for i in range(20)])
    stack.wait_all_completed(23)
    assert all(
        stack.client.get(f"/messages/{i}").get_json()["status"] == "completed" for i in healthy
    )
    assert worker.alive()


def http_post(port: int, key: str, content: str) -> int:
    request = Request(
        f"http://127.0.0.1:{port}/messages",
        data=f'{{"content": "{content}"}}'.encode(),
        headers={"Content-Type": "application/json", **bearer(key)},
    )
    with urlopen(request, timeout=30) as response:
        return response.status


@every_database
def test_concurrent_web_and_worker_writers_never_answer_5xx(stack: FaultStack) -> None:
    web, port = stack.start_web(workers=4)
    stack.start_worker("w1")
    stack.start_worker("w2")
    count = 1000
    with ThreadPoolExecutor(max_workers=24) as pool:
        key = app_key(stack.app)
        statuses = list(pool.map(lambda i: http_post(port, key, f"writer {i}"), range(count)))
    assert statuses == [201] * count
    stats = stack.wait_all_completed(count)
    assert stats["completed"] == count
    assert "database is locked" not in web.log_tail(10_000)


@both_databases
def test_sigterm_lets_the_web_finish_an_in_flight_request(stack: FaultStack) -> None:
    web, port = stack.start_web(workers=1)
    body = b'{"content": "sent across a shutdown"}'
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {app_key(stack.app)}\r\n".encode()
            + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n".encode()
            + b"Connection: close\r\n\r\n"
        )
        # The interim answer proves a worker is handling the request before the signal.
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        web.signal_group(signal.SIGTERM)
        sock.sendall(body)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 201"), response[:200]
    assert stack.stats()["total"] == 1


# Many messages in flight in one pool process: plain and async processors, time limits.
MEETING = 40


def statuses_and_attempts(stack: FaultStack, ids: list[int]) -> set[tuple[str, int]]:
    bodies = [stack.client.get(f"/messages/{i}").get_json() for i in ids]
    return {(body["status"], body["attempts"]) for body in bodies}


@both_databases
@pytest.mark.parametrize(
    "processor", ["tests.support.processors:scripted", "tests.support.processors:scripted_async"]
)
def test_one_process_runs_many_messages_at_once(stack: FaultStack, processor: str) -> None:
    stack.env["N3HUB_PROCESSOR"] = processor
    stack.start_worker(concurrency=1)
    # Each waits until all of them run at the same time, and fails if they never do.
    ids = stack.create([f"meet:{MEETING} message {i}" for i in range(MEETING)])
    stack.wait_all_completed(MEETING)
    assert statuses_and_attempts(stack, ids) == {("completed", 1)}


@sqlite_only
def test_a_slow_message_holds_back_none_of_the_others(stack: FaultStack) -> None:
    stack.start_worker(concurrency=1)
    [slow] = stack.create(["sleep:60 slow"])
    wait_for(lambda: stack.stats()["processing"] == 1, timeout=30, what="the slow one's claim")
    fast = stack.create([f"fast {i}" for i in range(50)])
    wait_for(lambda: stack.stats()["completed"] == 50, timeout=60, what="the fast ones")
    assert statuses_and_attempts(stack, fast) == {("completed", 1)}
    assert stack.client.get(f"/messages/{slow}").get_json()["status"] == "processing"


@both_databases
def test_an_overrun_is_a_failed_attempt_retried_with_backoff(stack: FaultStack) -> None:
    stack.env.update(N3HUB_PROCESS_TIMEOUT="1", N3HUB_MAX_ATTEMPTS="2")
    stack.start_worker(concurrency=1)
    [overrun] = stack.create(["sleep:3600 never ends"])
    others = stack.create([f"fine {i}" for i in range(20)])
    stack.wait_all_completed(21)
    body = stack.client.get(f"/messages/{overrun}").get_json()
    assert (body["status"], body["attempts"]) == ("failed", 2)
    assert body["last_error"] == "TimeoutError: processing took longer than 1s"
    assert statuses_and_attempts(stack, others) == {("completed", 1)}
    timed_out = stack.attempts(overrun)
    assert [(a["number"], a["outcome"]) for a in timed_out] == [(1, "timed_out"), (2, "timed_out")]
    assert all(a["duration_seconds"] >= 1 for a in timed_out)


@sqlite_only
def test_a_drain_marker_without_expiry_stops_nothing(stack: FaultStack) -> None:
    queue = stack.app.config["TASK_QUEUE"]
    redis = stack.redis.client()
    # Left by anything else: no expiry, and a help key with a day's.
    redis.set(DRAIN_MARKER_KEY_PREFIX + queue, "stuck")
    redis.set(DRAIN_HELP_KEY_PREFIX + queue, "stuck", ex=86400)
    stack.start_worker()
    ids = stack.create([f"behind a stuck marker {i}" for i in range(10)])
    assert stack.wait_all_completed(10)["completed"] == 10
    assert {stack.client.get(f"/messages/{i}").get_json()["status"] for i in ids} == {"completed"}
    assert redis.ttl(DRAIN_HELP_KEY_PREFIX + queue) <= DRAIN_MARKER_TTL_SECONDS

"""Drain requests against a real Redis: one queued drain at a time, and none missed.

Each test uses a task queue of its own that no worker consumes, so the drain
tasks it queues stay in the broker's list where the test can count them. The
drains run here, in the test's process, on a real database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from flask import Flask
from redis import Redis
from sqlalchemy.exc import OperationalError

from app import create_app, lifecycle
from app.config import load_config
from app.database import write_transaction
from app.extensions import db
from app.wakeups import DRAIN_HELP_KEY_PREFIX, DRAIN_MARKER_KEY_PREFIX, DrainRequests
from app.worker import drain
from tests.conftest import DatabaseFactory, stack_environment
from tests.support.polling import wait_for
from tests.support.processes import RedisServer


@pytest.fixture
def queue() -> str:
    return f"test-wake-{uuid.uuid4().hex[:12]}"


CLAIM_SIZE = 3


@pytest.fixture
def wake_app(databases: DatabaseFactory, redis_server: RedisServer, queue: str) -> Iterator[Flask]:
    env = stack_environment(
        databases.create("sqlite"),
        redis_server.url,
        N3HUB_TASK_QUEUE=queue,
        N3HUB_CLAIM_SIZE=str(CLAIM_SIZE),
        N3HUB_CLAIM_GATHER_SECONDS="0",
    )
    app = create_app(load_config(env))
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def broker(redis_server: RedisServer, queue: str) -> Iterator[Redis]:
    client = Redis.from_url(f"{redis_server.url}/0")
    yield client
    client.delete(queue, DRAIN_MARKER_KEY_PREFIX + queue, DRAIN_HELP_KEY_PREFIX + queue)
    client.close()


def test_no_drain_is_queued_while_one_is_queued_or_running(
    wake_app: Flask, broker: Redis, queue: str
) -> None:
    drains: DrainRequests = wake_app.extensions["drain_requests"]
    assert drains.request() and drains.request() and drains.request()
    assert broker.llen(queue) == 1
    drains.started()  # running now: it will claim whatever the requests were for
    assert drains.request()
    assert broker.llen(queue) == 1
    drains.release()
    assert drains.request()
    assert broker.llen(queue) == 2


def test_help_is_queued_despite_the_marker_but_once_until_a_drain_starts(
    wake_app: Flask, broker: Redis, queue: str
) -> None:
    drains: DrainRequests = wake_app.extensions["drain_requests"]
    drains.started()
    assert all([drains.request_help() for _ in range(3)]) and broker.llen(queue) == 1
    drains.started()  # the helper took it: the next full batch may ask again
    assert drains.request_help() and broker.llen(queue) == 2


def test_a_drain_takes_the_messages_committed_while_it_runs_then_releases_the_marker(
    wake_app: Flask, broker: Redis, queue: str
) -> None:
    drains: DrainRequests = wake_app.extensions["drain_requests"]
    with wake_app.app_context():
        lifecycle.create_messages(["first"])
        drains.started()
        # Committed while the drain holds the marker: the web would queue nothing for it.
        lifecycle.create_messages(["second"])
        assert drains.request() and broker.llen(queue) == 0
        assert drain.drain(drains) == 2
        assert not lifecycle.pending_work_due()
    assert not broker.exists(DRAIN_MARKER_KEY_PREFIX + queue)
    assert drains.request() and broker.llen(queue) == 1


def test_a_full_batch_asks_for_one_helper(wake_app: Flask, broker: Redis, queue: str) -> None:
    drains: DrainRequests = wake_app.extensions["drain_requests"]
    with wake_app.app_context():
        lifecycle.create_messages([f"message {number}" for number in range(3 * CLAIM_SIZE)])
        drains.started()
        assert drain.drain(drains) == 3 * CLAIM_SIZE
    # Three full batches, one help task: the second and third asked while it still waited.
    assert broker.llen(queue) == 1


@pytest.mark.parametrize("burst", [1, 500])
def test_every_wake_after_the_marker_is_released_queues_another(
    wake_app: Flask, broker: Redis, queue: str, burst: int
) -> None:
    """The waker thread folds a burst into one request, and never drops the last one."""
    drains: DrainRequests = wake_app.extensions["drain_requests"]
    for _ in range(burst):
        drains.request_soon()
    wait_for(lambda: broker.llen(queue) == 1, timeout=10, what="the burst's drain")
    for released in range(1, 4):
        drains.release()  # a drain found nothing more: later commits need a new one
        for _ in range(burst):
            drains.request_soon()
        wait_for(
            lambda expected=released + 1: broker.llen(queue) == expected,
            timeout=10,
            what=f"drain {released + 1}",
        )


def test_a_drain_that_fails_releases_the_marker(wake_app: Flask, broker: Redis, queue: str) -> None:
    drains: DrainRequests = wake_app.extensions["drain_requests"]
    with wake_app.app_context():
        with write_transaction() as connection:
            connection.exec_driver_sql("DROP TABLE messages")  # every claim fails from now on
        drains.started()
        with pytest.raises(OperationalError):
            drain.drain(drains)
    assert not broker.exists(DRAIN_MARKER_KEY_PREFIX + queue)

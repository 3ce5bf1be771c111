"""Drain requests against a real Redis: one queued drain at a time, and none missed.

Each test uses a task queue of its own that no worker consumes, so the drain
tasks it queues stay in the broker's list where the test can count them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from flask import Flask
from redis import Redis

from app import create_app
from app.config import load_config
from app.dispatch import DRAIN_QUEUED_KEY_PREFIX, DrainRequests
from app.extensions import db
from tests.conftest import DatabaseFactory, stack_environment
from tests.support.polling import wait_for
from tests.support.processes import RedisServer


@pytest.fixture
def queue() -> str:
    return f"test-wake-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def wake_app(databases: DatabaseFactory, redis_server: RedisServer, queue: str) -> Iterator[Flask]:
    env = stack_environment(databases.create("sqlite"), redis_server.url, N3HUB_TASK_QUEUE=queue)
    app = create_app(load_config(env))
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def broker(redis_server: RedisServer, queue: str) -> Iterator[Redis]:
    client = Redis.from_url(f"{redis_server.url}/0")
    yield client
    client.delete(queue, DRAIN_QUEUED_KEY_PREFIX + queue)
    client.close()


def test_a_drain_is_queued_once_until_it_starts(wake_app: Flask, broker: Redis, queue: str) -> None:
    drains: DrainRequests = wake_app.extensions["drain_requests"]
    assert drains.request() and drains.request() and drains.request()
    assert broker.llen(queue) == 1
    drains.started()
    assert drains.request()
    assert broker.llen(queue) == 2


@pytest.mark.parametrize("burst", [1, 500])
def test_every_wake_after_a_drain_started_queues_another(
    wake_app: Flask, broker: Redis, queue: str, burst: int
) -> None:
    """The waker thread folds a burst into one request, and never drops the last one."""
    drains: DrainRequests = wake_app.extensions["drain_requests"]
    for _ in range(burst):
        drains.request_soon()
    wait_for(lambda: broker.llen(queue) == 1, timeout=10, what="the burst's drain")
    for started in range(1, 4):
        drains.started()  # a worker took the drain: later commits need a new one
        for _ in range(burst):
            drains.request_soon()
        wait_for(
            lambda expected=started + 1: broker.llen(queue) == expected,
            timeout=10,
            what=f"drain {started + 1}",
        )

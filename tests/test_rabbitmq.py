"""RabbitMQ as the broker instead of Redis, end to end with a real worker.

With an AMQP broker there is no Redis for the drain marker, so the web
queues one drain task per message. Tasks store no results, so the result
backend is ``disabled`` and nothing here talks to Redis at all. The tests skip
when no RabbitMQ answers, unless ``N3HUB_REQUIRE_RABBITMQ=1`` (CI), which makes
that a failure.

Each test uses a task queue of its own (``N3HUB_TASK_QUEUE``), deleted at the
end, so a RabbitMQ shared with anything else is left as it was.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from kombu.utils.url import parse_url

from app import create_app
from app.config import load_config
from app.extensions import db
from tests.conftest import keyed_client, stack_environment, start_worker
from tests.support.polling import wait_for
from tests.support.required import require

AMQP_URL = os.environ.get("N3HUB_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
# Both Celery URLs are replaced below; a Redis URL nobody listens on proves none is used.
NO_REDIS = "redis://127.0.0.1:1"


def rabbitmq_answers(url: str) -> bool:
    """Whether something accepts TCP connections at the AMQP URL's host and port."""
    parts = parse_url(url)
    try:
        with socket.create_connection((parts["hostname"], parts["port"] or 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def rabbit_app(fresh_database_url: str, tmp_path: Path) -> Iterator[Flask]:
    """An app and a running worker on RabbitMQ, on a database of the test's own."""
    require(
        rabbitmq_answers(AMQP_URL),
        "N3HUB_REQUIRE_RABBITMQ",
        f"no RabbitMQ answers at {AMQP_URL}: start one (Debian's rabbitmq-server) to run this test",
    )
    queue = f"n3hub-test-{uuid.uuid4().hex[:8]}"
    env = stack_environment(
        fresh_database_url,
        NO_REDIS,
        CELERY_BROKER_URL=AMQP_URL,
        CELERY_RESULT_BACKEND="disabled",
        N3HUB_TASK_QUEUE=queue,
    )
    app = create_app(load_config(env))
    worker = start_worker(env, tmp_path, hostname="rabbit")
    yield app
    worker.stop()
    with app.extensions["celery"].connection_for_write() as connection:
        connection.default_channel.queue_delete(queue)
    with app.app_context():
        db.engine.dispose()


def test_messages_complete_and_retry_over_rabbitmq(rabbit_app: Flask) -> None:
    client = keyed_client(rabbit_app)
    assert rabbit_app.extensions["drain_requests"].queue_length() is None  # no Redis marker
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    contents = [f"over amqp {i}" for i in range(30)] + [
        "fail-transient:2 flaky",
        "fail-permanent broken",
    ]
    ids = []
    for content in contents:
        response = client.post("/messages", json={"content": content})
        assert response.status_code == 201, response.get_json()
        ids.append(response.get_json()["id"])

    def settled() -> list[dict] | None:
        bodies = [client.get(f"/messages/{message_id}").get_json() for message_id in ids]
        done = all(body["status"] in ("completed", "failed") for body in bodies)
        return bodies if done else None

    *plain, flaky, broken = wait_for(settled, timeout=60, interval=0.2, what="all to settle")
    assert {(body["status"], body["attempts"]) for body in plain} == {("completed", 1)}
    assert (flaky["status"], flaky["attempts"]) == ("completed", 3)
    assert "planned transient failure on attempt 2" in flaky["last_error"]
    assert (broken["status"], broken["attempts"]) == ("failed", 1)
    stats = client.get("/messages/stats").get_json()
    assert stats == {
        "total": 32,
        "pending": 0,
        "processing": 0,
        "completed": 31,
        "failed": 1,
        "cancelled": 0,
    }

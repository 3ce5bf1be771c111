"""``make run`` as a newcomer runs it, with each broker the README names.

A reachable Redis, no Redis at all (``make run`` starts the bundled one) and
RabbitMQ. Each run serves on a free port (``PORT``), with a database, metrics
directory and task queue of its own, and must complete a posted message over
HTTP with the development key it prints; stopping ``make`` must stop every
process it started.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection

from app.auth.cli import DEV_KEY_FILE
from app.config import INSTANCE_DIR
from tests.support.polling import wait_for
from tests.support.processes import ManagedProcess, RedisServer, free_port, http_json
from tests.support.required import require
from tests.test_rabbitmq import AMQP_URL, rabbitmq_answers

pytestmark = pytest.mark.slow


def listening(port: int) -> bool:
    """Whether anything accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def make_run_environment(tmp_path: Path, broker_url: str, result_backend: str | None) -> dict:
    """The user's environment with only the broker, a port and private state chosen."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("N3HUB_")}
    for key in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "CELERY_RESULT_BACKEND", "DATABASE_URL"):
        env.pop(key, None)
    env.update(
        CELERY_BROKER_URL=broker_url,
        PORT=str(free_port()),
        HOST="127.0.0.1",
        WEB_CONCURRENCY="1",
        DATABASE_URL=f"sqlite:///{tmp_path / 'messages.db'}",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        # A queue of its own: a broker shared with other runs must not lend them our tasks.
        N3HUB_TASK_QUEUE=f"n3hub-make-run-{uuid.uuid4().hex[:8]}",
    )
    if result_backend is not None:
        env["CELERY_RESULT_BACKEND"] = result_backend
    return env


def development_key(log: str) -> str:
    """The API key ``make run`` printed (the line before the one saying where it is saved)."""
    lines = log.splitlines()
    saved = next(i for i, line in enumerate(lines) if line.startswith("Development API key"))
    return lines[saved - 1].strip()


@pytest.fixture(autouse=True)
def dev_key_file_kept() -> Iterator[None]:
    """Put back the developer's instance/dev-api-key, which make run on a new database rewrites."""
    path = INSTANCE_DIR / DEV_KEY_FILE
    kept = path.read_bytes() if path.exists() else None
    yield
    if kept is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(kept)


def run_stack_and_complete_a_message(env: dict, log_path: Path) -> None:
    """Start ``make run``, post a message, wait for it to complete, stop, check all stopped."""
    make = shutil.which("make")
    assert make is not None
    stack = ManagedProcess([make, "--no-print-directory", "run"], env, log_path).start()
    base = f"http://127.0.0.1:{env['PORT']}"
    try:
        stack.wait_until_answering(f"{base}/readyz", "make run to serve", timeout=120)
        key = development_key(stack.log_path.read_text())
        status, created = http_json(f"{base}/messages", {"content": "via make run"}, key)
        assert status == 201, created

        def completed() -> dict | None:
            body = http_json(f"{base}/messages/{created['id']}", key=key)[1]
            return body if body["status"] == "completed" else None

        body = wait_for(completed, timeout=60, interval=0.2, what="the message to complete")
        assert body["result"]["words"] == 3
    except BaseException:
        print(stack.log_tail(80))
        raise
    finally:
        stack.stop(timeout=30)
    assert not listening(int(env["PORT"])), "the web server outlived make run"


def test_make_run_on_a_reachable_redis(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        env = make_run_environment(tmp_path, f"{redis.url}/0", f"{redis.url}/1")
        run_stack_and_complete_a_message(env, tmp_path / "make-run.log")
        assert "redis.1 started" not in (tmp_path / "make-run.log").read_text()
    finally:
        redis.stop()


def test_make_run_without_redis_starts_the_bundled_one(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}"
    env = make_run_environment(tmp_path, f"{url}/0", f"{url}/1")
    run_stack_and_complete_a_message(env, tmp_path / "make-run.log")
    assert "redis.1 started" in (tmp_path / "make-run.log").read_text()
    assert not listening(port), "the bundled Redis outlived make run"


@pytest.fixture
def amqp_queue_cleanup() -> Iterator[list[str]]:
    """Queues to delete from RabbitMQ at the end."""
    queues: list[str] = []
    yield queues
    with Connection(AMQP_URL) as connection:
        for queue in queues:
            connection.default_channel.queue_delete(queue)


def test_make_run_on_rabbitmq(tmp_path: Path, amqp_queue_cleanup: list[str]) -> None:
    require(
        rabbitmq_answers(AMQP_URL),
        "N3HUB_REQUIRE_RABBITMQ",
        f"no RabbitMQ answers at {AMQP_URL}: start one (Debian's rabbitmq-server) to run this test",
    )
    env = make_run_environment(tmp_path, AMQP_URL, None)
    amqp_queue_cleanup.append(env["N3HUB_TASK_QUEUE"])
    run_stack_and_complete_a_message(env, tmp_path / "make-run.log")
    assert "redis.1 started" not in (tmp_path / "make-run.log").read_text()

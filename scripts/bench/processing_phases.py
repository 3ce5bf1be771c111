"""The processing measurements: processors that wait 50 ms, beside a plain Celery worker.

Each runs a worker of its own with the default command (two pool processes)
and prints, beside its figure, the concurrency limit: the slots that can wait
at once divided by 0.05 s.

- ``sync`` and ``async``: a backlog of messages drained through a processor that
  blocks (``time.sleep``) or awaits (``asyncio.sleep``) 50 ms.
- ``celery``: the same number of plain Celery tasks, each waiting 50 ms, on
  ``-P gevent -c 100``: the baseline a user would otherwise write.
- ``mixed``: 2,000 messages posted at once, 1 % taking 5 s: how long the fast
  ones take from created to completed.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from celery import Celery
from flask import Flask
from redis import Redis
from sqlalchemy import func, select

from app.database import read_connection
from app.models import Message, MessageStatus
from scripts.bench import celery_baseline
from scripts.bench.client import Client
from scripts.bench.phases import Say, count_messages
from scripts.bench.processors import SLOW, WAIT_SECONDS
from scripts.bench.report import distribution_ms
from scripts.bench.seed import StatusMix, insert_messages
from scripts.bench.stack import WORKER_CONCURRENCY, Stack, Web
from tests.support.polling import wait_for
from tests.support.processes import ManagedProcess

SYNC_PROCESSOR = "scripts.bench.processors:wait"
ASYNC_PROCESSOR = "scripts.bench.processors:wait_async"
BASELINE_CONCURRENCY = 100
BASELINE_REDIS_DB = 2
MIXED_MESSAGES = 2000
SLOW_EVERY = 100  # 1 %
FINISH_TIMEOUT_SECONDS = 300


def _last_id(app: Flask) -> int:
    with app.app_context(), read_connection() as connection:
        return int(connection.execute(select(func.coalesce(func.max(Message.id), 0))).scalar())


def _completed_between(app: Flask, first_id: int, last_id: int) -> list[Any]:
    with app.app_context(), read_connection() as connection:
        return connection.execute(
            select(Message.content, Message.created_at, Message.completed_at).where(
                Message.id.between(first_id, last_id), Message.status == MessageStatus.COMPLETED
            )
        ).all()


def _wait_completed(app: Flask, first_id: int, last_id: int, worker: ManagedProcess) -> None:
    def done() -> bool:
        if not worker.alive():
            raise RuntimeError(f"the worker exited:\n{worker.log_tail()}")
        in_range = Message.id.between(first_id, last_id)
        return count_messages(app, in_range, Message.status == MessageStatus.COMPLETED) == (
            last_id - first_id + 1
        )

    wait_for(done, timeout=FINISH_TIMEOUT_SECONDS, interval=0.1, what="every message completed")


def _limit(slots: int) -> float:
    return slots / WAIT_SECONDS


def measure_waiting_processor(
    stack: Stack, app: Flask, processor: str, count: int, say: Say
) -> dict[str, Any]:
    """Messages/s through ``processor`` from a backlog of ``count``, first to last completion."""
    first_id = _last_id(app) + 1
    insert_messages(app, count, StatusMix(), spacing_seconds=0.0001)
    last_id = _last_id(app)
    slots = WORKER_CONCURRENCY * app.config["PROCESS_CONCURRENCY"]
    say(f"processors: {count:,} messages through {processor} ({slots} slots)")
    started = time.monotonic()
    worker = stack.start_worker(N3HUB_PROCESSOR=processor)
    try:
        _wait_completed(app, first_id, last_id, worker)
    finally:
        stack.stop_worker()
    rows = _completed_between(app, first_id, last_id)
    completions = sorted(row.completed_at for row in rows)
    window = (completions[-1] - completions[0]).total_seconds()
    result = {
        "messages": count,
        "slots": slots,
        "limit": _limit(slots),
        "wall_seconds": time.monotonic() - started,
        "rate": (len(completions) - 1) / window if window else None,
    }
    say(f"processors: {result['rate'] or 0:,.0f} msg/s (limit {result['limit']:,.0f}/s)")
    return result


def measure_celery_baseline(stack: Stack, log_dir: Path, count: int, say: Say) -> dict[str, Any]:
    """Tasks/s of a plain Celery worker on ``-P gevent -c 100``, each task waiting 50 ms."""
    assert stack.redis is not None
    broker = f"{stack.redis.url}/{BASELINE_REDIS_DB}"
    counter = Redis.from_url(broker)
    counter.delete(celery_baseline.DONE_KEY)
    publisher = Celery("baseline-publisher")
    say(f"celery baseline: publishing {count:,} tasks")
    # On an explicit connection: Celery prefers CELERY_BROKER_URL from the environment.
    with publisher.connection_for_write(broker) as connection:
        for _ in range(count):
            publisher.send_task(
                celery_baseline.TASK, queue=celery_baseline.QUEUE, connection=connection
            )
    argv = [
        str(Path(sys.executable).parent / "celery"),
        "-A", "scripts.bench.celery_baseline", "worker",
        "-P", "gevent", "-c", str(BASELINE_CONCURRENCY),
        "--loglevel=warning", "--without-gossip", "--without-mingle",
        "--hostname=baseline@%h",
    ]  # fmt: skip
    env = {**stack.env, "BASELINE_BROKER_URL": broker, "CELERY_BROKER_URL": broker}
    worker = ManagedProcess(argv, env, log_dir / "baseline.log")
    say(f"celery baseline: a plain worker on -P gevent -c {BASELINE_CONCURRENCY}")
    worker.start()
    try:
        first_seen = wait_for(
            lambda: _first_completion(counter), timeout=60, interval=0.005, what="a first task"
        )
        done_at_start, started = first_seen
        wait_for(
            lambda: int(counter.get(celery_baseline.DONE_KEY) or 0) >= count,
            timeout=FINISH_TIMEOUT_SECONDS,
            interval=0.01,
            what="every baseline task",
        )
        seconds = time.monotonic() - started
    finally:
        worker.stop()
    result = {
        "messages": count,
        "slots": BASELINE_CONCURRENCY,
        "limit": _limit(BASELINE_CONCURRENCY),
        "rate": (count - done_at_start) / seconds,
    }
    say(f"celery baseline: {result['rate']:,.0f} tasks/s (limit {result['limit']:,.0f}/s)")
    return result


def _first_completion(counter: Redis) -> tuple[int, float] | None:
    done = int(counter.get(celery_baseline.DONE_KEY) or 0)
    return (done, time.monotonic()) if done else None


def measure_mixed(stack: Stack, web: Web, app: Flask, say: Say) -> dict[str, Any]:
    """Created -> completed of fast messages posted at once beside 1 % that take 5 s."""
    limit = app.config["MAX_BATCH_MESSAGES"]
    contents = [
        f"{SLOW} message {n}" if n % SLOW_EVERY == SLOW_EVERY - 1 else f"fast message {n}"
        for n in range(MIXED_MESSAGES)
    ]
    batches = [contents[start : start + limit] for start in range(0, len(contents), limit)]
    slots = WORKER_CONCURRENCY * app.config["PROCESS_CONCURRENCY"]
    worker = stack.start_worker(N3HUB_PROCESSOR=SYNC_PROCESSOR)
    wait_for(lambda: "ready." in worker.log_tail(40), timeout=60, what="the worker to be ready")
    first_id = _last_id(app) + 1
    say(f"mixed: posting {MIXED_MESSAGES:,} messages at once, 1 % taking 5 s")

    def post(batch: list[str]) -> int:
        reply = Client(web.port).post(
            "/messages/batch", {"messages": [{"content": content} for content in batch]}
        )
        if reply.status != 201:
            raise RuntimeError(f"POST /messages/batch answered {reply.status}")
        return len(batch)

    try:
        with ThreadPoolExecutor(max_workers=len(batches)) as pool:
            sum(pool.map(post, batches))
        last_id = _last_id(app)
        _wait_completed(app, first_id, last_id, worker)
    finally:
        stack.stop_worker()
    fast = [
        (row.completed_at - row.created_at).total_seconds() * 1000
        for row in _completed_between(app, first_id, last_id)
        if not row.content.startswith(SLOW)
    ]
    result = {"messages": MIXED_MESSAGES, "slots": slots, "limit": _limit(slots)}
    result.update(distribution_ms(fast))
    say(
        f"mixed: fast messages created->completed p50 {result['p50_ms']:.0f} ms,"
        f" p99 {result['p99_ms']:.0f} ms"
    )
    return result


def measure_processing(
    stack: Stack, web: Web, app: Flask, count: int, log_dir: Path, say: Say
) -> dict[str, Any]:
    """Every processing measurement, side by side."""
    results = {
        "sync": measure_waiting_processor(stack, app, SYNC_PROCESSOR, count, say),
        "async": measure_waiting_processor(stack, app, ASYNC_PROCESSOR, count, say),
        "celery_gevent": measure_celery_baseline(stack, log_dir, count, say),
        "mixed": measure_mixed(stack, web, app, say),
    }
    sync, baseline = results["sync"]["rate"], results["celery_gevent"]["rate"]
    results["sync_to_celery"] = sync / baseline if sync and baseline else None
    return results

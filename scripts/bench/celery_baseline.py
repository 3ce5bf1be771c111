"""A plain Celery app for the bench's baseline: one task per message, each waiting 50 ms.

Started as ``celery -A scripts.bench.celery_baseline worker -P gevent -c 100``
with ``BASELINE_BROKER_URL`` (and ``CELERY_BROKER_URL``, which Celery prefers)
naming a Redis database of the bench's own; each
task counts itself done in that Redis, which the bench polls.
"""

from __future__ import annotations

import os
import time

from celery import Celery
from redis import Redis

from scripts.bench.processors import WAIT_SECONDS

BROKER_URL = os.environ.get("BASELINE_BROKER_URL", "redis://127.0.0.1:6379/2")
QUEUE = "baseline"
TASK = "baseline.wait"
DONE_KEY = "baseline:done"

celery = Celery("baseline", broker=BROKER_URL)
celery.conf.update(task_default_queue=QUEUE, task_ignore_result=True)
_counter = Redis.from_url(BROKER_URL)


@celery.task(name=TASK)
def wait() -> None:
    """The same work as the bench's processor: wait, then count the message done."""
    time.sleep(WAIT_SECONDS)
    _counter.incr(DONE_KEY)

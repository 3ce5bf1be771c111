"""Wake-ups for the workers: the cheap signal sent after a message is committed.

Workers drain the database in batches, so the web does not send one task per
message. It sends a ``drain`` task only when none is already queued: a Redis key
set with NX marks "a drain is queued", and the worker deletes it as the drain
starts. A message committed before that delete is seen by the starting drain;
one committed after it finds the key gone and queues a new drain. If the broker
is unreachable the message still stands committed, and the recovery sweep in
every worker queues the drain later.

Web requests do not talk to the broker at all: they raise a flag and answer.
A background thread per process lowers the flag and then asks for a drain, so
every commit that raised the flag is followed by a request made after it, and
a burst of requests costs one broker round trip instead of one each.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from enum import Enum

from celery import Celery
from flask import Flask
from redis import Redis
from redis.exceptions import RedisError

from app.metrics import BROKER_PUBLISH_FAILURES

DRAIN_TASK = "n3hub.drain_messages"
DRAIN_QUEUED_KEY_PREFIX = "n3hub:drain-queued:"
# A lost drain task cannot hold the key for long; the sweep queues another after this.
DRAIN_QUEUED_TTL_SECONDS = 5
# After a broker failure, requests skip the broker for this long instead of each waiting on it.
COOL_OFF_SECONDS = 1.0
WAKE_COALESCE_SECONDS = 0.002
WAKE_PAUSE_WHILE_QUEUED_SECONDS = 0.005

log = logging.getLogger(__name__)


class _Asked(Enum):
    QUEUED = "queued"
    ALREADY_QUEUED = "already queued"
    UNREACHABLE = "unreachable"


class DrainRequests:
    """Queues a drain task unless one is already waiting for a worker."""

    def __init__(self, celery: Celery, redis: Redis | None, queue: str) -> None:
        self._celery = celery
        self._redis = redis
        self._queue = queue
        self._queued_key = DRAIN_QUEUED_KEY_PREFIX + queue
        self._quiet_until = 0.0
        self._wanted = threading.Event()
        self._waker_pid = 0
        self._waker_lock = threading.Lock()

    def request_soon(self) -> None:
        """Ask for a drain from this process's waker thread; never blocks the caller."""
        if self._waker_pid != os.getpid():
            self._start_waker()
        # Already raised means the waker has yet to lower it, and it asks after lowering
        # it: this commit is covered. Reading the flag skips Event.set's lock under load.
        if not self._wanted.is_set():
            self._wanted.set()

    def _start_waker(self) -> None:
        with self._waker_lock:
            if self._waker_pid == os.getpid():
                return
            # A forked child inherits the flag but not the thread: start its own.
            threading.Thread(target=self._wake_forever, name="n3hub-waker", daemon=True).start()
            self._waker_pid = os.getpid()

    def _wake_forever(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            outcome = self._ask()
            # Under load a commit lands every fraction of a millisecond; pausing here
            # folds them into one broker round trip, at the cost of this much latency.
            # A drain found queued has not started, so it will see the commits of a
            # longer pause: only those after its last claim wait for the next wake.
            if outcome is _Asked.ALREADY_QUEUED:
                time.sleep(WAKE_PAUSE_WHILE_QUEUED_SECONDS)
            else:
                time.sleep(WAKE_COALESCE_SECONDS)

    def request(self) -> bool:
        """Ask for a drain; False when the broker could not be reached."""
        return self._ask() is not _Asked.UNREACHABLE

    def _ask(self) -> _Asked:
        if time.monotonic() < self._quiet_until:
            return _Asked.UNREACHABLE
        try:
            if self._redis is not None and not self._redis.set(
                self._queued_key, "1", nx=True, ex=DRAIN_QUEUED_TTL_SECONDS
            ):
                return _Asked.ALREADY_QUEUED
            self._celery.send_task(DRAIN_TASK, retry=False, ignore_result=True)
            return _Asked.QUEUED
        except Exception as error:  # whatever the broker raised, the message is already safe
            BROKER_PUBLISH_FAILURES.inc()
            self._quiet_until = time.monotonic() + COOL_OFF_SECONDS
            log.warning("broker unreachable, drain left to the recovery sweep: %s", error)
            self.started()
            return _Asked.UNREACHABLE

    def queue_length(self) -> int | None:
        """Drain tasks waiting in the broker, when the broker is this Redis and answers."""
        if self._redis is None:
            return None
        try:
            return int(self._redis.llen(self._queue))
        except RedisError:
            return None

    def started(self) -> None:
        """Clear the "drain queued" marker: called as a drain starts, or when queueing failed."""
        try:
            if self._redis is not None:
                self._redis.delete(self._queued_key)
        except RedisError as error:
            log.warning("could not clear the drain marker (it expires on its own): %s", error)


def init_app(app: Flask) -> None:
    """Attach the app's :class:`DrainRequests` as ``app.extensions["drain_requests"]``."""
    timeout = app.config["BROKER_TIMEOUT"]
    redis = None
    if app.config["WAKE_REDIS_URL"]:
        redis = Redis.from_url(
            app.config["WAKE_REDIS_URL"], socket_timeout=timeout, socket_connect_timeout=timeout
        )
    app.extensions["drain_requests"] = DrainRequests(
        app.extensions["celery"], redis, app.config["TASK_QUEUE"]
    )

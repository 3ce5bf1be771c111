"""Wake-ups for the workers: the cheap signal sent after a message is committed.

Workers drain the database in batches, so the web does not send one task per
message. A Redis key, the drain marker, says "a drain is queued, or running and
about to claim again": the web sends a ``drain`` task only when it can set the
marker (SET NX). A drain keeps the marker set while it works, so under a steady
flow one drain takes every message and no task is sent at all; it clears the
marker only when a claim finds nothing, then looks once more (a read), because a
message committed just before the clear saw the marker and asked nobody. If the
broker is unreachable the message still stands committed, and the recovery
sweep in every worker queues the drain later. A marker left by a worker that
died expires on its own.

The sweep also heals what it finds stuck: a key of ours without an expiry, or
with a longer one than ours (left by an older release, an operator, anything
else), is given ours; and work that has been due for longer than a sweep
interval gets a drain queued whatever the marker says. So no key can stop
processing for more than a sweep interval or two.

A drain that needs help (a full batch, a backlog) or hands over (its time budget
is spent) queues one more drain whatever the marker says; a second key keeps
that to one such task waiting at a time.

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
DRAIN_MARKER_KEY_PREFIX = "n3hub:drain-marker:"
DRAIN_HELP_KEY_PREFIX = "n3hub:drain-help:"
# A lost drain task or a dead drain cannot hold a key for long: the sweep queues
# another drain after this. A running drain refreshes the marker well within it.
DRAIN_MARKER_TTL_SECONDS = 5
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
    """Queues drain tasks, unless a drain holds the marker, and tracks the marker for drains."""

    def __init__(self, celery: Celery, redis: Redis | None, queue: str) -> None:
        self._celery = celery
        self._redis = redis
        self._queue = queue
        self._marker_key = DRAIN_MARKER_KEY_PREFIX + queue
        self._help_key = DRAIN_HELP_KEY_PREFIX + queue
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
            outcome = self._ask(self._marker_key)
            # Under load a commit lands every fraction of a millisecond; pausing here
            # folds them into one broker round trip, at the cost of this much latency.
            # A marker found held means a drain will claim again and see the commits of
            # a longer pause; one that clears the marker looks once more before it ends.
            if outcome is _Asked.ALREADY_QUEUED:
                time.sleep(WAKE_PAUSE_WHILE_QUEUED_SECONDS)
            else:
                time.sleep(WAKE_COALESCE_SECONDS)

    def request(self) -> bool:
        """Ask for a drain unless one holds the marker; False if the broker is unreachable."""
        return self._ask(self._marker_key) is not _Asked.UNREACHABLE

    def request_help(self) -> bool:
        """Queue one more drain even though the marker is held, unless such a one still waits."""
        return self._ask(self._help_key) is not _Asked.UNREACHABLE

    def _ask(self, key: str) -> _Asked:
        if time.monotonic() < self._quiet_until:
            return _Asked.UNREACHABLE
        try:
            if self._redis is not None and not self._redis.set(
                key, "1", nx=True, ex=DRAIN_MARKER_TTL_SECONDS
            ):
                return _Asked.ALREADY_QUEUED
            self._celery.send_task(DRAIN_TASK, retry=False, ignore_result=True)
            return _Asked.QUEUED
        except Exception as error:  # whatever the broker raised, the message is already safe
            BROKER_PUBLISH_FAILURES.inc()
            self._quiet_until = time.monotonic() + COOL_OFF_SECONDS
            log.warning("broker unreachable, drain left to the recovery sweep: %s", error)
            self._delete(key)
            return _Asked.UNREACHABLE

    def repair(self) -> None:
        """Give our keys our expiry where they have none, or a longer one."""
        if self._redis is None:
            return
        try:
            for key in (self._marker_key, self._help_key):
                # -2: no such key; -1: no expiry.
                ttl = self._redis.ttl(key)
                if ttl == -1 or ttl > DRAIN_MARKER_TTL_SECONDS:
                    log.warning("drain key %s had expiry %s; giving it ours", key, ttl)
                    self._redis.expire(key, DRAIN_MARKER_TTL_SECONDS)
        except RedisError as error:
            log.warning("could not check the drain keys: %s", error)

    def queue_length(self) -> int | None:
        """Drain tasks waiting in the broker, when the broker is this Redis and answers."""
        if self._redis is None:
            return None
        try:
            return int(self._redis.llen(self._queue))
        except RedisError:
            return None

    def started(self) -> None:
        """A drain starts: it now holds the marker, and a help request no longer waits."""
        self.hold()
        self._delete(self._help_key)

    def hold(self) -> None:
        """Refresh the marker: this drain will claim again, so new commits need not ask."""
        if self._redis is None:
            return
        try:
            self._redis.set(self._marker_key, "1", ex=DRAIN_MARKER_TTL_SECONDS)
        except RedisError as error:
            log.warning("could not refresh the drain marker: %s", error)

    def release(self) -> None:
        """Clear the marker: this drain found nothing due, so later commits must ask again."""
        self._delete(self._marker_key)

    def _delete(self, key: str) -> None:
        try:
            if self._redis is not None:
                self._redis.delete(key)
        except RedisError as error:
            log.warning("could not clear a drain key (it expires on its own): %s", error)


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

"""Group commit for ``POST /messages``: concurrent requests of one process share a transaction.

Every write to SQLite is serialised, and each transaction pays a fixed price
(taking the lock, BEGIN, the tally update, COMMIT and its fsync). Under load a
request that finds another one committing queues behind it; when that commit
ends, the first queued request commits everything queued so far in one
transaction, and each request still answers only after its own row is durable.
Before taking the queue, the leader yields once, so that requests already
under way in this process (greenlets under gevent, threads otherwise) join its
group rather than the next one. After a group of more than one, the next
leader also waits until ``N3HUB_COMMIT_GATHER_SECONDS`` after that group's
commit began: a commit costs nearly the same CPU for one message as for five (its
fsync dominates), and under a steady flow the wait turns several small groups
into one. An idle system sees groups of one, which never wait, so a lone
request is not delayed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from app import lifecycle

MAX_GROUP = 256


@dataclass
class _Submission:
    tenant: str
    content: str
    done: threading.Event = field(default_factory=threading.Event)
    leads: bool = False
    row: dict[str, Any] | None = None
    error: BaseException | None = None


class GroupCommit:
    """Creates messages, committing the creations that arrive together as one."""

    def __init__(self, gather_seconds: float = 0.0) -> None:
        self._gather_seconds = gather_seconds
        self._lock = threading.Lock()
        self._queue: list[_Submission] = []
        self._committing = False
        self._previous_group_size = 0
        self._previous_group_started = 0.0

    def create(self, tenant: str, content: str) -> dict[str, Any]:
        """Store one pending message of ``tenant`` and return its row once committed."""
        mine = _Submission(tenant, content)
        with self._lock:
            self._queue.append(mine)
            mine.leads = not self._committing
            self._committing = True
        if not mine.leads:
            mine.done.wait()
        if mine.leads:
            time.sleep(0)  # the yield: gevent patches it into a switch to the others
            self._gather()
            self._commit_queued()
        if mine.error is not None:
            raise mine.error
        assert mine.row is not None
        return mine.row

    def _gather(self) -> None:
        """After a group of several, let a steady flow fill this one until the gather ends."""
        if self._previous_group_size > 1:
            wait = self._previous_group_started + self._gather_seconds - time.monotonic()
            if wait > 0:
                time.sleep(wait)

    def _commit_queued(self) -> None:
        with self._lock:
            group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
        self._previous_group_size = len(group)
        self._previous_group_started = time.monotonic()
        try:
            rows = lifecycle.create_pending([(s.tenant, s.content) for s in group])
            for submission, row in zip(group, rows, strict=True):
                submission.row = row
        except BaseException as error:
            for submission in group:
                submission.error = error
        with self._lock:
            successor = self._queue[0] if self._queue else None
            if successor is not None:
                successor.leads = True
            else:
                self._committing = False
        for submission in group:
            submission.done.set()
        if successor is not None:
            successor.done.set()

"""The recovery sweep that runs inside every Celery worker process.

Every ``N3HUB_SWEEP_INTERVAL`` seconds it takes back claims whose lease has
expired (their worker died), deletes a chunk of finished messages past their
retention (:mod:`app.retention`), snapshots the processed tallies once a minute
for the console's charts (:mod:`app.activity`) and, when due pending work exists (never queued,
its task lost with Redis, or its retry backoff over), queues a drain; work due
since before the previous sweep gets one whatever the drain marker says, and
the marker's keys get their expiry back if something took it away
(:mod:`app.wakeups`). Several
workers sweeping at once is safe: lease recovery skips rows another transaction
holds, and a drain request is a no-op while one is queued.

Every ``activity.HEARTBEAT_SECONDS`` the same process marks its pool processes
alive for the console (:func:`app.activity.beat`).

It also looks ahead: when a held-back message (scheduled delivery, retry
backoff) becomes due before the next sweep, a one-shot timer queues a drain at
that moment, so the message starts then rather than up to an interval later.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from celery import bootsteps
from celery.worker import WorkController
from flask import Flask

from app import activity, lifecycle, retention
from app.extensions import db
from app.metrics import WORKER_HEARTBEAT
from app.wakeups import DrainRequests
from app.worker.settings import ProcessingSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


# The wake-up timer fires this much after the due time, so the drain's claim finds it due.
DUE_MARGIN_SECONDS = 0.02


def sweep_once(app: Flask) -> datetime | None:
    """One pass: recover leases, apply retention, queue a drain if anything is due.

    Returns when the next held-back message becomes due, if any.
    """
    with app.app_context():
        WORKER_HEARTBEAT.set(time.time())
        settings: ProcessingSettings = app.extensions["processing"]
        recovered = lifecycle.recover_expired_leases(settings.policy)
        if recovered:
            log.warning("recovered stranded messages: %s", dict(recovered))
        lifecycle.purge_expired_idempotency_keys()
        now = lifecycle.utcnow()
        deleted = retention.delete_expired(retention.retention_periods(app.config), now)
        if sum(deleted.values()):
            log.info("retention deleted finished messages: %s", dict(deleted))
        activity.record_throughput(now)
        requests: DrainRequests = app.extensions["drain_requests"]
        requests.repair()
        if lifecycle.pending_work_due(now):
            requests.request()
            # Due since before the last sweep: whatever holds the marker is not taking it.
            overdue_since = now - timedelta(seconds=app.config["SWEEP_INTERVAL"])
            if lifecycle.pending_work_due(overdue_since):
                requests.request_help()
        return lifecycle.next_due_at(now)


def beat(app: Flask, pids: list[int]) -> None:
    """Mark this worker's pool processes alive, each with its slots."""
    with app.app_context():
        settings: ProcessingSettings = app.extensions["processing"]
        activity.beat(pids, settings.concurrency, lifecycle.utcnow())


def request_drain(app: Flask) -> None:
    """Queue a drain (unless one holds the marker): held-back work has become due."""
    app.extensions["drain_requests"].request()


def _forget(app: Flask, pids: list[int]) -> None:
    with app.app_context():
        activity.forget(pids)


class RecoveryStep(bootsteps.StartStopStep):
    """Runs :func:`sweep_once` on the worker's timer, in its main process.

    With the prefork pool the timer is driven by the main thread's event loop,
    the same thread that forks pool processes, so a fork never happens halfway
    through a sweep; and the sweep closes its connections afterwards, so a
    forked pool process inherits no database connection from its parent.
    """

    requires = ("celery.worker.components:Timer", "celery.worker.components:Pool")

    def __init__(self, worker: WorkController, **kwargs: object) -> None:
        super().__init__(worker, **kwargs)
        self.timer_entries: list[object] = []
        self.timer = None
        self.worker = worker
        self.beaten: list[int] = []  # the pool processes last marked alive

    def start(self, worker: WorkController) -> None:
        app: Flask = worker.app.flask_app
        self.timer = worker.timer
        self.timer_entries = [
            worker.timer.call_repeatedly(app.config["SWEEP_INTERVAL"], self._sweep, (app,)),
            worker.timer.call_repeatedly(activity.HEARTBEAT_SECONDS, self._beat, (app,)),
        ]
        self._beat(app)

    def stop(self, worker: WorkController) -> None:
        for entry in self.timer_entries:
            entry.cancel()
        app: Flask = worker.app.flask_app
        if self.beaten:
            self._guarded(app, "forgetting the heartbeats", lambda: _forget(app, self.beaten))

    def _pool_pids(self) -> list[int]:
        # A prefork pool lists its processes; solo and threads run everything in this one.
        return list(self.worker.pool.info.get("processes") or [os.getpid()])

    def _beat(self, app: Flask) -> None:
        self.beaten = self._pool_pids()
        self._guarded(app, "heartbeat", lambda: beat(app, self.beaten))

    def _guarded(self, app: Flask, what: str, run: Callable[[], T]) -> T | None:
        """Run a database chore, log its failure, and leave no connection for a fork to inherit."""
        try:
            return run()
        except Exception:
            log.exception("%s failed; trying again next interval", what)
            return None
        finally:
            with app.app_context():
                db.engine.dispose()

    def _sweep(self, app: Flask) -> None:
        next_due = self._guarded(app, "recovery sweep", lambda: sweep_once(app))
        if next_due is not None:
            wait = (next_due - lifecycle.utcnow()).total_seconds() + DUE_MARGIN_SECONDS
            if wait < app.config["SWEEP_INTERVAL"]:
                self.timer.call_after(max(wait, 0.0), request_drain, (app,))

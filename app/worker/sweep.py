"""The recovery sweep that runs inside every Celery worker process.

Every ``N3HUB_SWEEP_INTERVAL`` seconds it takes back claims whose lease has
expired (their worker died), deletes a chunk of finished messages past their
retention (:mod:`app.retention`) and, when due pending work exists (never queued,
its task lost with Redis, or its retry backoff over), queues a drain; work due
since before the previous sweep gets one whatever the drain marker says, and
the marker's keys get their expiry back if something took it away
(:mod:`app.wakeups`). Several
workers sweeping at once is safe: lease recovery skips rows another transaction
holds, and a drain request is a no-op while one is queued.

It also looks ahead: when a held-back message (scheduled delivery, retry
backoff) becomes due before the next sweep, a one-shot timer queues a drain at
that moment, so the message starts then rather than up to an interval later.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from celery import bootsteps
from celery.worker import WorkController
from flask import Flask

from app import lifecycle, retention
from app.extensions import db
from app.metrics import WORKER_HEARTBEAT
from app.wakeups import DrainRequests
from app.worker.settings import ProcessingSettings

log = logging.getLogger(__name__)


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
        requests: DrainRequests = app.extensions["drain_requests"]
        requests.repair()
        if lifecycle.pending_work_due(now):
            requests.request()
            # Due since before the last sweep: whatever holds the marker is not taking it.
            overdue_since = now - timedelta(seconds=app.config["SWEEP_INTERVAL"])
            if lifecycle.pending_work_due(overdue_since):
                requests.request_help()
        return lifecycle.next_due_at(now)


def request_drain(app: Flask) -> None:
    """Queue a drain (unless one holds the marker): held-back work has become due."""
    app.extensions["drain_requests"].request()


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
        self.timer_entry = None
        self.timer = None

    def start(self, worker: WorkController) -> None:
        app: Flask = worker.app.flask_app
        self.timer = worker.timer
        self.timer_entry = worker.timer.call_repeatedly(
            app.config["SWEEP_INTERVAL"], self._sweep, (app,)
        )

    def stop(self, worker: WorkController) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()

    def _sweep(self, app: Flask) -> None:
        try:
            next_due = sweep_once(app)
        except Exception:
            log.exception("recovery sweep failed; trying again next interval")
            return
        finally:
            with app.app_context():
                db.engine.dispose()
        if next_due is not None:
            wait = (next_due - lifecycle.utcnow()).total_seconds() + DUE_MARGIN_SECONDS
            if wait < app.config["SWEEP_INTERVAL"]:
                self.timer.call_after(max(wait, 0.0), request_drain, (app,))

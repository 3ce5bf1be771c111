"""The recovery sweep that runs inside every Celery worker process.

Every ``N3HUB_SWEEP_INTERVAL`` seconds it takes back claims whose lease has
expired (their worker died) and, when due pending work exists (never queued,
its task lost with Redis, or its retry backoff over), queues a drain; work due
since before the previous sweep gets one whatever the drain marker says, and
the marker's keys get their expiry back if something took it away
(:mod:`app.wakeups`). Several
workers sweeping at once is safe: lease recovery skips rows another transaction
holds, and a drain request is a no-op while one is queued.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from celery import bootsteps
from celery.worker import WorkController
from flask import Flask

from app import lifecycle
from app.extensions import db
from app.metrics import WORKER_HEARTBEAT
from app.wakeups import DrainRequests
from app.worker.settings import ProcessingSettings

log = logging.getLogger(__name__)


def sweep_once(app: Flask) -> None:
    """One pass: recover expired leases, then queue a drain if anything is due."""
    with app.app_context():
        WORKER_HEARTBEAT.set(time.time())
        settings: ProcessingSettings = app.extensions["processing"]
        recovered = lifecycle.recover_expired_leases(settings.policy)
        if recovered:
            log.warning("recovered stranded messages: %s", dict(recovered))
        lifecycle.purge_expired_idempotency_keys()
        requests: DrainRequests = app.extensions["drain_requests"]
        requests.repair()
        if lifecycle.pending_work_due():
            requests.request()
            # Due since before the last sweep: whatever holds the marker is not taking it.
            overdue_since = lifecycle.utcnow() - timedelta(seconds=app.config["SWEEP_INTERVAL"])
            if lifecycle.pending_work_due(overdue_since):
                requests.request_help()


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

    def start(self, worker: WorkController) -> None:
        app: Flask = worker.app.flask_app
        self.timer_entry = worker.timer.call_repeatedly(
            app.config["SWEEP_INTERVAL"], self._sweep, (app,)
        )

    def stop(self, worker: WorkController) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()

    @staticmethod
    def _sweep(app: Flask) -> None:
        try:
            sweep_once(app)
        except Exception:
            log.exception("recovery sweep failed; trying again next interval")
        finally:
            with app.app_context():
                db.engine.dispose()

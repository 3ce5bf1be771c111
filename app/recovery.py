"""The recovery sweep that runs inside every Celery worker process.

Every ``N3HUB_SWEEP_INTERVAL`` seconds it takes back claims whose lease has
expired (their worker died) and, when due pending work exists (never queued,
its task lost with Redis, or its retry backoff over), queues a drain. Several
workers sweeping at once is safe: lease recovery skips rows another transaction
holds, and a drain request is a no-op while one is queued.
"""

from __future__ import annotations

import logging
import threading
import time

from celery import bootsteps
from celery.worker import WorkController
from flask import Flask

from app import lifecycle
from app.metrics import WORKER_HEARTBEAT
from app.processing import ProcessingSettings

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
        if lifecycle.pending_work_due():
            app.extensions["drain_requests"].request()


class RecoverySweeper(threading.Thread):
    """A daemon thread calling :func:`sweep_once` until stopped."""

    def __init__(self, app: Flask, interval: float) -> None:
        super().__init__(name="n3hub-recovery-sweep", daemon=True)
        self._app = app
        self._interval = interval
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                sweep_once(self._app)
            except Exception:
                log.exception("recovery sweep failed; trying again next interval")

    def stop(self) -> None:
        self._stopped.set()


class RecoveryStep(bootsteps.StartStopStep):
    """Runs the sweeper in the worker's main process while the pool is up."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: WorkController, **kwargs: object) -> None:
        super().__init__(worker, **kwargs)
        self.sweeper: RecoverySweeper | None = None

    def start(self, worker: WorkController) -> None:
        app: Flask = worker.app.flask_app
        self.sweeper = RecoverySweeper(app, app.config["SWEEP_INTERVAL"])
        self.sweeper.start()

    def stop(self, worker: WorkController) -> None:
        if self.sweeper is not None:
            self.sweeper.stop()

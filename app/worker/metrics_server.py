"""Metrics of the Celery worker processes.

With ``PROMETHEUS_MULTIPROC_DIR`` set, every pool process writes its metrics to
that directory, and the files of a pool process that exits are marked dead. When
``N3HUB_WORKER_METRICS_PORT`` is set, the worker's main process serves the
directory's sum on that port (once per worker, never per pool process): that is
how a worker in its own container is scraped. On one host the web's
``/metrics`` already includes these files, so leave the port unset there.
"""

from __future__ import annotations

import logging
import os

from celery import bootsteps
from celery.signals import worker_process_shutdown
from celery.worker import WorkController
from prometheus_client import multiprocess, start_http_server

from app.metrics import process_registry

log = logging.getLogger(__name__)


@worker_process_shutdown.connect
def _mark_pool_process_dead(pid: int | None = None, **_: object) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid or os.getpid())


class MetricsServerStep(bootsteps.StartStopStep):
    """Serves the worker's metrics over HTTP from its main process."""

    requires = ("celery.worker.components:Pool",)

    def start(self, worker: WorkController) -> None:
        config = worker.app.flask_app.config
        port = config["WORKER_METRICS_PORT"]
        if not port:
            return
        if not config["PROMETHEUS_MULTIPROC_DIR"]:
            log.warning("N3HUB_WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR; not serving")
            return
        start_http_server(port, registry=process_registry(config["PROMETHEUS_MULTIPROC_DIR"]))
        log.info("worker metrics served on port %d", port)

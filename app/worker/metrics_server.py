"""Metrics of the Celery worker processes.

With ``PROMETHEUS_MULTIPROC_DIR`` set, every pool process writes its metrics to
that directory, and the files of a pool process that exits are marked dead
(:mod:`app.worker.process_hooks`). When
``N3HUB_WORKER_METRICS_PORT`` is set, the worker's main process serves the
directory's sum on that port (once per worker, never per pool process): that is
how a worker in its own container is scraped. On one host the web's
``/metrics`` already includes these files, so leave the port unset there.
With ``N3HUB_METRICS_TOKEN`` set, the port answers only that bearer token, as
the web's ``/metrics`` does.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from celery import bootsteps
from celery.worker import WorkController
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app

from app.auth.principals import challenge, presents_token
from app.metrics import process_registry

log = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


def metrics_app(registry: CollectorRegistry, token: str) -> Callable[..., Iterable[bytes]]:
    """The WSGI app of the worker's metrics: the exposition, behind ``token`` when set."""
    exposition = make_wsgi_app(registry)

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not token or presents_token(environ.get("HTTP_AUTHORIZATION"), token):
            return exposition(environ, start_response)
        message = "Metrics need 'Authorization: Bearer <metrics token>'."
        body = json.dumps({"error": {"code": "unauthorized", "message": message}}).encode()
        headers = [("Content-Type", "application/json"), *challenge(invalid=True).items()]
        start_response("401 Unauthorized", headers)
        return [body]

    return guarded


def serve_metrics(port: int, registry: CollectorRegistry, token: str) -> ThreadingWSGIServer:
    """Serve the worker's metrics on ``port`` from a daemon thread."""
    server = make_server(
        # Every interface: a container's port, scraped over the container network.
        "0.0.0.0",  # nosec B104
        port,
        metrics_app(registry, token),
        ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


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
        registry = process_registry(config["PROMETHEUS_MULTIPROC_DIR"])
        serve_metrics(port, registry, config["METRICS_TOKEN"])
        log.info("worker metrics served on port %d", port)

"""Prometheus metrics and the ``/metrics`` endpoint.

Counts that must be true for the whole deployment come from two places:

* per-process metrics (HTTP traffic, processing durations) use prometheus_client's
  multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set, so a scrape of any
  Gunicorn worker sums every process that shares the directory;
* message counts (``messages_processed_total``, messages by status, retries,
  recoveries, backlog age) are read from the database at scrape time, so they
  count what every Celery worker on every host did, and survive restarts.

Celery workers record their own per-process metrics (processing durations,
latency, progress). On one host they share the web's multiprocess directory
and appear in the web's ``/metrics``; in separate containers each worker serves
them on ``N3HUB_WORKER_METRICS_PORT`` instead (see :mod:`app.worker.metrics_server`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from app import queries, tallies
from app.auth.access import Access, requires
from app.database import is_transient_error, read_connection
from app.lifecycle import utcnow
from app.models import MessageStatus

UNMATCHED_ENDPOINT = "<unmatched>"
# Clients choose the method: the rest share one label value, so they cannot add series at will.
STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests served.", ["method", "endpoint", "status"]
)
HTTP_LATENCY = Histogram(
    "http_request_latency_seconds",
    "Time to serve an HTTP request.",
    ["method", "endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_ERRORS = Counter(
    "api_errors_total", "API requests answered with an error.", ["endpoint", "error_type"]
)
BROKER_PUBLISH_FAILURES = Counter(
    "n3hub_broker_publish_failures_total",
    "Drain requests that could not reach the broker (the recovery sweep covers them).",
)
# How a processor run ended, the label of the processing durations.
RUN_SUCCEEDED, RUN_FAILED, RUN_TIMED_OUT = "succeeded", "failed", "timed_out"
PROCESSING_DURATION = Histogram(
    "n3hub_processing_duration_seconds",
    "Time the processor spent on one message, by how the run ended.",
    ["outcome"],
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120),
)
for _outcome in (RUN_SUCCEEDED, RUN_FAILED, RUN_TIMED_OUT):
    PROCESSING_DURATION.labels(_outcome)  # every series exposed from the start, at 0
PROCESSING_TIMEOUTS = Counter(
    "n3hub_processing_timeouts_total",
    "Processor runs that overran N3HUB_PROCESS_TIMEOUT (each a failed attempt).",
)
WORKER_IN_FLIGHT = Gauge(
    "n3hub_worker_messages_in_flight",
    "Messages being processed right now, summed over a worker's processes.",
    multiprocess_mode="livesum",
)
WORKER_SLOTS = Gauge(
    "n3hub_worker_slots",
    "Messages a worker's processes may have in flight at once (N3HUB_PROCESS_CONCURRENCY each).",
    multiprocess_mode="livesum",
)
WORKER_ABANDONED_RUNS = Gauge(
    "n3hub_worker_abandoned_runs",
    "Timed-out processor runs still going on threads that cannot be stopped.",
    multiprocess_mode="livesum",
)
MESSAGE_LATENCY = Histogram(
    "n3hub_message_latency_seconds",
    "Time from a message's creation to the end of its processing.",
    ["status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
CLAIM_BATCH_SIZE = Histogram(
    "n3hub_claim_batch_size",
    "Messages taken by one claim.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
WORKER_LAST_PROGRESS = Gauge(
    "n3hub_worker_last_progress_timestamp_seconds",
    "Unix time a worker last finished a batch.",
    multiprocess_mode="max",
)
WORKER_HEARTBEAT = Gauge(
    "n3hub_worker_heartbeat_timestamp_seconds",
    "Unix time a worker's recovery sweep last ran.",
    multiprocess_mode="max",
)

bp = Blueprint("metrics", __name__)
log = logging.getLogger(__name__)
DATABASE_UP_HELP = "1 when /metrics could read the message counts from the database, else 0."


class MessageTalliesCollector:
    """Message counts read from the database at scrape time."""

    def collect(self) -> Iterator[Metric]:
        try:
            with read_connection() as connection:
                counts = tallies.read(connection)
            oldest = queries.oldest_pending_created_at()
        except Exception as error:
            if not is_transient_error(error):
                raise
            # The process-local families still answer; these come back with the database.
            log.warning("database unavailable, /metrics without its counts: %s", error)
            yield GaugeMetricFamily("n3hub_database_up", DATABASE_UP_HELP, value=0)
            return
        yield GaugeMetricFamily("n3hub_database_up", DATABASE_UP_HELP, value=1)
        processed = CounterMetricFamily(
            "messages_processed", "Messages whose processing ended, by outcome.", labels=["status"]
        )
        for status, name in tallies.PROCESSED_BY_STATUS.items():
            processed.add_metric([status.value], counts.get(name, 0))
        yield processed
        deleted = CounterMetricFamily(
            "n3hub_messages_deleted",
            "Finished messages deleted by retention, by the status they had.",
            labels=["status"],
        )
        for status, name in tallies.DELETED_BY_STATUS.items():
            deleted.add_metric([status.value], counts.get(name, 0))
        yield deleted
        by_status = GaugeMetricFamily(
            "n3hub_messages", "Messages currently in each status.", labels=["status"]
        )
        for status in MessageStatus:
            by_status.add_metric([status.value], counts.get(status.value, 0))
        yield by_status
        yield CounterMetricFamily(
            "n3hub_message_retries",
            "Failed attempts that were scheduled to run again.",
            value=counts.get(tallies.RETRIES, 0),
        )
        yield CounterMetricFamily(
            "n3hub_message_recoveries",
            "Claims taken back from workers that died or stalled.",
            value=counts.get(tallies.RECOVERIES, 0),
        )
        queued = current_app.extensions["drain_requests"].queue_length()
        if queued is not None:
            yield GaugeMetricFamily(
                "n3hub_broker_queue_length",
                "Drain tasks waiting in the broker queue.",
                value=queued,
            )
        yield GaugeMetricFamily(
            "n3hub_backlog_oldest_age_seconds",
            "Age of the oldest pending message (0 when none waits).",
            value=(utcnow() - oldest).total_seconds() if oldest else 0.0,
        )

    def describe(self) -> list[Metric]:
        return []  # avoid a database query at registration time


def endpoint_label() -> str:
    """The route template, never the raw path, so label values stay few."""
    return request.url_rule.rule if request.url_rule is not None else UNMATCHED_ENDPOINT


def count_error(error_type: str) -> None:
    """Record an API error for the current request's endpoint."""
    API_ERRORS.labels(endpoint=endpoint_label(), error_type=error_type).inc()


def method_label() -> str:
    """The request's method; any method outside the standard ones is counted as OTHER."""
    method = request.method
    return method if method in STANDARD_METHODS else OTHER_METHOD


def time_request_from(started: float) -> None:
    """Count the current request's duration from ``started``, a ``time.perf_counter()`` reading."""
    g.request_started = started


def _start_timer() -> None:
    time_request_from(time.perf_counter())


def record_request(method: str, endpoint: str, status: int, seconds: float) -> None:
    """Count one served request and the time it took."""
    HTTP_REQUESTS.labels(method, endpoint, str(status)).inc()
    HTTP_LATENCY.labels(method, endpoint).observe(seconds)


def _record_request(response: Response) -> Response:
    elapsed = time.perf_counter() - g.get("request_started", time.perf_counter())
    record_request(method_label(), endpoint_label(), response.status_code, elapsed)
    return response


def process_registry(multiprocess_dir: str) -> CollectorRegistry:
    """The registry holding this deployment's per-process metrics."""
    if not multiprocess_dir:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


@bp.get("/metrics")
@requires(Access.METRICS)
def get_metrics() -> Response:
    """Prometheus text exposition of every metric."""
    processes = process_registry(current_app.config["PROMETHEUS_MULTIPROC_DIR"])
    database_registry = CollectorRegistry()
    database_registry.register(MessageTalliesCollector())
    body = generate_latest(processes) + generate_latest(database_registry)
    return Response(body, content_type=CONTENT_TYPE_LATEST)


def expose_families_at_zero() -> None:
    """Create one series of each labelled family, so a scrape shows every family from the start.

    Unlabelled metrics exist as soon as they are declared; a labelled one only
    once a series is used. The series made here are ones every deployment has:
    requests for an unknown path, and the message latency of each outcome.
    """
    HTTP_REQUESTS.labels("GET", UNMATCHED_ENDPOINT, "404")
    HTTP_LATENCY.labels("GET", UNMATCHED_ENDPOINT)
    API_ERRORS.labels(endpoint=UNMATCHED_ENDPOINT, error_type="not_found")
    for status in tallies.PROCESSED_BY_STATUS:
        MESSAGE_LATENCY.labels(status.value)


def init_app(app: Flask) -> None:
    """Time and count every request, and serve ``/metrics``."""
    expose_families_at_zero()
    app.before_request(_start_timer)
    app.after_request(_record_request)
    app.register_blueprint(bp)

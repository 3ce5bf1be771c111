"""Prometheus metrics and the ``/metrics`` endpoint.

Counts that must be true for the whole deployment come from two places:

* per-process metrics (HTTP traffic, processing durations) use prometheus_client's
  multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set, so a scrape of any
  Gunicorn worker sums every process that shares the directory;
* message counts (``messages_processed_total``, messages by status, retries,
  recoveries) are read from the database tallies at scrape time, so they count
  what every Celery worker on every host did, and survive restarts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from app import queries, tallies
from app.database import read_connection
from app.lifecycle import utcnow
from app.models import MessageStatus

UNMATCHED_ENDPOINT = "<unmatched>"

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

bp = Blueprint("metrics", __name__)


class MessageTalliesCollector:
    """Message counts read from the database at scrape time."""

    def collect(self) -> Iterator[Metric]:
        with read_connection() as connection:
            counts = tallies.read(connection)
        processed = CounterMetricFamily(
            "messages_processed", "Messages whose processing ended, by outcome.", labels=["status"]
        )
        for status, name in tallies.PROCESSED_BY_STATUS.items():
            processed.add_metric([status.value], counts.get(name, 0))
        yield processed
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
        oldest = queries.oldest_pending_created_at()
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


def _start_timer() -> None:
    g.request_started = time.perf_counter()


def _record_request(response: Response) -> Response:
    endpoint = endpoint_label()
    elapsed = time.perf_counter() - g.get("request_started", time.perf_counter())
    HTTP_REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
    HTTP_LATENCY.labels(request.method, endpoint).observe(elapsed)
    return response


@bp.get("/metrics")
def get_metrics() -> Response:
    """Prometheus text exposition of every metric."""
    if current_app.config["PROMETHEUS_MULTIPROC_DIR"]:
        process_registry = CollectorRegistry()
        MultiProcessCollector(process_registry)
    else:
        process_registry = REGISTRY
    database_registry = CollectorRegistry()
    database_registry.register(MessageTalliesCollector())
    body = generate_latest(process_registry) + generate_latest(database_registry)
    return Response(body, content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """Time and count every request, and serve ``/metrics``."""
    app.before_request(_start_timer)
    app.after_request(_record_request)
    app.register_blueprint(bp)

"""A real Prometheus scraping a real stack: Gunicorn with four workers and a Celery worker.

The web and the worker share one fresh ``PROMETHEUS_MULTIPROC_DIR``, as on one host,
so the web's ``/metrics`` sums every Gunicorn and Celery process. Prometheus runs a
config derived from docker/prometheus.yaml (the web job aimed at this Gunicorn,
1 s scrapes, no worker job) and evaluates docker/alerts.yaml. The stack has a
database and a Redis of its own: the session's worker drains the shared ones.
SQLite only; the metric paths do not depend on the database. Skips without the
``prometheus`` binary unless ``N3HUB_REQUIRE_PROMTOOL=1``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import Request, urlopen

import pytest
import yaml
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app.config import load_config
from app.extensions import db
from tests.conftest import (
    DatabaseFactory,
    bearer,
    make_api_key,
    stack_environment,
    start_web,
    start_worker,
)
from tests.support.polling import wait_for
from tests.support.processes import ManagedProcess, RedisServer, free_port
from tests.test_monitoring_config import (
    ALERTS,
    PROMETHEUS_CONFIG,
    dashboard_queries,
    require_prometheus_tool,
)

METRICS_TOKEN = "scrape-token"
Samples = list[tuple[str, dict[str, str], float]]


@dataclass
class MonitoredStack:
    """The processes under test and where they answer."""

    web_url: str
    prometheus_url: str
    metrics_dir: Path
    api_key: str
    metrics_token: str

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One HTTP request to the web, on a connection of its own; (status, JSON body)."""
        data = None if body is None else json.dumps(body).encode()
        request = Request(
            self.web_url + path, data=data, method=method, headers=bearer(self.api_key)
        )
        request.add_header("Content-Type", "application/json")
        try:
            with urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except HTTPError as error:
            return error.code, json.loads(error.read())

    def scrape(self) -> Samples:
        """Every sample of the web's ``/metrics`` right now."""
        request = Request(self.web_url + "/metrics", headers=bearer(self.metrics_token))
        with urlopen(request, timeout=30) as response:
            text = response.read().decode()
        return [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant PromQL query; fails on a query error."""
        url = f"{self.prometheus_url}/api/v1/query?{urlencode({'query': expr})}"
        try:
            with urlopen(url, timeout=30) as response:
                answer = json.loads(response.read())
        except HTTPError as error:
            raise AssertionError(f"{expr!r}: {error.read().decode()}") from None
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def query_value(self, expr: str) -> float | None:
        """The value of a query whose result is one series, or None while it has none."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples that carry ``labels``."""
    return sum(
        value
        for sample, sample_labels, value in samples
        if sample == name and labels.items() <= sample_labels.items()
    )


def rise(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much ``name`` (restricted to ``labels``) grew between two scrapes."""
    return total(after, name, **labels) - total(before, name, **labels)


def served(samples: Samples) -> float:
    """HTTP requests counted, Prometheus's and the test's own scrapes left out."""
    name = "http_requests_total"
    return total(samples, name) - total(samples, name, endpoint="/metrics")


def processes_serving_http(metrics_dir: Path) -> int:
    """How many processes have counted an HTTP request other than a scrape.

    Reads prometheus_client's per-process files directly (``counter_<pid>.db``,
    keys ``[family, sample, labels, help]``), the one way to see which process
    counted what.
    """
    serving = 0
    for path in metrics_dir.glob("counter_*.db"):
        for key, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _, sample, labels, _ = json.loads(key)
            if sample == "http_requests_total" and labels["endpoint"] != "/metrics":
                serving += 1
                break
    return serving


def prometheus_config(web_port: int, token_file: Path) -> dict[str, Any]:
    """docker/prometheus.yaml aimed at the local web, scraping every second, with the rules.

    The metrics token is read from ``token_file`` instead of the compose secret.
    """
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS)]
    [web] = [job for job in config["scrape_configs"] if job["job_name"] == "web"]
    web["static_configs"] = [{"targets": [f"127.0.0.1:{web_port}"]}]
    web["authorization"]["credentials_file"] = str(token_file)
    config["scrape_configs"] = [web]
    return config


def start_prometheus(config: dict[str, Any], directory: Path) -> tuple[ManagedProcess, str]:
    """A Prometheus server on a free port with its data in ``directory``; wait until ready."""
    binary = require_prometheus_tool("prometheus")
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={directory / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    server = ManagedProcess(argv, os.environ, directory / "prometheus.log").start()
    url = f"http://127.0.0.1:{port}"
    server.wait_until_answering(f"{url}/-/ready", "prometheus to be ready", timeout=30)
    return server, url


@pytest.fixture(scope="module")
def stack(
    databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MonitoredStack]:
    require_prometheus_tool("prometheus")
    directory = tmp_path_factory.mktemp("monitored")
    metrics_dir = directory / "metrics"
    metrics_dir.mkdir()
    token_file = directory / "metrics-token"
    token_file.write_text(f"{METRICS_TOKEN}\n")
    redis = RedisServer(directory / "redis").start()
    processes: list[ManagedProcess] = [redis]
    try:
        env = stack_environment(
            databases.create("sqlite"),
            redis.url,
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
            N3HUB_METRICS_TOKEN_FILE=str(token_file),
        )
        app = create_app(load_config(env))  # migrates the database before any process starts
        api_key = make_api_key(app)
        with app.app_context():
            db.engine.dispose()
        web, web_port = start_web(env, directory, workers=4)
        processes.append(web)
        processes.append(start_worker(env, directory, hostname="monitored"))
        prometheus, prometheus_url = start_prometheus(
            prometheus_config(web_port, token_file), directory
        )
        processes.append(prometheus)
        web_url = f"http://127.0.0.1:{web_port}"
        yield MonitoredStack(web_url, prometheus_url, metrics_dir, api_key, METRICS_TOKEN)
    finally:
        for process in reversed(processes):
            process.stop()


def process_messages(stack: MonitoredStack, count: int, prefix: str) -> None:
    """Create ``count`` messages over HTTP and wait until the worker has completed them."""
    before = stack.scrape()
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(
                lambda i: stack.request("POST", "/messages", {"content": f"{prefix} {i}"}),
                range(count),
            )
        )
    assert [status for status, _ in answers] == [201] * count, answers[:3]
    wait_completed(stack, before, count)


def wait_completed(stack: MonitoredStack, before: Samples, count: int) -> None:
    """Wait until ``count`` more messages have completed than at the scrape ``before``."""
    wait_for(
        lambda: (
            rise(before, stack.scrape(), "messages_processed_total", status="completed") == count
        ),
        timeout=30,
        interval=0.1,
        what=f"{count} more completed messages",
    )


def test_prometheus_scrapes_the_web_and_counts_the_processed_messages(
    stack: MonitoredStack,
) -> None:
    messages = 25
    before = total(stack.scrape(), "messages_processed_total", status="completed")
    process_messages(stack, messages, "scraped")
    wait_for(
        lambda: stack.query_value('up{job="web"}') == 1,
        timeout=20,
        interval=0.2,
        what="prometheus to scrape the web",
    )
    wait_for(
        lambda: (
            stack.query_value('sum(messages_processed_total{status="completed"})')
            == before + messages
        ),
        timeout=20,
        interval=0.2,
        what=f"prometheus to see {before + messages} completed messages",
    )
    # Worker-process metrics reach the web's /metrics through the shared directory.
    assert stack.query_value("sum(n3hub_processing_duration_seconds_count)") >= messages


def test_alert_rules_evaluate_without_errors_on_real_series(stack: MonitoredStack) -> None:
    def evaluated_rules() -> list[dict[str, Any]] | None:
        with urlopen(f"{stack.prometheus_url}/api/v1/rules", timeout=30) as response:
            groups = json.loads(response.read())["data"]["groups"]
        found = [rule for group in groups for rule in group["rules"]]
        return found if found and all(rule["health"] != "unknown" for rule in found) else None

    found = wait_for(evaluated_rules, timeout=20, interval=0.2, what="every rule to be evaluated")
    assert {rule["name"] for rule in found} == {
        rule["alert"]
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
    }
    errors = {rule["name"]: rule.get("lastError") for rule in found if rule["health"] != "ok"}
    assert errors == {}
    # An idle, healthy stack raises no alert, not even a pending one. (While messages
    # wait for their first batch, N3HubProcessingStalled may be pending for a moment.)
    wait_for(
        lambda: all(rule["state"] == "inactive" for rule in evaluated_rules() or [{"state": None}]),
        timeout=20,
        interval=0.2,
        what="every alert of an idle stack to be inactive",
    )


def test_every_dashboard_query_runs_on_real_series(stack: MonitoredStack) -> None:
    process_messages(stack, 5, "charted")
    assert stack.request("POST", "/messages", {})[0] == 400  # an api_errors_total series
    for expr in dashboard_queries():
        promql = expr.replace("$__rate_interval", "1m")
        if 'status=~"5.."' in expr:
            stack.query(promql)  # no request failed with a 5xx, so these are empty
            continue
        wait_for(
            lambda promql=promql: stack.query(promql),
            timeout=20,
            interval=0.2,
            what=f"data for {promql}",
        )


def test_metrics_add_up_across_gunicorn_and_celery_processes(stack: MonitoredStack) -> None:
    messages, lookups, misses = 40, 40, 40
    requests = messages + lookups + misses
    before = stack.scrape()

    def send(index: int) -> int:
        if index < messages:
            return stack.request("POST", "/messages", {"content": f"counted {index}"})[0]
        if index < messages + lookups:
            return stack.request("GET", "/messages/stats")[0]
        return stack.request("GET", f"/messages/{10**9 + index}")[0]

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(send, range(requests)))
    assert sorted(statuses) == sorted([201] * messages + [200] * lookups + [404] * misses)
    wait_completed(stack, before, messages)
    after = stack.scrape()
    assert served(after) - served(before) == requests
    assert rise(before, after, "api_errors_total", error_type="not_found") == misses
    # Counted in the Celery pool processes, read by the web from the shared directory.
    latency = "n3hub_message_latency_seconds_count"
    assert rise(before, after, latency, status="completed") == messages
    # Several Gunicorn workers served the requests; every scrape, whichever of them
    # answers it, sums them all.
    assert processes_serving_http(stack.metrics_dir) >= 2
    assert {served(stack.scrape()) for _ in range(8)} == {served(after)}

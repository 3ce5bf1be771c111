"""The monitoring files: Prometheus config, alert rules and their tests, the Grafana dashboard.

promtool validates the config and the rules and runs the rules' unit tests; the
dashboard's and the rules' queries may only name series the service really exposes.
Tests that need promtool skip without it, unless ``N3HUB_REQUIRE_PROMTOOL=1`` (CI),
which turns a missing binary into a failure (``.ci/run`` installs it there).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from app.config import PROJECT_ROOT
from tests.support.polling import wait_for
from tests.support.required import require_binary

PROMETHEUS_CONFIG = PROJECT_ROOT / "docker" / "prometheus.yaml"
ALERTS = PROJECT_ROOT / "docker" / "alerts.yaml"
ALERTS_TEST = PROJECT_ROOT / "docker" / "alerts_test.yaml"
DASHBOARD = PROJECT_ROOT / "grafana" / "dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEVERITIES = {"warning", "critical"}

# Series that Prometheus writes itself for every target, not the service.
PROMETHEUS_SERIES = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "inf", "nan"}
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}

_STRING = re.compile(r'"(?:\\.|[^"\\])*"' + r"|'(?:\\.|[^'\\])*'" + r"|`[^`]*`")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\boffset\s+-?[\w$]+")
_TOKEN = re.compile(
    r"(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?P<call>\s*\()?"
)


def require_prometheus_tool(name: str) -> str:
    """The path of ``name`` (promtool or prometheus), both from Debian's prometheus package."""
    return require_binary(name, "prometheus", "N3HUB_REQUIRE_PROMTOOL")


def promtool(*args: str) -> str:
    """Run promtool; fail the test with its output unless it succeeds."""
    done = subprocess.run(
        [require_prometheus_tool("promtool"), *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def read_yaml(path: Path) -> Any:
    """The parsed contents of a YAML file."""
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule in docker/alerts.yaml."""
    groups = read_yaml(ALERTS)["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel of the dashboard, those inside rows included."""
    panels = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_queries() -> list[str]:
    """The PromQL of every dashboard query, Grafana's variables still in place."""
    return [target["expr"] for panel in dashboard_panels() for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects, without functions, keywords or labels."""
    text = _STRING.sub('""', expr)
    for pattern in (_MATCHERS, _RANGE, _GROUPING, _OFFSET):
        text = pattern.sub(" ", text)
    names = set()
    for token in _TOKEN.finditer(text):
        name = token.group("name")
        if name and not token.group("call") and name.lower() not in PROMQL_KEYWORDS:
            names.add(name)
    return names


def exposed_series_names(exposition: str) -> set[str]:
    """Every series name a Prometheus text exposition has, or would have once observed."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        suffixes = SERIES_SUFFIXES.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
    return names


# --- promtool -------------------------------------------------------------------------------


def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    config = read_yaml(PROMETHEUS_CONFIG)
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == ["/etc/prometheus/alerts.yaml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["web"]["static_configs"] == [{"targets": ["web:5000"]}]
    assert jobs["worker"]["static_configs"] == [{"targets": ["worker:9808"]}]
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in jobs.values())
    # Both endpoints answer only the metrics token, the compose secret mounted here.
    token_file = tmp_path / "metrics_token"
    token_file.write_text("a-token\n")
    for job in jobs.values():
        assert job["authorization"] == {"credentials_file": "/run/secrets/metrics_token"}
        job["authorization"]["credentials_file"] = str(token_file)
    # The rules are mounted beside the config in the container; lay them out so here too.
    rule_files = []
    for mounted in config["rule_files"]:
        source = PROMETHEUS_CONFIG.parent / Path(mounted).name
        shutil.copy(source, tmp_path / source.name)
        rule_files.append(source.name)
    config["rule_files"] = rule_files
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    output = promtool("check", "config", str(copy))
    assert "SUCCESS: 1 rule files found" in output, output


def test_alert_rules_are_valid() -> None:
    output = promtool("check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(alert_rules())} rules found" in output, output


def test_alert_rule_unit_tests_pass() -> None:
    output = promtool("test", "rules", str(ALERTS_TEST))
    assert "SUCCESS" in output, output


# --- the rules and their tests, as files --------------------------------------------------


def test_every_alert_has_a_duration_a_severity_and_annotations() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), names
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]


def test_alerts_cover_errors_latency_backlog_stalls_failures_and_liveness() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    used = {name for expr in exprs.values() for name in metric_names(expr)}
    assert {
        "http_requests_total",
        "http_request_latency_seconds_bucket",
        "n3hub_messages",
        "n3hub_backlog_oldest_age_seconds",
        "n3hub_worker_last_progress_timestamp_seconds",
        "n3hub_worker_heartbeat_timestamp_seconds",
        "messages_processed_total",
        "up",
    } <= used
    assert any("histogram_quantile" in expr for expr in exprs.values())


def test_every_alert_is_tested_firing_and_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in read_yaml(ALERTS_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), "alerts no test makes fire"
    assert names - quiet == set(), "alerts no test keeps quiet"
    assert fired | quiet <= names, "tests of alerts that do not exist"


# --- the dashboard ------------------------------------------------------------------------


def test_dashboard_is_an_importable_model_on_a_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "n3hub"
    assert dashboard["title"] == "N3Hub"
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert "__inputs" not in dashboard
    assert dashboard.get("id") is None
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert variable["type"] == "datasource"
    assert variable["query"] == "prometheus"
    panels = dashboard_panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat"}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard_panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    titles = {panel["title"] for panel in dashboard_panels()}
    assert {
        "Request rate by endpoint",
        "Error rate",
        "Latency p50 / p95 / p99",
        "Processing throughput",
        "Messages by status",
        "Backlog oldest age",
        "Failures, retries and recoveries",
        "Processing duration",
        "Created → completed latency",
        "Worker last progress age",
        "Broker queue length",
        "Messages in flight per worker",
        "Slot utilisation",
    } <= titles
    used = {name for expr in dashboard_queries() for name in metric_names(expr)}
    assert {"api_errors_total", "n3hub_message_latency_seconds_bucket"} <= used


# --- the names in the queries against the service's /metrics -------------------------------


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (endpoint, le) (rate(a_bucket{status=~"5..", x="b{c}"}'
        "[$__rate_interval] offset 5m))) / on () group_left (d) b_total > bool 1e3"
        " and time() - max without (job) (c:recorded) unless d[5m:1m]"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c:recorded", "d"}


def test_dashboard_and_alerts_query_only_series_the_service_exposes(
    worker_client: FlaskClient,
) -> None:
    client = worker_client
    response = client.post("/messages", json={"content": "measured"})
    assert response.status_code == 201, response.get_json()
    message_id = response.get_json()["id"]
    wait_for(
        lambda: client.get(f"/messages/{message_id}").get_json()["status"] == "completed",
        timeout=30,
        what=f"message {message_id} to complete",
    )
    assert client.post("/messages", json={}).status_code == 400  # an api_errors_total series
    exposition = client.get("/metrics").get_data(as_text=True)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }
    assert samples[("messages_processed_total", (("status", "completed"),))] == 1
    exposed = exposed_series_names(exposition) | PROMETHEUS_SERIES
    queries = {"alerts.yaml": [rule["expr"] for rule in alert_rules()]}
    queries["dashboard.json"] = dashboard_queries()
    for source, exprs in queries.items():
        used = {name for expr in exprs for name in metric_names(expr)}
        assert len(used) >= 8, (source, used)
        assert used - exposed == set(), f"{source} queries series /metrics does not expose"

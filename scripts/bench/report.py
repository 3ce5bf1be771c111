"""Statistics, targets and the two forms of the results: a table and JSON."""

from __future__ import annotations

import json
import operator
import os
import platform
import sqlite3
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Path_ = tuple[str, ...]


def percentile(values: Iterable[float], share: float) -> float | None:
    """The ``share``-th percentile (0-100) by linear interpolation; None without values."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * share / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def distribution_ms(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, median, p99 and maximum of millisecond values."""
    return {
        "count": len(values),
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values) if values else None,
    }


def lookup(results: Mapping[str, Any], path: Path_) -> Any:
    """The value at ``path`` in nested mappings, or None where any step is missing."""
    value: Any = results
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


@dataclass(frozen=True)
class Target:
    """A goal of the specification: the figure at ``path`` compared with ``limit``."""

    path: Path_
    compare: Callable[[float, float], bool]
    limit: float
    text: str

    def verdict(self, results: Mapping[str, Any]) -> str:
        value = lookup(results, self.path)
        if value is None:
            return "n/a"
        return "PASS" if self.compare(value, self.limit) else "FAIL"


READ_ENDPOINTS = ("GET /messages", "GET /messages?status=failed", "GET /messages/stats")
CONSOLE_PAGES = (
    "overview",
    "messages",
    "failed messages",
    "messages created on one day",
    "one message",
)

TARGETS = [
    Target(("ingest", "ratio_to_ceiling"), operator.ge, 0.5, ">= 0.50"),
    Target(("ingest_many", "ratio_to_ceiling"), operator.ge, 0.5, ">= 0.50"),
    Target(("ingest_processing", "ratio_to_ceiling"), operator.ge, 0.5, ">= 0.50"),
    Target(("drain", "first_to_last_rate"), operator.ge, 20000, ">= 20000"),
    Target(("processing", "sync", "rate"), operator.ge, 3000, ">= 3000"),
    Target(("processing", "sync_to_celery"), operator.ge, 2.5, ">= 2.5"),
    Target(("processing", "async", "rate"), operator.ge, 5000, ">= 5000"),
    Target(("processing", "mixed", "p99_ms"), operator.le, 1000, "<= 1000"),
    Target(("latency", "50", "p50_ms"), operator.le, 10, "<= 10"),
    Target(("latency", "50", "p99_ms"), operator.le, 50, "<= 50"),
    *(Target(("reads", path, "p50_ms"), operator.le, 20, "<= 20") for path in READ_ENDPOINTS),
    *(
        Target(("reads", "console", page, "p50_ms"), operator.le, 50, "<= 50")
        for page in CONSOLE_PAGES
    ),
]


@dataclass(frozen=True)
class Row:
    """One line of the table: a label and where its figure is in the results."""

    label: str
    path: Path_
    decimals: int = 0


def _latency_rows(rate: str) -> list[Row]:
    figures = ("latency", rate)
    return [
        Row(f"paced sender @ {rate}/s, achieved (msg/s)", (*figures, "achieved_rate")),
        Row(f"latency created->completed @ {rate}/s p50 (ms)", (*figures, "p50_ms"), 1),
        Row(f"latency created->completed @ {rate}/s p99 (ms)", (*figures, "p99_ms"), 1),
        Row("  of which created->claimed p50 (ms)", (*figures, "created_to_claimed", "p50_ms"), 1),
        Row(
            "  of which claimed->completed p50 (ms)",
            (*figures, "claimed_to_completed", "p50_ms"),
            1,
        ),
    ]


def _processing_rows() -> list[Row]:
    """Each waiting-processor figure with its concurrency limit (slots / 0.05 s) beside it."""
    limit = "  concurrency limit, slots / 0.05 s (msg/s)"
    mixed = ("processing", "mixed")
    rows = []
    for key, label in (
        ("sync", "50 ms processor, time.sleep (msg/s)"),
        ("async", "50 ms processor, await asyncio.sleep (msg/s)"),
        ("celery_gevent", "plain Celery, -P gevent -c 100, 50 ms tasks (tasks/s)"),
    ):
        rows += [Row(label, ("processing", key, "rate")), Row(limit, ("processing", key, "limit"))]
    return [
        *rows,
        Row("50 ms processor / plain Celery", ("processing", "sync_to_celery"), 2),
        *(
            Row(f"mixed, 1 % take 5 s: fast created->completed {q} (ms)", (*mixed, f"{q}_ms"))
            for q in ("p50", "p99")
        ),
        Row(limit, ("processing", "mixed", "limit")),
    ]


def _read_rows(label: str, *path: str) -> list[Row]:
    return [
        Row(f"{label} p50 (ms)", ("reads", *path, "p50_ms"), 2),
        Row(f"{label} p99 (ms)", ("reads", *path, "p99_ms"), 2),
    ]


def _ingest_rows(
    connections: Any, ceiling: str, ingest: str, processing: bool = False
) -> list[Row]:
    at = f"@ {connections} conn." + (", worker processing" if processing else "")
    cpu = "web_cpu_ms_per_request"
    rows = [
        Row(f"hello-world ceiling {at} (req/s)", (ceiling, "per_second")),
        Row(f"POST /messages, durable, {at} (req/s)", (ingest, "per_second")),
        Row(f"  web CPU per request: hello-world {at} (ms)", (ceiling, cpu), 2),
        Row(f"  web CPU per request: POST {at} (ms)", (ingest, cpu), 2),
    ]
    if processing:
        rows.append(Row("  worker CPU per request (ms)", (ingest, "worker_cpu_ms_per_request"), 2))
    return [*rows, Row(f"ingest / ceiling {at}", (ingest, "ratio_to_ceiling"), 3)]


def _rows(run: Mapping[str, Any]) -> list[Row]:
    """The table's lines; the ingest ones name the connection counts this run measured."""
    many = run.get("many_connections")
    connections = run.get("connections", "?")
    return [
        *_ingest_rows(connections, "ceiling", "ingest"),
        *(_ingest_rows(many, "ceiling_many", "ingest_many") if many else []),
        *_ingest_rows(connections, "ceiling_processing", "ingest_processing", processing=True),
        *ROWS,
    ]


ROWS = [
    Row("batch ingest, POST /messages/batch (msg/s)", ("batch_ingest", "messages_per_second")),
    Row("drain, worker start -> all done (msg/s)", ("drain", "wall_rate")),
    Row("drain, first -> last completion (msg/s)", ("drain", "first_to_last_rate")),
    Row("drain, worker CPU per message (ms)", ("drain", "worker_cpu_ms_per_message"), 3),
    *_latency_rows("50"),
    *_latency_rows("500"),
    *_processing_rows(),
    Row("messages stored during the reads", ("reads", "table", "rows")),
    *(row for endpoint in READ_ENDPOINTS for row in _read_rows(f"read {endpoint}", endpoint)),
    *(
        row
        for page in CONSOLE_PAGES
        for row in _read_rows(f"console page, {page},", "console", page)
    ),
]


def _format(value: Any, decimals: int) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{decimals}f}"


def table(results: Mapping[str, Any]) -> str:
    """The results as a fixed-width text table with a verdict per target."""
    targets = {target.path: target for target in TARGETS}
    run = results.get("run", {})
    lines_of = _rows(run)
    width = max(len(row.label) for row in lines_of)
    host = run.get("machine", {})
    lines = [
        f"N3Hub bench on {run.get('database', '?')}: {host.get('nproc')} CPUs"
        f" ({host.get('cpu_model')}), load from {run.get('load_tool', '?')}",
        f"{'figure':<{width}}  {'value':>10}  {'target':<8}  verdict",
    ]
    lines.append("-" * len(lines[-1]))
    for row in lines_of:
        target = targets.get(row.path)
        value = _format(lookup(results, row.path), row.decimals)
        goal, verdict = (target.text, target.verdict(results)) if target else ("", "")
        lines.append(f"{row.label:<{width}}  {value:>10}  {goal:<8}  {verdict}".rstrip())
    return "\n".join(lines)


def verdicts(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each target with its figure and verdict, for the JSON file."""
    return [
        {
            "figure": ".".join(target.path),
            "value": lookup(results, target.path),
            "target": target.text,
            "verdict": target.verdict(results),
        }
        for target in TARGETS
    ]


def machine() -> dict[str, Any]:
    """The facts about this machine that the figures depend on."""
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        models = [line for line in lines if line.startswith("model name")]
        cpu = models[0].split(":", 1)[1].strip() if models else cpu
    try:
        memory = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.strip()
    except OSError:
        memory = ""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "free_h": memory,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
    }


def write_json(results: Mapping[str, Any], path: Path) -> None:
    """Write the results with their verdicts to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {**results, "targets": verdicts(results)}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")

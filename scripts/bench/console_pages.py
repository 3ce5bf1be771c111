"""The console's pages, timed in the web's process with the reads phase's million messages.

Each page is served by the app through Flask's test client, logged in with a key
of the admin scope, so the figures are the app's own time for the page: its
queries and its template, without the network or Gunicorn.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

from flask import Flask

from app import lifecycle, queries
from app.auth.keys import Scope, create_key
from app.models import DEFAULT_TENANT
from scripts.bench.report import CONSOLE_PAGES, distribution_ms


def _paths(app: Flask) -> dict[str, str]:
    """Each page of :data:`CONSOLE_PAGES` as a path, with its times and ids filled in."""
    now = lifecycle.utcnow()
    day = [(now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M") for days in (10, 9)]
    with app.app_context():
        newest = queries.list_messages(1, None, None).messages
    middle = newest[0]["id"] // 2 if newest else 1
    paths = {
        "overview": "/console/",
        "messages": "/console/messages",
        "failed messages": "/console/messages?status=failed",
        "messages created on one day": f"/console/messages?since={day[0]}&until={day[1]}",
        "one message": f"/console/messages/{middle}",
    }
    assert set(paths) == set(CONSOLE_PAGES)
    return paths


def measure_console(app: Flask, samples: int, say: Any, warmup: int = 5) -> dict[str, Any]:
    """Median and p99 of each console page, after a log-in."""
    with app.app_context():
        key, _ = create_key("bench-console", DEFAULT_TENANT, frozenset(Scope))
    browser = app.test_client()
    login = browser.get("/console/login").get_data(as_text=True)
    token = re.search(r'name="csrf" value="([^"]+)"', login).group(1)
    browser.post("/console/login", data={"api_key": key, "csrf": token})
    results: dict[str, Any] = {}
    for page, path in _paths(app).items():
        timings = []
        for sample in range(warmup + samples):
            started = time.perf_counter()
            status = browser.get(path).status_code
            if status != 200:
                raise RuntimeError(f"console page {path} answered {status}")
            if sample >= warmup:
                timings.append((time.perf_counter() - started) * 1000)
        results[page] = distribution_ms(timings)
        say(
            f"console: {page}: p50 {results[page]['p50_ms']:.2f} ms,"
            f" p99 {results[page]['p99_ms']:.2f} ms"
        )
    return results

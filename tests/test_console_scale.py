"""The console's pages answer within 50 ms with a million messages stored, on real databases."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import insert

from app import activity, lifecycle
from app.database import write_transaction
from app.models import ThroughputSnapshot
from scripts.bench.seed import StatusMix, insert_messages
from tests.conftest import make_api_key
from tests.test_console import log_in

ROWS = 1_000_000
SPACING_SECONDS = 2.0  # a million messages over the last three weeks, as in the benchmark
BUDGET_MS = 50


def _an_hour_of_activity() -> None:
    this_minute = lifecycle.utcnow().replace(second=0, microsecond=0)
    rows = [
        {
            "minute": this_minute - timedelta(minutes=n),
            "completed": 1000 * (120 - n),
            "failed": 120 - n,
        }
        for n in range(120, 0, -1)
    ]
    with write_transaction() as connection:
        connection.execute(insert(ThroughputSnapshot), rows)
    activity.beat(range(1000, 1008), 500, lifecycle.utcnow())


@pytest.mark.slow
def test_pages_answer_within_budget_with_a_million_messages(isolated_app: Flask) -> None:
    insert_messages(isolated_app, ROWS, StatusMix(completed=90, failed=5), SPACING_SECONDS)
    _an_hour_of_activity()
    browser = isolated_app.test_client()
    assert log_in(browser, make_api_key(isolated_app))[0] == 302
    ten_days_ago = (lifecycle.utcnow() - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M")
    nine_days_ago = (lifecycle.utcnow() - timedelta(days=9)).strftime("%Y-%m-%dT%H:%M")
    pages = [
        "/console/",
        "/console/messages",
        "/console/messages?status=failed",
        "/console/messages?cursor=1000",
        f"/console/messages?since={ten_days_ago}&until={nine_days_ago}",
        f"/console/messages?status=failed&since={ten_days_ago}&until={nine_days_ago}",
        f"/console/messages?status=pending&until={ten_days_ago}",
        "/console/messages?since=2000-01-01T00:00&until=2000-01-02T00:00",
        "/console/messages/500000",
    ]
    slow = {}
    for page in pages:
        timings = []
        for _ in range(7):
            started = time.perf_counter()
            response = browser.get(page)
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, page
        # The best run: other load on the machine only adds time, while a page that
        # read the table (a count, a scan) would pass the budget on every run.
        if min(timings) > BUDGET_MS:
            slow[page] = min(timings)
    assert not slow, f"pages over {BUDGET_MS} ms (best of 7): {slow}"

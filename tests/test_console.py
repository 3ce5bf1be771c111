"""The console's access rules over HTTP: nothing without a login, CSRF on every form."""

from __future__ import annotations

import html
import os
import re
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, insert, update

from app import activity, lifecycle
from app.auth.keys import Scope, create_key, revoke_key
from app.console import views
from app.console.session import COOKIE
from app.database import write_transaction
from app.lifecycle import create_batch
from app.models import Message, ThroughputSnapshot, WorkerHeartbeat
from tests.conftest import make_api_key

PAGES = ["/console/", "/console/messages", "/console/messages/1", "/console/redrive"]
FORMS = [
    "/console/logout",
    "/console/messages/1/retry",
    "/console/messages/1/cancel",
    "/console/redrive",
]


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def log_in(browser: FlaskClient, key: str) -> tuple[int, str]:
    token = csrf_of(browser.get("/console/login").get_data(as_text=True))
    response = browser.post("/console/login", data={"api_key": key, "csrf": token})
    return response.status_code, token


@pytest.fixture
def browser(app: Flask, client: FlaskClient) -> FlaskClient:
    """A client with no API key: a browser, logged out."""
    return app.test_client()


@pytest.mark.parametrize("path", PAGES)
def test_every_page_sends_a_stranger_to_the_login(browser: FlaskClient, path: str) -> None:
    response = browser.get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == "/console/login"


@pytest.mark.parametrize("path", FORMS)
def test_every_form_needs_the_sessions_csrf_token(
    browser: FlaskClient, app: Flask, path: str
) -> None:
    assert log_in(browser, make_api_key(app))[0] == 302
    refused = browser.post(path, data={"csrf": "forged"})
    assert refused.status_code == 400
    assert browser.post(path).status_code == 400
    assert browser.get("/console/").status_code == 200  # still logged in


def test_login_sets_a_strict_http_only_cookie_and_logout_clears_it(
    browser: FlaskClient, app: Flask
) -> None:
    status, _ = log_in(browser, make_api_key(app))
    assert status == 302
    cookie = browser.get_cookie(COOKIE, path="/console")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Strict"
    token = csrf_of(browser.get("/console/").get_data(as_text=True))
    assert browser.post("/console/logout", data={"csrf": token}).status_code == 302
    assert browser.get("/console/").status_code == 302


def test_only_an_admin_key_logs_in(browser: FlaskClient, app: Flask) -> None:
    reader = make_api_key(app, scopes=frozenset({Scope.READ, Scope.SUBMIT}))
    assert log_in(browser, reader)[0] == 401
    assert log_in(browser, "n3h_not-a-key")[0] == 401
    assert browser.get("/console/").status_code == 302


def test_revoking_the_key_ends_its_sessions(browser: FlaskClient, app: Flask) -> None:
    with app.app_context():
        key, stored = create_key("console", "default", frozenset(Scope))
    assert log_in(browser, key)[0] == 302
    assert browser.get("/console/").status_code == 200
    with app.app_context():
        revoke_key(stored.id)
    assert browser.get("/console/").status_code == 302


def test_a_tampered_cookie_is_no_login(browser: FlaskClient, app: Flask) -> None:
    assert log_in(browser, make_api_key(app))[0] == 302
    value = browser.get_cookie(COOKIE, path="/console").value
    browser.set_cookie(COOKIE, value[:-2] + "xx", path="/console")
    assert browser.get("/console/").status_code == 302


def test_pages_answer_logged_in(browser: FlaskClient, app: Flask, client: FlaskClient) -> None:
    created = client.post(
        "/messages", json={"content": "<b>shown as text</b>", "delay_seconds": 60}
    )
    message_id = created.get_json()["id"]
    assert log_in(browser, make_api_key(app))[0] == 302
    overview = browser.get("/console/").get_data(as_text=True)
    assert 'id="count-pending"' in overview
    listed = browser.get("/console/messages?status=pending").get_data(as_text=True)
    assert f">{message_id}</a>" in listed
    page = browser.get(f"/console/messages/{message_id}").get_data(as_text=True)
    assert "&lt;b&gt;shown as text&lt;/b&gt;" in page and "<b>shown" not in page
    assert browser.get("/console/messages?go=abc").status_code == 400
    assert browser.get("/console/messages?status=nope").status_code == 400
    assert browser.get("/console/messages/424242").status_code == 404


def test_overview_charts_the_last_hour_and_lists_live_workers(
    browser: FlaskClient, app: Flask
) -> None:
    now = lifecycle.utcnow()
    with app.app_context(), write_transaction() as connection:
        connection.execute(delete(ThroughputSnapshot))
        connection.execute(delete(WorkerHeartbeat))
        start = now.replace(second=0, microsecond=0) - timedelta(minutes=3)
        connection.execute(
            insert(ThroughputSnapshot),
            [
                {"minute": start, "completed": 100, "failed": 0},
                {"minute": start + timedelta(minutes=1), "completed": 160, "failed": 20},
                {"minute": start + timedelta(minutes=2), "completed": 190, "failed": 20},
            ],
        )
    with app.app_context():
        activity.beat([os.getpid()], 500, now)
        activity.report_in_flight(12)
    assert log_in(browser, make_api_key(app))[0] == 302
    page = browser.get("/console/").get_data(as_text=True)
    assert "90 completed and 20 failed (18.2% failed)" in page
    completed_chart = page.split('id="chart-completed"')[1].split("</svg>")[0]
    assert completed_chart.count("<rect") == 2 and "60 completed, 20 failed" in completed_chart
    failure_chart = page.split('id="chart-failure-rate"')[1].split("</svg>")[0]
    assert "25.0% failed of 80" in failure_chart and "0.0% failed of 30" in failure_chart
    assert "1 worker process alive; 12 of 500 slots in use." in page
    assert activity.process_name() in page


def test_messages_filter_by_created_time_and_keep_the_filter_across_pages(
    browser: FlaskClient, app: Flask, client: FlaskClient
) -> None:
    ids = [client.post("/messages", json={"content": f"m{n}"}).get_json()["id"] for n in range(4)]
    at = datetime(2020, 5, 1, 12, 0, tzinfo=UTC)
    with app.app_context(), write_transaction() as connection:
        for n, message_id in enumerate(ids):
            created = at + timedelta(minutes=n)
            connection.execute(
                update(Message).where(Message.id == message_id).values(created_at=created)
            )
    assert log_in(browser, make_api_key(app))[0] == 302
    listed = browser.get(
        "/console/messages?since=2020-05-01T12:01&until=2020-05-01T12:03:00Z"
    ).get_data(as_text=True)
    shown = [int(found) for found in re.findall(r'class="message-link">(\d+)<', listed)]
    assert shown == [ids[2], ids[1]]
    assert 'value="2020-05-01T12:01:00"' in listed and 'value="2020-05-01T12:03:00"' in listed
    assert browser.get("/console/messages?since=yesterday").status_code == 400
    refused = browser.get("/console/messages?since=2020-05-02T00:00&until=2020-05-01T00:00")
    assert refused.status_code == 400


def test_the_next_page_link_keeps_every_filter(
    browser: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "PAGE_SIZE", 1)
    with app.app_context():
        create_batch(["a", "b"], None, "default")
    assert log_in(browser, make_api_key(app))[0] == 302
    page = browser.get("/console/messages?status=pending&since=2020-01-01T00:00").get_data(
        as_text=True
    )
    link = html.unescape(re.search(r'id="next-page" href="([^"]+)"', page).group(1))
    assert "status=pending" in link and "since=2020-01-01T00:00:00" in link
    assert browser.get(link).status_code == 200

"""The console's access rules over HTTP: nothing without a login, CSRF on every form."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.auth.keys import Scope, create_key, revoke_key
from app.console.session import COOKIE
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

"""The console driven in headless Chromium, as an operator would, against Gunicorn and a worker.

Needs Debian's ``chromium`` and ``chromium-driver``; without them these tests
skip, saying so, unless ``N3HUB_REQUIRE_CHROMIUM=1`` (CI), which fails instead.
Screenshots go to ``var/screenshots/``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, insert, update

from app import lifecycle, tallies
from app.database import write_transaction
from app.models import DEFAULT_TENANT, Message, ThroughputSnapshot
from tests.conftest import app_key, start_web
from tests.support.polling import wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1200,900",
)


def _require_chromium() -> None:
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    reason = (
        "browser tests skipped: Debian's chromium and chromium-driver are not installed "
        "(apt-get install -y chromium chromium-driver)"
    )
    if os.environ.get("N3HUB_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"N3HUB_REQUIRE_CHROMIUM=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    _require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(5)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def console(
    worker_stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The console's base URL, served by Gunicorn on the database the session's worker serves."""
    web, port = start_web(worker_stack_env, tmp_path_factory.mktemp("console-web"), workers=1)
    yield f"http://127.0.0.1:{port}/console"
    web.stop()


def by_id(driver: object, element_id: str) -> object:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def follow(driver: object, by: str, value: str) -> None:
    """Click what loads a new page, and wait until that page has replaced this one.

    The element is found once the page has loaded; a click on one that the page
    detached meanwhile did nothing, and is tried again.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 30)
    wait.until(lambda page: page.execute_script("return document.readyState") == "complete")
    old_page = driver.find_element(By.TAG_NAME, "html")
    wait.until(lambda page: _done(lambda: page.find_element(by, value).click()))
    wait.until(lambda _page: not _done(old_page.is_enabled))


def _done(action: Callable[[], object]) -> bool:
    """Whether ``action`` ran; False when its element was detached from the page."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        action()
    except StaleElementReferenceException:
        return False
    except WebDriverException as error:
        # Chromium's answer for a node of a page being replaced, instead of a stale element.
        if "does not belong to the document" not in str(error):
            raise
        return False
    return True


def shoot(driver: object, name: str) -> None:
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def log_in(driver: object, console: str, key: str) -> None:
    driver.get(f"{console}/login")
    by_id(driver, "api_key").send_keys(key)
    follow(driver, "id", "login")
    wait_for(lambda: driver.current_url.rstrip("/") == console, what="the overview")


def scheduled(client: FlaskClient, content: str) -> int:
    response = client.post("/messages", json={"content": content, "delay_seconds": 3600})
    assert response.status_code == 201
    return response.get_json()["id"]


def failed(client: FlaskClient, app: Flask, content: str) -> int:
    """A message that failed (written directly; its next run succeeds)."""
    message_id = scheduled(client, content)
    with app.app_context(), write_transaction() as connection:
        connection.execute(
            update(Message)
            .where(Message.id == message_id)
            .values(
                status="failed", attempts=3, last_error="planned", completed_at=Message.created_at
            )
        )
        tallies.apply(connection, {(DEFAULT_TENANT, "pending"): -1, (DEFAULT_TENANT, "failed"): 1})
    return message_id


def status_shown(driver: object) -> str:
    return by_id(driver, "status").text


def test_log_in_filter_open_and_retry_a_failed_message(
    browser: object, console: str, worker_client: FlaskClient, worker_app: Flask
) -> None:
    from selenium.webdriver.support.ui import Select

    message_id = failed(worker_client, worker_app, "to retry from the console")
    scheduled(worker_client, "waiting for later")
    log_in(browser, console, app_key(worker_app))
    assert by_id(browser, "count-failed").text.endswith("1")
    shoot(browser, "overview")
    browser.get(f"{console}/messages")
    Select(by_id(browser, "status-filter")).select_by_value("failed")
    follow(browser, "id", "filter")
    rows = by_id(browser, "messages").text
    assert "to retry from the console" in rows and "waiting for later" not in rows
    shoot(browser, "messages-failed")
    follow(browser, "link text", str(message_id))
    assert status_shown(browser) == "failed"
    follow(browser, "id", "retry")
    assert "retried" in by_id(browser, "done").text

    def completed() -> bool:
        browser.refresh()
        shown: list[str] = []  # empty when the refreshed page was still replacing the last
        return _done(lambda: shown.append(status_shown(browser))) and shown == ["completed"]

    wait_for(completed, timeout=30, interval=0.3, what="the retried message to complete")
    assert '"characters"' in by_id(browser, "result").text
    shoot(browser, "message-completed")


def test_cancel_a_scheduled_message_and_go_to_it_by_id(
    browser: object, console: str, worker_client: FlaskClient, worker_app: Flask
) -> None:
    message_id = scheduled(worker_client, "to cancel")
    log_in(browser, console, app_key(worker_app))
    browser.get(f"{console}/messages")
    by_id(browser, "go").send_keys(str(message_id))
    follow(browser, "id", "go-button")
    assert status_shown(browser) == "pending"
    assert by_id(browser, "field-deliver_at").text != "—"
    follow(browser, "id", "cancel")
    assert status_shown(browser) == "cancelled"
    assert worker_client.get(f"/messages/{message_id}").get_json()["status"] == "cancelled"
    shoot(browser, "message-cancelled")


def test_bulk_redrive_asks_for_confirmation(
    browser: object, console: str, worker_client: FlaskClient, worker_app: Flask
) -> None:
    ids = [failed(worker_client, worker_app, f"redrive {n}") for n in range(2)]
    log_in(browser, console, app_key(worker_app))
    browser.get(f"{console}/redrive")
    browser.execute_script("document.getElementById('since').value = '2020-01-01T00:00'")
    follow(browser, "id", "review")
    assert all(worker_client.get(f"/messages/{i}").get_json()["status"] == "failed" for i in ids)
    follow(browser, "id", "confirm")
    assert by_id(browser, "redriven").text.startswith("2 message")
    shoot(browser, "redrive-done")
    wait_for(
        lambda: all(
            worker_client.get(f"/messages/{i}").get_json()["status"] == "completed" for i in ids
        ),
        what="the redriven messages to complete",
    )


def an_hour_of_throughput(app: Flask) -> None:
    """Snapshots for the hour before this minute: a varying flow with a burst of failures.

    The worker's own sweep writes this minute's snapshot; the hour before it
    would take an hour to record, so it is written here.
    """
    this_minute = lifecycle.utcnow().replace(second=0, microsecond=0)
    rows, completed, failed = [], 0, 0
    for n in range(60, 0, -1):
        minute = this_minute - timedelta(minutes=n)
        rows.append({"minute": minute, "completed": completed, "failed": failed})
        completed += int(1200 + 500 * math.sin(n / 6))
        failed += 40 if 20 <= n <= 26 else 3
    with app.app_context(), write_transaction() as connection:
        connection.execute(
            delete(ThroughputSnapshot).where(ThroughputSnapshot.minute < this_minute)
        )
        connection.execute(insert(ThroughputSnapshot), rows)


def test_overview_charts_the_last_hour_and_shows_the_worker(
    browser: object, console: str, worker_client: FlaskClient, worker_app: Flask
) -> None:
    from selenium.webdriver.common.by import By

    for n in range(3):
        assert worker_client.post("/messages", json={"content": f"done {n}"}).status_code == 201
    failed(worker_client, worker_app, "failed for good")
    scheduled(worker_client, "tomorrow's")
    wait_for(
        lambda: worker_client.get("/messages/stats").get_json()["completed"] == 3,
        what="three messages to complete",
    )
    an_hour_of_throughput(worker_app)
    log_in(browser, console, app_key(worker_app))
    bars = browser.find_elements(By.CSS_SELECTOR, "#chart-completed rect")
    assert len(bars) >= 59  # this minute's differences, up to the worker's own snapshot
    assert all(bar.size["height"] > 0 for bar in bars[:59])
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-failure-rate rect")
    assert "failed" in by_id(browser, "hour-totals").text
    assert "alive" in by_id(browser, "workers-summary").text
    assert by_id(browser, "workers").text.count("s ago") >= 1
    browser.set_window_size(1200, 1000)  # the whole overview in one screenshot
    try:
        shoot(browser, "overview-activity")
    finally:
        browser.set_window_size(1200, 900)


def test_filter_messages_by_created_time(
    browser: object, console: str, worker_client: FlaskClient, worker_app: Flask
) -> None:
    old = scheduled(worker_client, "from 2020")
    scheduled(worker_client, "from today")
    with worker_app.app_context(), write_transaction() as connection:
        connection.execute(
            update(Message)
            .where(Message.id == old)
            .values(created_at=datetime(2020, 3, 1, 10, 30, tzinfo=UTC))
        )
    log_in(browser, console, app_key(worker_app))
    browser.get(f"{console}/messages")
    browser.execute_script(
        "document.getElementById('since').value = '2020-03-01T10:00';"
        "document.getElementById('until').value = '2020-03-01T11:00';"
    )
    follow(browser, "id", "filter")
    rows = by_id(browser, "messages").text
    assert "from 2020" in rows and "from today" not in rows
    assert by_id(browser, "since").get_attribute("value").startswith("2020-03-01T10:00")
    shoot(browser, "messages-created-range")


def test_logout_ends_the_session(browser: object, console: str, worker_app: Flask) -> None:
    log_in(browser, console, app_key(worker_app))
    follow(browser, "id", "logout")
    wait_for(lambda: browser.current_url.endswith("/console/login"), what="the login page")
    browser.get(f"{console}/messages")
    assert browser.current_url.endswith("/console/login")

"""Hostile input stays bounded: content length, JSON forms, numbers, result and page sizes."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import make_url

from app import create_app
from app.config import load_config
from app.extensions import db
from app.lifecycle import ClaimedMessage
from app.worker.outcomes import run_processor
from tests.conftest import keyed_client, stack_environment
from tests.support.processes import RedisServer

JSON = "application/json"


def stored(client: FlaskClient) -> int:
    return client.get("/messages/stats").get_json()["total"]


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data()[:200]
    assert response.get_json()["error"]["code"] == code
    return response.get_json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        '\ufeff{"content": "bom"}'.encode(),
        '{"content": "utf16"}'.encode("utf-16"),
        '{"content": "utf16le"}'.encode("utf-16-le"),
        '{"content": "utf32"}'.encode("utf-32"),
        b'{"content": "x", "n": NaN}',
        b'{"content": "x", "n": Infinity}',
        b'{"content": "x", "n": -Infinity}',
        b'{"content": "\xff\xfe"}',
    ],
)
def test_bodies_that_are_not_utf8_json_are_400(client: FlaskClient, body: bytes) -> None:
    for path in ("/messages", "/messages/batch"):
        assert_error(client.post(path, data=body, content_type=JSON), 400, "invalid_json")
    assert stored(client) == 0


def test_content_longer_than_the_limit_is_refused(client: FlaskClient, app: Flask) -> None:
    limit = app.config["MAX_CONTENT_CHARS"]
    too_long = "é" * (limit + 1)
    error = assert_error(
        client.post("/messages", json={"content": too_long}), 400, "validation_error"
    )
    assert error["details"] == {"field": "content", "max_characters": limit}
    batch = {"messages": [{"content": "fine"}, {"content": too_long}]}
    error = assert_error(client.post("/messages/batch", json=batch), 400, "validation_error")
    assert error["details"]["field"] == "messages[1].content"
    assert stored(client) == 0
    assert client.post("/messages", json={"content": "é" * limit}).status_code == 201


@pytest.mark.parametrize("digits", [20, 5000, 100_000])
def test_long_numbers_are_4xx_never_converted(client: FlaskClient, digits: int) -> None:
    number = "9" * digits
    for query in ("limit", "cursor"):
        error = assert_error(client.get(f"/messages?{query}={number}"), 400, "validation_error")
        assert len(error["details"]["got"]) <= 32
    assert_error(client.get(f"/messages/{number}"), 404, "not_found")
    assert_error(client.post(f"/messages/{number}/retry"), 404, "not_found")


def test_a_result_over_the_limit_fails_its_message_with_the_reason() -> None:
    message = ClaimedMessage(id=1, content="x", attempts=1, created_at=datetime.now(UTC))
    outcome = run_processor(lambda _message: {"blob": "y" * 2000}, message, 1000)
    assert outcome.permanent and not outcome.succeeded
    assert outcome.error == (
        "result too large: 2012 bytes of JSON, over N3HUB_MAX_RESULT_BYTES=1000"
    )
    assert run_processor(lambda _message: {"small": 1}, message, 1000).succeeded


@pytest.fixture
def small_pages(fresh_database_url: str, redis_server: RedisServer) -> Iterator[Flask]:
    env = stack_environment(fresh_database_url, redis_server.url, N3HUB_MAX_RESPONSE_BYTES="5000")
    app = create_app(load_config(env))
    yield app
    with app.app_context():
        db.engine.dispose()


def test_pages_end_by_bytes_and_the_cursor_continues(small_pages: Flask) -> None:
    client = keyed_client(small_pages)
    created = [
        client.post("/messages", json={"content": f"{i} " + "z" * 1500}).get_json()["id"]
        for i in range(7)
    ]
    seen, cursor, pages = [], None, 0
    while True:
        query = "?limit=200" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(f"/messages{query}")
        assert response.status_code == 200
        assert len(response.get_data()) <= 5000 + 200  # the budget, and the page's own keys
        page = response.get_json()
        assert page["messages"], page
        seen += [message["id"] for message in page["messages"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(created, reverse=True)
    assert pages >= 3
    huge = client.post("/messages", json={"content": "w" * 9000}).get_json()["id"]
    first = client.get("/messages").get_json()
    assert [m["id"] for m in first["messages"]] == [huge]  # a page always holds one row
    assert first["next_cursor"] == str(huge)


def test_the_sqlite_file_is_private_to_its_owner(tmp_path: Path, redis_server: RedisServer) -> None:
    url = f"sqlite:///{tmp_path / 'private' / 'messages.db'}"
    app = create_app(load_config(stack_environment(url, redis_server.url)))
    try:
        keyed_client(app).post("/messages", json={"content": "written"})
        for path in Path(make_url(url).database).parent.iterdir():
            assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, path
    finally:
        with app.app_context():
            db.engine.dispose()


def test_the_development_server_listens_on_loopback_unless_told() -> None:
    assert load_config({})["HOST"] == "127.0.0.1"
    assert load_config({"HOST": "0.0.0.0"})["HOST"] == "0.0.0.0"


def test_request_ids_that_could_forge_log_fields_are_replaced(client: FlaskClient) -> None:
    for supplied in ("a b", "x] [req=y", "tab\there", "ünï"):
        answered = client.get("/healthz", headers={"X-Request-ID": supplied})
        assert answered.headers["X-Request-ID"] != supplied
    kept = client.get("/healthz", headers={"X-Request-ID": "trace:1.2_3-4"})
    assert kept.headers["X-Request-ID"] == "trace:1.2_3-4"
    assert json.dumps(kept.get_json())

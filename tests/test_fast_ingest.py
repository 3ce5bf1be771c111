"""The fast path of ``POST /messages`` answers as the Flask view does, and leaves the rest to it.

The tests here that hold either way run with the fast path on and off (the ``app``
fixture); the API suite in test_api.py does too.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.api.fast_ingest import APPLIED_HOOKS, FastIngest, request_hooks
from app.config import load_config
from app.extensions import db
from tests.conftest import bearer, env_api_key, flask_dispatches, stack_environment, start_web
from tests.support.metrics import metric_value
from tests.support.processes import RedisServer

VARYING_FIELDS = {"id", "created_at", "updated_at"}


@pytest.mark.parametrize("app", ["fast_path"], indirect=True)
def test_plain_post_is_answered_below_flask_exactly_as_flask_answers(
    app: Flask, client: FlaskClient
) -> None:
    body = json.dumps({"content": "same either way"})
    with flask_dispatches(app) as dispatched:
        fast = client.post("/messages", data=body, content_type="application/json")
        assert dispatched == []
        served = client.post("/messages", data=body, content_type="application/json; charset=utf-8")
        assert dispatched == ["/messages"]
    assert fast.status == served.status == "201 CREATED"
    assert sorted(fast.headers.keys()) == sorted(served.headers.keys())
    assert fast.content_type == served.content_type == "application/json"
    assert fast.headers["Location"] == f"/messages/{fast.get_json()['id']}"
    fast_fields, served_fields = fast.get_json(), served.get_json()
    assert list(fast_fields) == list(served_fields)
    assert {k: v for k, v in fast_fields.items() if k not in VARYING_FIELDS} == {
        k: v for k, v in served_fields.items() if k not in VARYING_FIELDS
    }
    with app.app_context():
        assert fast.get_data() == app.json.response(fast_fields).get_data()
    assert client.get(f"/messages/{fast_fields['id']}").get_json() == fast_fields


@pytest.mark.parametrize("app", ["flask_only"], indirect=True)
def test_with_the_fast_path_off_flask_answers_the_plain_post(
    app: Flask, client: FlaskClient
) -> None:
    assert not isinstance(app.wsgi_app, FastIngest)
    with flask_dispatches(app) as dispatched:
        response = client.post("/messages", json={"content": "through flask"})
    assert dispatched == ["/messages"]
    assert response.status_code == 201


def test_the_fast_path_applies_every_request_hook_of_the_app(app: Flask) -> None:
    """A hook added to the app must be applied by the fast path too, and listed."""
    assert request_hooks(app) == APPLIED_HOOKS


def test_a_request_hook_the_fast_path_does_not_apply_is_seen(stack_env: dict[str, str]) -> None:
    app = create_app(load_config(stack_env))

    @app.teardown_request
    def forgotten(_: BaseException | None) -> None:
        """A hook the fast path knows nothing of."""

    try:
        assert request_hooks(app) - APPLIED_HOOKS == {f"{__name__}.{forgotten.__qualname__}"}
    finally:
        with app.app_context():
            db.engine.dispose()


@pytest.mark.parametrize(
    ("supplied", "echoed"),
    [
        ("client-id-7", True),
        ("a.b_c:d-9", True),
        ("x" * 129, False),
        ("bad\tid", False),
        ("forged] [req=other", False),
        ("space id", False),
        (None, False),
    ],
)
def test_fast_path_echoes_a_usable_request_id_or_makes_one(
    client: FlaskClient, supplied: str | None, echoed: bool
) -> None:
    headers = {"X-Request-ID": supplied} if supplied is not None else {}
    response = client.post("/messages", json={"content": "traced"}, headers=headers)
    assert response.status_code == 201
    request_id = response.headers["X-Request-ID"]
    if echoed:
        assert request_id == supplied
    else:
        assert len(request_id) == 32 and int(request_id, 16) >= 0


def test_fast_path_requests_are_counted_and_timed(client: FlaskClient) -> None:
    labels = {"method": "POST", "endpoint": "/messages"}
    count = ("http_requests_total", {**labels, "status": "201"})
    timed = ("http_request_latency_seconds_count", labels)
    before = metric_value(client, *count), metric_value(client, *timed)
    for number in range(3):
        assert client.post("/messages", json={"content": f"counted {number}"}).status_code == 201
    assert metric_value(client, *count) == before[0] + 3
    assert metric_value(client, *timed) == before[1] + 3


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        # A validation error that Flask can only report if it is given the body again.
        (b'{"content": ["a"]}', {}, 400, "validation_error"),
        (b'{"content": ""}', {}, 400, "validation_error"),
        (b"{not json", {}, 400, "invalid_json"),
        (b'{"content": "kept"}', {"Idempotency-Key": "k-1"}, 201, None),
    ],
)
def test_other_requests_reach_flask_with_their_body(
    app: Flask, client: FlaskClient, body: bytes, headers: dict, status: int, code: str | None
) -> None:
    with flask_dispatches(app) as dispatched:
        response = client.post(
            "/messages", data=body, content_type="application/json", headers=headers
        )
    assert dispatched == ["/messages"]
    assert response.status_code == status
    if code is not None:
        assert response.get_json()["error"]["code"] == code
    else:
        assert response.get_json()["content"] == "kept"


def _post(port: int, key: str, body: bytes, **headers: str) -> tuple[int, dict, dict]:
    request = Request(
        f"http://127.0.0.1:{port}/messages",
        data=body,
        headers={"Content-Type": "application/json", **bearer(key), **headers},
    )
    try:
        with urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def test_served_by_gunicorn_the_fast_path_and_its_fallbacks_answer(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Under Gunicorn's gevent worker, where the body comes from Gunicorn's own reader."""
    env = stack_environment(f"sqlite:///{tmp_path / 'messages.db'}", redis_server.url)
    key = env_api_key(env)
    web, port = start_web(env, tmp_path, workers=1)
    try:
        status, headers, created = _post(
            port, key, b'{"content": "served"}', **{"X-Request-ID": "s-1"}
        )
        assert (status, headers["X-Request-ID"]) == (201, "s-1")
        assert headers["Location"] == f"/messages/{created['id']}"
        status, _, error = _post(port, key, b'{"content": ""}')
        assert (status, error["error"]["code"]) == (400, "validation_error")
        keyed = {"Idempotency-Key": "served-key"}
        first = _post(port, key, b'{"content": "once"}', **keyed)
        again = _post(port, key, b'{"content": "once"}', **keyed)
        assert (first[0], again[0], again[2]["id"]) == (201, 200, first[2]["id"])
    finally:
        web.stop()

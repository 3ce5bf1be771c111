"""Rate limits per API key: counted in Redis across processes, a batch per message, 429s."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.config import load_config
from app.extensions import db
from tests.conftest import keyed_client, make_api_key, stack_environment
from tests.support.processes import RedisServer, free_port

PLAIN_POST = {"data": b'{"content": "counted"}', "content_type": "application/json"}
AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(fresh_database_url: str, redis_server: RedisServer) -> Iterator[AppFactory]:
    """Apps on one fresh database and the session's Redis, with the settings given."""
    apps: list[Flask] = []

    def make(**settings: str) -> Flask:
        env = stack_environment(fresh_database_url, redis_server.url, **settings)
        app = create_app(load_config(env))
        apps.append(app)
        return app

    yield make
    for app in apps:
        with app.app_context():
            db.engine.dispose()


def stored(caller: FlaskClient) -> int:
    return caller.get("/messages/stats").get_json()["total"]


def assert_limited(response, limit: str) -> None:
    assert response.status_code == 429
    error = response.get_json()["error"]
    assert (error["code"], error["details"]) == ("rate_limited", {"limit": limit})
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["RateLimit-Limit"] == limit.split()[0]
    assert response.headers["RateLimit-Remaining"] == "0"
    assert int(response.headers["RateLimit-Reset"]) == int(response.headers["Retry-After"])


def test_a_key_over_its_limit_gets_429_and_stores_nothing(make_app: AppFactory) -> None:
    app = make_app(N3HUB_RATE_LIMIT="5/minute;1000/day")
    caller, other = keyed_client(app, make_api_key(app)), keyed_client(app, make_api_key(app))
    for _ in range(4):
        assert caller.post("/messages", **PLAIN_POST).status_code == 201  # the fast path's form
    assert stored(caller) == 4  # the fifth request
    assert_limited(caller.post("/messages", **PLAIN_POST), "5 per 1 minute")
    assert_limited(caller.get("/messages"), "5 per 1 minute")
    assert other.post("/messages", **PLAIN_POST).status_code == 201  # limits are per key
    assert stored(other) == 5


def test_a_batch_counts_as_its_number_of_messages(make_app: AppFactory) -> None:
    app = make_app(N3HUB_RATE_LIMIT="5/minute")
    caller = keyed_client(app, make_api_key(app))
    batch = {"messages": [{"content": f"m{i}"} for i in range(3)]}
    assert caller.post("/messages/batch", json=batch).status_code == 201
    assert_limited(caller.post("/messages/batch", json=batch), "5 per 1 minute")
    admin = keyed_client(app, make_api_key(app))
    assert stored(admin) == 3


def test_processes_share_the_counts_through_redis(make_app: AppFactory) -> None:
    first, second = make_app(N3HUB_RATE_LIMIT="4/minute"), make_app(N3HUB_RATE_LIMIT="4/minute")
    key = make_api_key(first)
    callers = [keyed_client(first, key), keyed_client(second, key)]
    for caller in callers * 2:
        assert caller.get("/messages/stats").status_code == 200
    for caller in callers:
        assert_limited(caller.get("/messages/stats"), "4 per 1 minute")


def test_without_redis_requests_are_served_unlimited(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    app = make_app(N3HUB_RATE_LIMIT="1/minute", N3HUB_RATE_LIMIT_REDIS_URL=nobody)
    caller = keyed_client(app, make_api_key(app))
    for _ in range(3):
        assert caller.post("/messages", **PLAIN_POST).status_code == 201
    assert "rate limits not enforced" in caplog.text


def test_no_limit_when_none_is_set(make_app: AppFactory) -> None:
    app = make_app(N3HUB_RATE_LIMIT="")
    assert not app.extensions["quotas"].enabled
    caller = keyed_client(app, make_api_key(app))
    assert all(caller.get("/messages/stats").status_code == 200 for _ in range(20))


def test_a_bad_limit_stops_the_start(make_app: AppFactory) -> None:
    with pytest.raises(ValueError, match="N3HUB_RATE_LIMIT"):
        make_app(N3HUB_RATE_LIMIT="lots/second")

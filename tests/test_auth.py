"""API keys: every route but the probes needs one, scopes are enforced, nothing gets around them."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import select

from app import create_app
from app.api.guard import Guard
from app.auth.access import requirement_of
from app.auth.keys import KEY_PREFIX, Scope, hash_key
from app.config import ConfigError, load_config
from app.database import read_connection
from app.extensions import db
from app.models import ApiKey, Message
from app.worker.metrics_server import serve_metrics
from tests.conftest import (
    flask_dispatches,
    keyed_client,
    make_api_key,
    reset_database,
    stack_environment,
    statements_run,
)
from tests.support.polling import wait_for
from tests.support.processes import RedisServer, free_port

# The probes, the API's description and its docs page (a file of it included).
OPEN_PATHS = {"/healthz", "/readyz", "/openapi.json", "/docs/", "/docs/index.css"}
PLAIN_POST = {"data": b'{"content": "x"}', "content_type": "application/json"}


def _count(app: Flask) -> int:
    """Messages stored, counted in the database itself."""
    with app.app_context(), read_connection() as connection:
        return len(connection.execute(select(Message.id)).all())


def every_route(app: Flask) -> Iterator[tuple[str, str]]:
    """(method, path) of every route, ids filled in."""
    for rule in app.url_map.iter_rules():
        path = rule.rule.replace("<int:message_id>", "1").replace("<path:path>", "index.css")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, path


def assert_unauthorized(response, invalid: bool) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert ('error="invalid_token"' in response.headers["WWW-Authenticate"]) is invalid
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_the_guard_is_the_outermost_layer_and_every_view_declares_its_access(app: Flask) -> None:
    assert isinstance(app.wsgi_app, Guard)
    undeclared = [name for name, view in app.view_functions.items() if not requirement_of(view)]
    assert undeclared == []


def assert_console_refuses_a_stranger(method: str, path: str, response: Any) -> None:
    """The console has its own login (tests/test_console.py): only its login page shows."""
    if method == "POST":
        assert response.status_code == 400, path  # no session, so no CSRF token
    elif path == "/console/login":
        assert response.status_code == 200
    else:
        assert (response.status_code, response.headers["Location"]) == (302, "/console/login")


def test_every_route_but_the_probes_refuses_a_caller_without_a_key(app: Flask, client) -> None:
    anonymous = app.test_client()
    checked = 0
    for method, path in every_route(app):
        kwargs = PLAIN_POST if method == "POST" else {}
        with anonymous.open(path, method=method, **kwargs) as response:
            if path in OPEN_PATHS:
                assert response.status_code in (200, 503), path
            elif path == "/metrics":
                assert response.status_code == 200  # development, no N3HUB_METRICS_TOKEN
            elif path.startswith("/console/"):
                assert_console_refuses_a_stranger(method, path, response)
            else:
                assert_unauthorized(response, invalid=False)
                checked += 1
    assert checked >= 6
    assert_unauthorized(anonymous.get("/no/such/route"), invalid=False)
    assert anonymous.get("/docs").status_code == 308  # to the open /docs/
    assert_unauthorized(anonymous.get("/messages/"), invalid=False)
    assert _count(app) == 0


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer n3h_not-a-real-key",
        "Bearer nonsense",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer " + "x" * 10_000,
        "bearer\tn3h_tab",
    ],
)
def test_a_bad_key_is_401_and_stores_nothing(app: Flask, client, authorization: str) -> None:
    anonymous = app.test_client()
    headers = {"Authorization": authorization}
    for path, kwargs in [
        ("/messages", PLAIN_POST),  # the fast path's form
        ("/messages", {"json": {"content": "x"}, "headers": {"Idempotency-Key": "k"}}),
        ("/messages/batch", {"json": {"messages": [{"content": "x"}]}}),
    ]:
        extra = kwargs.get("headers", {})
        options = {k: v for k, v in kwargs.items() if k != "headers"}
        response = anonymous.post(path, headers={**headers, **extra}, **options)
        assert_unauthorized(response, invalid=True)
    assert _count(app) == 0


def test_the_fast_path_never_serves_a_refused_request(app: Flask, client) -> None:
    reader = keyed_client(app, make_api_key(app, scopes=frozenset({Scope.READ})))
    with flask_dispatches(app) as dispatched:
        response = reader.post("/messages", **PLAIN_POST)
    assert dispatched == ["/messages"]  # answered by Flask's error handlers, not the fast path
    assert response.status_code == 403
    assert response.get_json()["error"] == {
        "code": "forbidden",
        "message": "This API key lacks the submit scope this request needs.",
        "details": {"required_scope": "submit"},
    }
    assert response.headers["X-Request-ID"]
    assert _count(app) == 0


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [
        ({Scope.SUBMIT}, {"create", "batch"}),
        ({Scope.READ}, {"get", "list", "stats"}),
        ({Scope.ADMIN}, {"retry"}),
        (set(Scope), {"create", "batch", "get", "list", "stats", "retry"}),
    ],
)
def test_each_route_needs_its_scope(app: Flask, client, scopes: set, allowed: set) -> None:
    message_id = client.post("/messages", json={"content": "exists"}).get_json()["id"]
    caller = keyed_client(app, make_api_key(app, scopes=frozenset(scopes)))
    requests = {
        "create": lambda: caller.post("/messages", **PLAIN_POST),
        "batch": lambda: caller.post("/messages/batch", json={"messages": [{"content": "b"}]}),
        "get": lambda: caller.get(f"/messages/{message_id}"),
        "list": lambda: caller.get("/messages"),
        "stats": lambda: caller.get("/messages/stats"),
        "retry": lambda: caller.post(f"/messages/{message_id}/retry"),
    }
    for name, send in requests.items():
        response = send()
        if name in allowed:
            assert response.status_code in (200, 201, 409), (name, response.get_json())
        else:
            assert response.status_code == 403, name
            assert response.get_json()["error"]["code"] == "forbidden"


def test_keys_are_random_and_stored_only_as_hashes(app: Flask) -> None:
    first, second = make_api_key(app), make_api_key(app)
    assert first != second and first.startswith(KEY_PREFIX)
    assert len(first) - len(KEY_PREFIX) >= 43  # 32 random bytes, URL-safe base64
    with app.app_context(), read_connection() as connection:
        rows = connection.execute(select(*ApiKey.__table__.columns)).all()
    stored = json.dumps([row._asdict() for row in rows], default=str)
    assert first not in stored and second not in stored
    assert hash_key(first) in stored


def test_a_cached_key_costs_no_database_query(app: Flask, client: FlaskClient) -> None:
    client.get("/messages/stats")  # warms this process's cache
    with statements_run(app) as statements:
        assert client.get("/messages/stats").status_code == 200
    assert statements and not any("api_keys" in statement for statement in statements)


@pytest.fixture
def quick_revocation_app(fresh_database_url: str, redis_server: RedisServer) -> Iterator[Flask]:
    env = stack_environment(fresh_database_url, redis_server.url, N3HUB_KEY_CACHE_SECONDS="0.2")
    app = create_app(load_config(env))
    yield app
    with app.app_context():
        db.engine.dispose()


def test_a_revoked_key_stops_working_within_the_cache_time(quick_revocation_app: Flask) -> None:
    app = quick_revocation_app
    runner = app.test_cli_runner()
    created = runner.invoke(args=["keys", "create", "ci", "--tenant", "acme", "--scopes", "read"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert created.stdout == key + "\n"  # the key, and nothing else, on stdout
    caller = keyed_client(app, key)
    assert caller.get("/messages/stats").status_code == 200
    listed = runner.invoke(args=["keys", "list"])
    assert key not in listed.output and key[:12] in listed.output and "acme" in listed.output
    key_id = listed.output.split("\t")[0]
    revoked = runner.invoke(args=["keys", "revoke", key_id])
    assert revoked.exit_code == 0, revoked.output
    wait_for(
        lambda: caller.get("/messages/stats").status_code == 401,
        timeout=5,
        what="the revoked key to be refused",
    )
    again = runner.invoke(args=["keys", "revoke", key_id])
    assert again.exit_code != 0


@pytest.mark.parametrize(
    "arguments",
    [
        ["--tenant", "acme", "--scopes", "write"],
        ["--tenant", "acme", "--scopes", ""],
        ["--tenant", "a b", "--scopes", "read"],
        ["--tenant", "x" * 65, "--scopes", "read"],
    ],
)
def test_keys_create_refuses_bad_input(isolated_app: Flask, arguments: list[str]) -> None:
    result = isolated_app.test_cli_runner().invoke(args=["keys", "create", "name", *arguments])
    assert result.exit_code == 2
    assert result.stdout == ""


def test_the_development_key_is_made_once_and_private(isolated_app: Flask, tmp_path: Path) -> None:
    isolated_app.instance_path = str(tmp_path)
    runner = isolated_app.test_cli_runner()
    made = runner.invoke(args=["keys", "dev"])
    assert made.exit_code == 0, made.output
    key_file = tmp_path / "dev-api-key"
    key = key_file.read_text().strip()
    assert made.stdout == key + "\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert keyed_client(isolated_app, key).post("/messages", **PLAIN_POST).status_code == 201
    again = runner.invoke(args=["keys", "dev"])
    assert again.exit_code == 0 and again.stdout == ""
    assert key_file.read_text().strip() == key


def test_production_makes_no_development_key(
    fresh_database_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = stack_environment(fresh_database_url, redis_server.url, FLASK_ENV="production")
    app = create_app(load_config(env))
    app.instance_path = str(tmp_path)
    try:
        result = app.test_cli_runner().invoke(args=["keys", "dev"])
        assert result.exit_code == 0 and result.stdout == ""
        assert not (tmp_path / "dev-api-key").exists()
        with app.app_context(), read_connection() as connection:
            assert connection.execute(select(ApiKey.id)).all() == []
    finally:
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def production_app(
    fresh_database_url: str, redis_server: RedisServer, request: pytest.FixtureRequest
) -> Iterator[Flask]:
    extra = {"FLASK_ENV": "production", **getattr(request, "param", {})}
    app = create_app(load_config(stack_environment(fresh_database_url, redis_server.url, **extra)))
    yield app
    with app.app_context():
        db.engine.dispose()


def test_production_metrics_need_an_admin_key_without_a_token(production_app: Flask) -> None:
    app = production_app
    assert_unauthorized(app.test_client().get("/metrics"), invalid=False)
    reader = keyed_client(app, make_api_key(app, scopes=frozenset({Scope.READ})))
    assert reader.get("/metrics").status_code == 403
    assert (
        keyed_client(app, make_api_key(app, scopes=frozenset({Scope.ADMIN})))
        .get("/metrics")
        .status_code
        == 200
    )


WITH_TOKEN = [{"N3HUB_METRICS_TOKEN": "scrape-secret"}]


@pytest.mark.parametrize("production_app", WITH_TOKEN, indirect=True)
def test_metrics_answer_only_the_metrics_token_when_one_is_set(production_app: Flask) -> None:
    app = production_app
    anonymous = app.test_client()
    assert_unauthorized(anonymous.get("/metrics"), invalid=True)
    admin = keyed_client(app, make_api_key(app))
    assert_unauthorized(admin.get("/metrics"), invalid=True)
    scraped = anonymous.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert scraped.status_code == 200
    assert b"http_requests_total" in scraped.get_data()


def test_the_probes_stay_open(app: Flask) -> None:
    reset_database(app)
    anonymous = app.test_client()
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/readyz").status_code == 200


def test_the_worker_metrics_port_answers_only_the_metrics_token() -> None:
    registry = CollectorRegistry()
    Counter("probe_total", "A metric to find.", registry=registry).inc()
    server = serve_metrics(free_port(), registry, "worker-secret")
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(HTTPError) as refused:
                urlopen(Request(url, headers=headers), timeout=5)
            with refused.value:
                assert refused.value.code == 401
                assert refused.value.headers["WWW-Authenticate"].startswith("Bearer")
                assert json.load(refused.value)["error"]["code"] == "unauthorized"
        with urlopen(Request(url, headers={"Authorization": "Bearer worker-secret"})) as response:
            assert b"probe_total 1.0" in response.read()
    finally:
        server.shutdown()
        server.server_close()


def test_the_metrics_token_can_come_from_a_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    assert load_config({"N3HUB_METRICS_TOKEN_FILE": str(token_file)})["METRICS_TOKEN"] == (
        "from-a-file"
    )
    with pytest.raises(ConfigError, match="N3HUB_METRICS_TOKEN_FILE"):
        load_config({"N3HUB_METRICS_TOKEN_FILE": str(tmp_path / "missing")})

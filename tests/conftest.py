"""Shared fixtures: a real Redis, a real database (SQLite and PostgreSQL), real workers.

PostgreSQL runs when ``N3HUB_TEST_POSTGRES_URL`` is set; each test session gets a
fresh database on that server. With ``N3HUB_REQUIRE_POSTGRES=1`` (CI) a missing
PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request, request_started
from flask.testing import FlaskClient
from sqlalchemy import create_engine, delete, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from app import create_app
from app.auth.keys import Scope, create_key
from app.config import load_config
from app.database import write_transaction
from app.extensions import db
from app.models import Message, Tally
from tests.support.polling import wait_for
from tests.support.processes import (
    ManagedProcess,
    RedisServer,
    celery_worker,
    free_port,
    gunicorn_web,
)

DATABASES = ["sqlite", "postgresql"]
TEST_KEY = "n3hub_tests.api_key"

# Fast clocks so retries, leases and sweeps happen within a test's patience.
TEST_SETTINGS = {
    "N3HUB_PROCESSOR": "tests.support.processors:scripted",
    "N3HUB_SWEEP_INTERVAL": "0.2",
    "N3HUB_RETRY_BASE_DELAY": "0.05",
    "N3HUB_RETRY_MAX_DELAY": "0.2",
    "N3HUB_MAX_ATTEMPTS": "3",
    "N3HUB_LEASE_SECONDS": "30",
    "N3HUB_DRAIN_BUDGET": "2",
    "LOG_LEVEL": "INFO",
}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def _postgres_base_url() -> str | None:
    url = os.environ.get("N3HUB_TEST_POSTGRES_URL")
    if url:
        return url
    if os.environ.get("N3HUB_REQUIRE_POSTGRES") == "1":
        pytest.fail("N3HUB_REQUIRE_POSTGRES=1 but N3HUB_TEST_POSTGRES_URL is not set")
    pytest.skip("PostgreSQL tests need N3HUB_TEST_POSTGRES_URL")
    return None


class DatabaseFactory:
    """Creates empty databases for a test session and drops them at its end."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._postgres: list[str] = []

    def create(self, kind: str) -> str:
        """The URL of a new, empty database of ``kind`` ("sqlite" or "postgresql")."""
        if kind == "sqlite":
            return f"sqlite:///{self._tmp.mktemp('sqlite') / 'messages.db'}"
        base_url = _postgres_base_url()
        name = f"n3hub_test_{uuid.uuid4().hex[:12]}"
        self._admin(base_url, f'CREATE DATABASE "{name}"')
        url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
        self._postgres.append(url)
        return url

    def drop_all(self) -> None:
        for url in self._postgres:
            name = make_url(url).database
            self._admin(
                os.environ["N3HUB_TEST_POSTGRES_URL"], f'DROP DATABASE "{name}" WITH (FORCE)'
            )

    @staticmethod
    def _admin(url: str, statement: str) -> None:
        engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with engine.connect() as connection:
            connection.exec_driver_sql(statement)
        engine.dispose()


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory)
    yield factory
    factory.drop_all()


@pytest.fixture(scope="session", params=DATABASES)
def database_url(request: pytest.FixtureRequest, databases: DatabaseFactory) -> str:
    """The session's shared database; the session-wide ``worker`` processes it."""
    return databases.create(request.param)


@pytest.fixture(params=DATABASES)
def fresh_database_url(request: pytest.FixtureRequest, databases: DatabaseFactory) -> str:
    """A database of the test's own, which no other test's worker touches."""
    return databases.create(request.param)


def stack_environment(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """Environment for the app under test and the processes it talks to."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("N3HUB_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(TEST_SETTINGS)
    env.update(
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=f"{redis_url}/0",
        CELERY_RESULT_BACKEND=f"{redis_url}/1",
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
    )
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def stack_env(database_url: str, redis_server: RedisServer) -> dict[str, str]:
    return stack_environment(database_url, redis_server.url)


@pytest.fixture(scope="session")
def app(stack_env: dict[str, str]) -> Iterator[Flask]:
    app = create_app(load_config(stack_env))
    yield app
    with app.app_context():
        db.engine.dispose()


@contextmanager
def flask_dispatches(app: Flask) -> Iterator[list[str]]:
    """The paths of the requests that Flask's own request handling served meanwhile."""
    seen: list[str] = []

    def started(sender: Flask, **_: object) -> None:
        seen.append(request.path)

    with request_started.connected_to(started, app):
        yield seen


def reset_database(app: Flask) -> None:
    """Remove every message and zero the tallies."""
    with app.app_context(), write_transaction() as connection:
        connection.execute(delete(Message))
        connection.execute(update(Tally).values(value=0))


def make_api_key(
    app: Flask, tenant: str = "default", scopes: frozenset[Scope] = frozenset(Scope)
) -> str:
    """A new API key in the app's database (every scope unless told)."""
    with app.app_context():
        key, _ = create_key(f"test-{tenant}", tenant, scopes)
    return key


def env_api_key(env: dict[str, str], **options: Any) -> str:
    """A new API key in the database of a stack started from ``env`` (migrated first)."""
    app = create_app(load_config(env))
    try:
        return make_api_key(app, **options)
    finally:
        with app.app_context():
            db.engine.dispose()


def bearer(key: str) -> dict[str, str]:
    """The header that presents ``key``."""
    return {"Authorization": f"Bearer {key}"}


def app_key(app: Flask) -> str:
    """A key with every scope on the app's database, made once per app."""
    if TEST_KEY not in app.extensions:
        app.extensions[TEST_KEY] = make_api_key(app)
    return app.extensions[TEST_KEY]


@pytest.fixture(scope="session")
def api_key(app: Flask) -> str:
    """A key with every scope on the session's database."""
    return app_key(app)


def keyed_client(app: Flask, key: str | None = None) -> FlaskClient:
    """A test client that presents ``key`` (by default the app's :func:`app_key`) every time."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key or app_key(app)}"
    return client


@pytest.fixture
def client(app: Flask, api_key: str) -> FlaskClient:
    reset_database(app)
    return keyed_client(app, api_key)


def start_worker(env: dict[str, str], log_dir: Path, **options: Any) -> ManagedProcess:
    """Start a Celery worker and wait until it reports ready."""
    hostname = options.get("hostname", "w1")
    worker = celery_worker(env, log_dir / f"worker-{hostname}.log", **options).start()
    wait_for(
        lambda: "ready." in worker.log_tail(200) or not worker.alive(),
        timeout=60,
        what="celery worker to be ready",
    )
    assert worker.alive(), worker.log_tail()
    return worker


def start_web(env: dict[str, str], log_dir: Path, workers: int = 2) -> tuple[ManagedProcess, int]:
    """Start Gunicorn with the project's config on a free port; wait until it answers."""
    port = free_port()
    web = gunicorn_web(env, log_dir / f"web-{port}.log", port=port, workers=workers).start()
    web.wait_until_answering(f"http://127.0.0.1:{port}/healthz", "gunicorn to answer")
    return web, port


@pytest.fixture(scope="session")
def worker(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ManagedProcess]:
    process = start_worker(stack_env, tmp_path_factory.mktemp("worker"))
    yield process
    process.stop()


def database_scalar(app: Flask, sql: str) -> Any:
    """Run one read query against the app's database."""
    with app.app_context(), write_transaction() as connection:
        return connection.execute(text(sql)).scalar()


@pytest.fixture
def isolated_env(fresh_database_url: str, redis_server: RedisServer) -> dict[str, str]:
    """Environment for a test with a database of its own."""
    return stack_environment(fresh_database_url, redis_server.url)


@pytest.fixture
def isolated_app(isolated_env: dict[str, str]) -> Iterator[Flask]:
    """An app on a database that no shared worker processes; its context is pushed."""
    app = create_app(load_config(isolated_env))
    with app.app_context():
        yield app
        db.engine.dispose()

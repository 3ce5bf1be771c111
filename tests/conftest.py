"""Shared fixtures: a real Redis, real databases (SQLite, PostgreSQL, MariaDB), real workers.

PostgreSQL runs when ``N3HUB_TEST_POSTGRES_URL`` is set, MySQL or MariaDB when
``N3HUB_TEST_MYSQL_URL`` is; each test session creates databases of its own on
those servers and drops them at its end. With ``N3HUB_REQUIRE_POSTGRES=1`` or
``N3HUB_REQUIRE_MYSQL=1`` (CI) a missing server fails the run instead of
skipping. MySQL runs only where the database makes a difference: the modules
that parametrise their database fixture over :data:`EVERY_DATABASE`. The
caller's own service settings (``DATABASE_URL``, ``CELERY_BROKER_URL``,
``N3HUB_*`` ...) are removed from the environment first, so they reach neither
the apps built here nor the processes started here.

``app`` and ``client`` sit on a database that no worker consumes, so what a test
creates stays as it left it; ``app`` is built with the WSGI fast path on and off.
Tests of processing use ``worker_app`` and the session ``worker`` on a database
of their own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request, request_started
from flask.testing import FlaskClient
from sqlalchemy import create_engine, delete, event, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from app import create_app
from app.auth.keys import Scope, create_key
from app.config import SETTINGS, load_config
from app.database import write_transaction
from app.extensions import db
from app.models import IdempotencyKey, Message, MessageAttempt, Tally
from app.worker.settings import with_database_retries
from tests.support.polling import wait_for
from tests.support.processes import (
    ManagedProcess,
    RedisServer,
    celery_worker,
    free_port,
    gunicorn_web,
)
from tests.support.required import require


def _wanted(url_variable: str, require_variable: str) -> bool:
    return bool(os.environ.get(url_variable)) or os.environ.get(require_variable) == "1"


POSTGRES_WANTED = _wanted("N3HUB_TEST_POSTGRES_URL", "N3HUB_REQUIRE_POSTGRES")
MYSQL_WANTED = _wanted("N3HUB_TEST_MYSQL_URL", "N3HUB_REQUIRE_MYSQL")
# The databases the shared fixtures run on: PostgreSQL only when given (or required).
DATABASES = ["sqlite", "postgresql"] if POSTGRES_WANTED else ["sqlite"]
# The same plus MySQL when given, for the tests whose outcome depends on the database.
EVERY_DATABASE = DATABASES + ["mysql"] * MYSQL_WANTED
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
    # Limits high enough for the bursts of the tests, counted in Redis all the same.
    "N3HUB_RATE_LIMIT": "1000000/second",
}


# The app as Flask alone serves it, and with the fast path of POST /messages in front.
FAST_PATH_MODES = {"fast_path": "1", "flask_only": "0"}


def pytest_report_header() -> list[str]:
    """Say once which databases the tests use."""
    names = ", ".join(["SQLite", *(SERVERS[kind].name for kind in EVERY_DATABASE[1:])])
    missing = [
        server.url_variable for kind, server in SERVERS.items() if kind not in EVERY_DATABASE
    ]
    return [
        f"databases: {names}" + (f" (set {' or '.join(missing)} to add more)" if missing else "")
    ]


def pytest_configure(config: pytest.Config) -> None:
    """Forget the caller's service settings: the tests set every one they depend on."""
    for setting in SETTINGS:
        os.environ.pop(setting.env, None)


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_session() -> Iterator[None]:
    """Stop any process a fixture started but could not stop (its set-up failed or skipped)."""
    yield
    ManagedProcess.stop_all_running()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@dataclass(frozen=True)
class Server:
    """A database server the tests may use, and how to make and drop databases on it."""

    name: str
    url_variable: str
    require_variable: str
    example_url: str
    create: str
    drop: str

    def base_url(self) -> str:
        """The server's URL; skips the test (fails it where required) when none is set."""
        url = os.environ.get(self.url_variable, "")
        require(
            bool(url),
            self.require_variable,
            f"{self.name} tests need {self.url_variable} (e.g. {self.example_url})",
        )
        return url


SERVERS = {
    "postgresql": Server(
        "PostgreSQL",
        "N3HUB_TEST_POSTGRES_URL",
        "N3HUB_REQUIRE_POSTGRES",
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        create='CREATE DATABASE "{}"',
        drop='DROP DATABASE "{}" WITH (FORCE)',
    ),
    "mysql": Server(
        "MySQL/MariaDB",
        "N3HUB_TEST_MYSQL_URL",
        "N3HUB_REQUIRE_MYSQL",
        "mysql+pymysql://root@127.0.0.1:3306/test",
        create="CREATE DATABASE `{}` CHARACTER SET utf8mb4",
        drop="DROP DATABASE `{}`",
    ),
}


class DatabaseFactory:
    """Creates empty databases for a test session and drops them at its end."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._created: list[tuple[Server, str]] = []

    def create(self, kind: str) -> str:
        """The URL of a new, empty database of ``kind`` ("sqlite", "postgresql" or "mysql")."""
        if kind == "sqlite":
            return f"sqlite:///{self._tmp.mktemp('sqlite') / 'messages.db'}"
        server = SERVERS[kind]
        base_url = server.base_url()
        name = f"n3hub_test_{uuid.uuid4().hex[:12]}"
        self._admin(base_url, server.create.format(name))
        self._created.append((server, name))
        return make_url(base_url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        for server, name in self._created:
            self._admin(os.environ[server.url_variable], server.drop.format(name))

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
    """The session's shared database for API tests; no worker consumes it."""
    return databases.create(request.param)


@pytest.fixture(scope="session", params=DATABASES)
def worker_database_url(request: pytest.FixtureRequest, databases: DatabaseFactory) -> str:
    """The session's shared database that the session-wide ``worker`` processes."""
    return databases.create(request.param)


@pytest.fixture(params=DATABASES)
def fresh_database_url(request: pytest.FixtureRequest, databases: DatabaseFactory) -> str:
    """A database of the test's own, which no other test's worker touches."""
    return databases.create(request.param)


def on_every_database(fixture: str) -> pytest.MarkDecorator:
    """Run a module's tests on MySQL too: parametrise its database ``fixture`` by kind."""
    return pytest.mark.parametrize(fixture, EVERY_DATABASE, indirect=True)


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
def worker_stack_env(worker_database_url: str, redis_server: RedisServer) -> dict[str, str]:
    return stack_environment(worker_database_url, redis_server.url)


def session_app(env: dict[str, str]) -> Iterator[Flask]:
    """An app on ``env`` for the whole session; its engine is closed at the end."""
    app = create_app(load_config(env))
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


@pytest.fixture(scope="session", params=sorted(FAST_PATH_MODES))
def app(request: pytest.FixtureRequest, stack_env: dict[str, str]) -> Iterator[Flask]:
    """The app on the API database, with the fast path on and then off."""
    yield from session_app(stack_env | {"N3HUB_FAST_PATH": FAST_PATH_MODES[request.param]})


@pytest.fixture(scope="session")
def worker_app(worker_stack_env: dict[str, str]) -> Iterator[Flask]:
    """The app on the database the session's ``worker`` processes."""
    yield from session_app(worker_stack_env)


@contextmanager
def statements_run(app: Flask) -> Iterator[list[str]]:
    """The SQL statements the app's engine ran meanwhile."""
    statements: list[str] = []
    with app.app_context():
        engine = db.engine

    def seen(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def reset_database(app: Flask) -> None:
    """Remove every message, its attempts and idempotency key, and zero the tallies.

    A worker may still be writing the outcomes of an earlier test's messages: a
    deadlock with it is retried, as the worker retries its own side.
    """

    def reset() -> None:
        with write_transaction() as connection:
            connection.execute(delete(IdempotencyKey))
            connection.execute(delete(MessageAttempt))
            connection.execute(delete(Message))
            connection.execute(update(Tally).values(value=0))

    with app.app_context():
        with_database_retries(reset)


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
    """A keyed client on an emptied API database: what it creates stays pending."""
    reset_database(app)
    return keyed_client(app, api_key)


@pytest.fixture
def worker_client(worker_app: Flask, worker: ManagedProcess) -> FlaskClient:
    """A client on an emptied database that the session's worker processes."""
    reset_database(worker_app)
    return keyed_client(worker_app)


def start_worker(env: dict[str, str], log_dir: Path, **options: Any) -> ManagedProcess:
    """Start a Celery worker and wait until it reports ready."""
    hostname = options.get("hostname", "w1")
    worker = celery_worker(env, log_dir / f"worker-{hostname}.log", **options).start()
    try:
        wait_for(
            lambda: "ready." in worker.log_tail(200) or not worker.alive(),
            timeout=60,
            what="celery worker to be ready",
        )
        assert worker.alive(), worker.log_tail()
    except BaseException:
        worker.stop()
        raise
    return worker


def start_web(env: dict[str, str], log_dir: Path, workers: int = 2) -> tuple[ManagedProcess, int]:
    """Start Gunicorn with the project's config on a free port; wait until it answers."""
    port = free_port()
    web = gunicorn_web(env, log_dir / f"web-{port}.log", port=port, workers=workers).start()
    try:
        web.wait_until_answering(f"http://127.0.0.1:{port}/healthz", "gunicorn to answer")
    except BaseException:
        web.stop()
        raise
    return web, port


@pytest.fixture(scope="session")
def worker(
    worker_app: Flask, worker_stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ManagedProcess]:
    """A Celery worker for the session, on ``worker_app``'s database (migrated first)."""
    process = start_worker(worker_stack_env, tmp_path_factory.mktemp("worker"))
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


@dataclass(frozen=True)
class WebStack:
    """A web service under Gunicorn for end-to-end tests: where it answers, a key, its app."""

    url: str
    key: str
    database_url: str
    app: Flask


@contextmanager
def web_stack(
    directory: Path,
    redis_url: str,
    database_url: str | None = None,
    with_worker: bool = False,
    **settings: str,
) -> Iterator[WebStack]:
    """Gunicorn (and a worker if asked) on a database of its own (a new SQLite one by default).

    Its broker is a Redis database of its own, so the session's worker, which
    processes another database, never takes its wake-ups.
    """
    database_url = database_url or f"sqlite:///{directory / 'web.db'}"
    env = stack_environment(
        database_url,
        redis_url,
        CELERY_BROKER_URL=f"{redis_url}/2",
        CELERY_RESULT_BACKEND=f"{redis_url}/3",
        **settings,
    )
    app = create_app(load_config(env))
    processes = [start_worker(env, directory, hostname="stack")] if with_worker else []
    try:
        web, port = start_web(env, directory, workers=1)
        processes.append(web)
        yield WebStack(f"http://127.0.0.1:{port}", make_api_key(app), database_url, app)
    finally:
        for process in processes:
            process.stop()
        with app.app_context():
            db.engine.dispose()


@pytest.fixture(scope="session", params=DATABASES)
def e2e_stack(
    request: pytest.FixtureRequest,
    databases: DatabaseFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WebStack]:
    """Gunicorn and a worker on a database of their own, for the client, CLI and fuzz tests."""
    database_url = databases.create(request.param)
    directory = tmp_path_factory.mktemp("e2e")
    with web_stack(directory, redis_server.url, database_url, with_worker=True) as stack:
        yield stack

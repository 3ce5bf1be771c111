"""The stack under test: its own Redis, database, Gunicorn web and Celery worker.

Nothing here touches the user's instance: SQLite lives in a fresh temporary
directory, PostgreSQL in a database of its own (``n3hub_bench``) that is
created anew at the start and dropped at the end. Every process started is
stopped when the stack closes, whether the run ended, failed or was interrupted.
"""

from __future__ import annotations

import os
import runpy
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

from flask import Flask
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from app import create_app
from app.auth.keys import Scope, create_key
from app.config import PROJECT_ROOT, load_config, normalise_database_url
from app.extensions import db
from scripts.bench.client import use_api_key
from tests.support.polling import wait_for
from tests.support.processes import (
    ManagedProcess,
    RedisServer,
    celery_worker,
    free_port,
    gunicorn_web,
)

BENCH_DATABASE = "n3hub_bench"
WORKER_CONCURRENCY = 2
# Set by the bench for its own processes, whatever the caller's environment says.
OWN_VARIABLES = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "N3HUB_WAKE_REDIS_URL",
    "N3HUB_WORKER_METRICS_PORT",
    "PROMETHEUS_MULTIPROC_DIR",
    "HOST",
    "PORT",
)
# Knobs that change what is measured; listed in the results when the caller sets them.
TUNING_VARIABLES = (
    "WEB_CONCURRENCY",
    "GUNICORN_WORKER_CLASS",
    "GUNICORN_THREADS",
    "GUNICORN_ACCESSLOG",
    "GUNICORN_REUSE_PORT",
    "FLASK_ENV",
)


def tuning_overrides(env: dict[str, str]) -> dict[str, str]:
    """The caller's settings that differ from the defaults a user gets."""
    return {
        name: value
        for name, value in sorted(env.items())
        if (name.startswith("N3HUB_") or name in TUNING_VARIABLES) and name not in OWN_VARIABLES
    }


def gunicorn_settings() -> dict[str, Any]:
    """Workers, worker type and threads as the project's ``gunicorn.conf.py`` computes them here."""
    settings = runpy.run_path(str(PROJECT_ROOT / "gunicorn.conf.py"))
    return {key: settings[key] for key in ("workers", "threads", "worker_class", "accesslog")}


def group_cpu_seconds(group: int) -> float:
    """CPU time used so far by the live processes of process group ``group``."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name, in parentheses, may hold spaces: split after it.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group:
            total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def group_cpu_share(group: int, seconds: float = 0.5) -> float:
    """The share of one CPU that process group ``group`` uses over ``seconds``."""
    before = group_cpu_seconds(group)
    time.sleep(seconds)
    return (group_cpu_seconds(group) - before) / seconds


def _run_admin(url: str, *statements: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


class Database:
    """The database of one run: a SQLite file in ``directory``, or a fresh server database."""

    def __init__(self, requested_url: str, directory: Path) -> None:
        url = make_url(normalise_database_url(requested_url or "sqlite://"))
        self.kind = url.get_backend_name()
        if self.kind == "sqlite":
            self.url = f"sqlite:///{directory / 'messages.db'}"
            self._admin_url = None
        elif self.kind in ("postgresql", "mysql", "mariadb"):
            server_database = "postgres" if self.kind == "postgresql" else "mysql"
            admin = url if url.database != BENCH_DATABASE else url.set(database=server_database)
            self._admin_url = admin.render_as_string(hide_password=False)
            self.url = url.set(database=BENCH_DATABASE).render_as_string(hide_password=False)
        else:
            raise SystemExit(
                f"The bench runs on SQLite, PostgreSQL, MySQL or MariaDB, not {self.kind}"
            )

    def _drop_statement(self) -> str:
        if self.kind == "postgresql":
            return f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)'
        return f"DROP DATABASE IF EXISTS `{BENCH_DATABASE}`"

    def create(self) -> None:
        if self._admin_url:
            quoted = f'"{BENCH_DATABASE}"' if self.kind == "postgresql" else f"`{BENCH_DATABASE}`"
            _run_admin(self._admin_url, self._drop_statement(), f"CREATE DATABASE {quoted}")

    def drop(self) -> None:
        if self._admin_url:
            _run_admin(self._admin_url, self._drop_statement())

    def describe(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)


class Stack:
    """Redis, the database and the processes of one run; a context manager that stops them."""

    def __init__(self, requested_database_url: str, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._exit = ExitStack()
        self.workdir = Path(tempfile.mkdtemp(prefix="n3hub-bench-"))
        self._exit.callback(shutil.rmtree, self.workdir, ignore_errors=True)
        try:
            self.database = Database(requested_database_url, self.workdir)
        except BaseException:
            self._exit.close()
            raise
        self.gunicorn = gunicorn_settings()
        self.env: dict[str, str] = {}
        self.app: Flask | None = None
        self.redis: RedisServer | None = None
        self.worker: ManagedProcess | None = None

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._exit.close()

    def start(self) -> Flask:
        """Start Redis, create and migrate the database; return an app bound to both."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        redis = RedisServer(self.workdir / "redis")
        self._exit.callback(redis.stop)
        self.redis = redis.start()
        self.database.create()
        self._exit.callback(self.database.drop)
        metrics_dir = self.workdir / "prometheus"
        metrics_dir.mkdir()
        env = {name: value for name, value in os.environ.items() if name not in OWN_VARIABLES}
        env.update(
            DATABASE_URL=self.database.url,
            CELERY_BROKER_URL=f"{redis.url}/0",
            CELERY_RESULT_BACKEND=f"{redis.url}/1",
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
            PYTHONPATH=str(PROJECT_ROOT),
            # Counted as in production, never reached: the bench measures throughput.
            N3HUB_RATE_LIMIT="1000000/second",
        )
        self.env = env
        # This process only seeds and reads the database: keep its log quiet.
        app = create_app({**load_config(env), "LOG_LEVEL": "WARNING"})
        self._exit.callback(self._dispose, app)
        self.app = app
        with app.app_context():
            use_api_key(create_key("bench", "bench", frozenset(Scope))[0])
        return app

    @staticmethod
    def _dispose(app: Flask) -> None:
        with app.app_context():
            db.engine.dispose()

    def start_web(self, name: str, app_spec: str | None = None, probe: str = "/healthz") -> Web:
        """Gunicorn with the project's config; ``app_spec`` replaces the config's app."""
        port = free_port()
        workers = self.gunicorn["workers"]
        process = gunicorn_web(self.env, self.log_dir / f"{name}.log", port=port, workers=workers)
        if app_spec is not None:
            process.argv.append(app_spec)
        self._exit.callback(process.stop)
        process.start()
        process.wait_until_answering(f"http://127.0.0.1:{port}{probe}", f"{name} on port {port}")
        # One worker answering is not all of them: wait until the others have loaded too.
        wait_for(lambda: group_cpu_share(process.pid) < 0.05, timeout=60, interval=0)
        return Web(process, port)

    def start_worker(self, **env: str) -> ManagedProcess:
        """A Celery worker with the seed's command and two pool processes; ``env`` on top."""
        log_path = self.log_dir / "worker.log"
        worker = celery_worker(
            {**self.env, **env}, log_path, concurrency=WORKER_CONCURRENCY, hostname="bench"
        )
        self._exit.callback(worker.stop)
        self.worker = worker.start()
        return worker

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None


class Web:
    """A running Gunicorn server and its port."""

    def __init__(self, process: ManagedProcess, port: int) -> None:
        self.process = process
        self.port = port

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.process.stop()

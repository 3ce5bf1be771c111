"""Database engine set-up, transaction helpers and schema upgrades on start.

SQLite is shared by the web processes and the workers, so every connection uses
WAL (readers never block the writer), a busy timeout (writers queue instead of
failing), and write transactions that take the write lock at BEGIN, which avoids
SQLite's instant SQLITE_BUSY when a reading transaction later tries to write.
Writers also queue on an OS lock on a file beside the database before BEGIN:
SQLite's own busy handler polls with sleeps of up to 100 ms, which under
contention leaves the database idle while writers sleep; a kernel lock hands
over at once (waited for off the event loop under gevent: :mod:`app.cooperative`).
Pooled connections are dropped in forked children (Gunicorn, Celery prefork).
What MySQL and MariaDB need besides (isolation, the server check, the
migration lock) is in :mod:`app.mysql`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pymysql
from flask import Flask, current_app
from flask_migrate import upgrade
from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from app import mysql, tallies
from app.cooperative import call_blocking
from app.extensions import db, migrate

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
WRITE_OPTION = "n3hub_write"
# Any constant works; it only has to be the same in every process that migrates.
MIGRATION_LOCK_ID = 0x4E334855

WAL_SWITCH_RETRY_SECONDS = 0.005
_TRANSIENT_SQLSTATES = {
    "40001",  # serialization failure
    "40P01",  # deadlock detected
}
# Transient errors that mean other transactions are in the way, not an unreachable server.
_BUSY_SQLSTATES = _TRANSIENT_SQLSTATES | {"55P03"}  # lock not available
_BUSY_SQLITE_WORDS = ("locked", "busy")
_BUSY_MYSQL_CODES = {1205, 1213}  # lock wait timeout, deadlock

_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _drop_inherited_connections() -> None:
    for engine in list(_engines):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_drop_inherited_connections)


def _create_private(database: Path) -> None:
    """Create the SQLite file readable by its owner only; its -wal and -shm files follow."""
    database.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(database, os.O_RDWR | os.O_CREAT, 0o600))


def init_app(app: Flask) -> None:
    """Bind SQLAlchemy and Alembic to the app and prepare the engine."""
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        _create_private(Path(url.database))
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", _engine_options(url.get_backend_name()))
    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))
    with app.app_context():
        engine = db.engine
        _engines.add(engine)
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine, app.config)
        try:
            if mysql.is_mysql(engine.dialect):
                with engine.connect() as connection:
                    mysql.check_server(connection)
            if app.config["AUTO_MIGRATE"]:
                upgrade_schema()
            with engine.connect() as connection:
                tallies.verify(connection)
        finally:
            # Leave no pooled connection behind for a process that forks after this.
            engine.dispose()


def _engine_options(backend: str) -> dict[str, Any]:
    if backend in mysql.DIALECTS:
        return mysql.engine_options()
    # A network database may drop idle connections; a local SQLite file cannot.
    return {"pool_pre_ping": backend != "sqlite"}


def _configure_sqlite(engine: Engine, config: dict[str, Any]) -> None:
    busy_ms = int(config["SQLITE_BUSY_TIMEOUT"] * 1000)
    synchronous = config["SQLITE_SYNCHRONOUS"]

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy so that "begin" below decides the BEGIN.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute(f"PRAGMA busy_timeout={busy_ms}")
        enable_wal(dbapi_connection, busy_ms / 1000)
        dbapi_connection.execute(f"PRAGMA synchronous={synchronous}")

    @event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(WRITE_OPTION, False)
        # Straight to the driver: this runs for every transaction, reads included.
        connection.connection.dbapi_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


def enable_wal(dbapi_connection: sqlite3.Connection, patience_seconds: float) -> None:
    """Put the database in WAL mode (a no-op once it is), retrying while others switch it.

    Switching a new file to WAL takes an exclusive lock, and a connection that
    finds another one switching at the same moment gets "database is locked" at
    once, without the busy handler: it happened when Gunicorn's workers booted
    together on a new database.
    """
    deadline = time.monotonic() + patience_seconds
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(WAL_SWITCH_RETRY_SECONDS)


class _HostWriterQueue:
    """Orders this host's SQLite writers: a thread lock, then a POSIX lock on a file.

    POSIX record locks belong to a process and are not inherited by ``fork``, so
    a pool process forked while its parent writes does not end up holding the
    parent's lock (flock locks would be). Threads of one process share a POSIX
    lock, so they queue on the thread lock first; that one is replaced in a
    forked child, where it may have been copied while held.
    """

    def __init__(self) -> None:
        self._threads = threading.Lock()
        os.register_at_fork(after_in_child=self._reset_after_fork)

    def _reset_after_fork(self) -> None:
        self._threads = threading.Lock()

    @contextmanager
    def hold(self, database_path: str) -> Iterator[None]:
        with self._threads:
            descriptor = os.open(f"{database_path}-writelock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                _lock_exclusively(descriptor)
                yield
            finally:
                os.close(descriptor)  # closing releases the lock


def _lock_exclusively(descriptor: int) -> None:
    """Take the POSIX write lock on ``descriptor``, waiting off the event loop if it is held.

    POSIX locks belong to the process, so a lock taken on gevent's native thread
    is this process's lock all the same, released when the descriptor closes.
    """
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        call_blocking(fcntl.lockf, descriptor, fcntl.LOCK_EX)


_host_writers = _HostWriterQueue()


@contextmanager
def _writer_queue(engine: Engine) -> Iterator[None]:
    """Wait for this host's other SQLite writers; a no-op for other databases."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        yield
        return
    with _host_writers.hold(database):
        yield


@contextmanager
def write_transaction() -> Iterator[Connection]:
    """A transaction for writes: it holds SQLite's write lock from BEGIN to COMMIT."""
    engine = db.engine
    with engine.connect() as connection, _writer_queue(engine):
        connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            yield connection


@contextmanager
def driver_write_transaction() -> Iterator[tuple[Any, Dialect]]:
    """A write transaction on the DB-API connection itself, and the dialect it speaks.

    The same rules as :func:`write_transaction` (this host's writer queue, the
    write lock from BEGIN on SQLite) without SQLAlchemy's ``Connection`` layer,
    for the one transaction whose fixed cost is worth cutting: the ingest's
    (:mod:`app.pending_rows`). Errors come straight from the driver;
    :func:`is_transient_error` knows them.
    """
    engine = db.engine
    with _writer_queue(engine):
        pooled = engine.raw_connection()
        try:
            driver_connection = pooled.driver_connection
            if engine.dialect.name == "sqlite":
                driver_connection.execute("BEGIN IMMEDIATE")
            yield driver_connection, engine.dialect
            driver_connection.commit()
        except BaseException:
            driver_connection.rollback()
            raise
        finally:
            pooled.close()


@contextmanager
def read_connection() -> Iterator[Connection]:
    """A connection for reads; its transaction never takes a write lock."""
    with db.engine.connect() as connection:
        yield connection


def is_transient_error(error: BaseException) -> bool:
    """Whether a database error is worth retrying (locked, busy, lost connection, deadlock).

    Knows SQLAlchemy's wrapped errors and the drivers' own, which
    :func:`driver_write_transaction` lets through.
    """
    if isinstance(
        error,
        OperationalError
        | sqlite3.OperationalError
        | psycopg.OperationalError
        | pymysql.OperationalError  # deadlock, lock wait timeout, lost connection
        | pymysql.InterfaceError,  # the connection was already closed
    ):
        return True
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig
    return getattr(error, "sqlstate", "") in _TRANSIENT_SQLSTATES


def is_busy_error(error: BaseException) -> bool:
    """Whether a transient database error means "busy" (locks, deadlocks), not "unreachable"."""
    if isinstance(error, DBAPIError) and error.orig is not None:
        error = error.orig
    if isinstance(error, sqlite3.OperationalError):
        return any(word in str(error) for word in _BUSY_SQLITE_WORDS)
    if getattr(error, "sqlstate", None) in _BUSY_SQLSTATES:
        return True
    code = error.args[0] if error.args else None
    return code in _BUSY_MYSQL_CODES


@contextmanager
def migration_lock(connection: Connection) -> Iterator[None]:
    """Serialise concurrent schema upgrades: web and worker processes start together.

    Taken before the migrations' transaction begins, which then continues the
    one the lock statement opened. SQLite needs nothing: that transaction holds
    the write lock from BEGIN. PostgreSQL's advisory lock ends with it; MySQL
    commits each DDL statement at once, so there a named lock is held until the
    transaction has committed the new revision.
    """
    if mysql.is_mysql(connection.dialect):
        with mysql.migration_lock(connection):
            yield
        return
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
    yield


def upgrade_schema() -> None:
    """Bring the database to the newest migration (a no-op when it is current)."""
    upgrade(directory=current_app.extensions["migrate"].directory)

"""Database helpers: transient errors, switching SQLite files to WAL, waiting for the write lock."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import psycopg
import pymysql
import pytest
from psycopg import errors as pg_errors
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from app.database import enable_wal, is_transient_error
from app.mysql import UnsupportedDatabase, require_skip_locked
from tests.conftest import bearer, env_api_key, stack_environment, start_web
from tests.support.polling import wait_for
from tests.support.processes import RedisServer


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.IntegrityError("UNIQUE constraint failed"), False),
        (psycopg.OperationalError("server closed the connection"), True),
        (pg_errors.SerializationFailure("could not serialize"), True),
        (pg_errors.DeadlockDetected("deadlock detected"), True),
        (pg_errors.UniqueViolation("duplicate key"), False),
        (pymysql.OperationalError(1213, "Deadlock found when trying to get lock"), True),
        (pymysql.OperationalError(1205, "Lock wait timeout exceeded"), True),
        (pymysql.InterfaceError(0, ""), True),
        (pymysql.IntegrityError(1062, "Duplicate entry"), False),
        (OperationalError("UPDATE", {}, sqlite3.OperationalError("locked")), True),
        (DBAPIError("UPDATE", {}, pg_errors.SerializationFailure("x")), True),
        (IntegrityError("INSERT", {}, pg_errors.UniqueViolation("x")), False),
        (ValueError("not a database error"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_transient_errors(error: Exception, transient: bool) -> None:
    assert is_transient_error(error) is transient


@pytest.mark.parametrize(
    "version",
    [
        "8.0.1",
        "8.0.36",
        "8.4.3-log",
        "9.1.0",
        "10.6.0-MariaDB",
        "10.6.21-MariaDB-log",
        "5.5.5-10.11.19-MariaDB-0+deb12u1",
        "11.4.2-MariaDB-ubu2404",
    ],
)
def test_mysql_servers_with_skip_locked_are_accepted(version: str) -> None:
    require_skip_locked(version)


@pytest.mark.parametrize(
    "version",
    ["5.7.44", "5.7.44-log", "8.0.0-dmr", "5.5.5-10.5.27-MariaDB", "10.5.9-MariaDB-1:10.5.9"],
)
def test_mysql_servers_without_skip_locked_are_refused_in_one_line(version: str) -> None:
    with pytest.raises(UnsupportedDatabase) as refused:
        require_skip_locked(version)
    message = str(refused.value)
    assert version in message and "MySQL 8.0.1+, MariaDB 10.6+" in message
    assert "\n" not in message


def _switch_when_released(path: str, barrier: Any, outcomes: Any) -> None:
    barrier.wait()
    try:
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA busy_timeout=5000")
        enable_wal(connection, 5.0)
        outcomes.put(connection.execute("PRAGMA journal_mode").fetchone()[0])
        connection.close()
    except Exception as error:  # reported, so that the test names it rather than waits
        outcomes.put(repr(error))


def test_processes_switching_a_new_file_to_wal_together_all_succeed(tmp_path: Path) -> None:
    """Without the retry, about one round in ten had a process fail with "database is locked"."""
    context = multiprocessing.get_context("fork")
    processes_per_round = 6
    for round_number in range(30):
        path = str(tmp_path / f"new-{round_number}.db")
        barrier = context.Barrier(processes_per_round)
        outcomes = context.Queue()
        processes = [
            context.Process(target=_switch_when_released, args=(path, barrier, outcomes))
            for _ in range(processes_per_round)
        ]
        for process in processes:
            process.start()
        results = [outcomes.get(timeout=30) for _ in processes]
        for process in processes:
            process.join(timeout=30)
        assert results == ["wal"] * processes_per_round, f"round {round_number}: {results}"


def _http(
    port: int, key: str, path: str, body: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        headers={"Content-Type": "application/json", **bearer(key)},
    )
    with urlopen(request, timeout=10) as response:
        return response.status, json.load(response)


def _lock_waiters() -> int:
    """Blocked POSIX lock requests on this machine (``->`` lines of /proc/locks)."""
    return sum("->" in line for line in Path("/proc/locks").read_text().splitlines())


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks")
def test_a_web_process_answers_while_its_write_waits_for_another_process(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Under gevent, one request waiting for SQLite's write lock must not stop the others."""
    database = tmp_path / "messages.db"
    env = stack_environment(f"sqlite:///{database}", redis_server.url)
    key = env_api_key(env)
    web, port = start_web(env, tmp_path, workers=1)
    descriptor = -1
    try:
        waiters_before = _lock_waiters()
        # This test process plays another writer: it holds the host's writer lock.
        descriptor = os.open(f"{database}-writelock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.lockf(descriptor, fcntl.LOCK_EX)
        with ThreadPoolExecutor(max_workers=1) as pool:
            post = pool.submit(_http, port, key, "/messages", {"content": "waits for the lock"})
            wait_for(lambda: _lock_waiters() > waiters_before, what="the POST to wait for the lock")
            status, stats = _http(port, key, "/messages/stats")
            assert (status, stats["pending"]) == (200, 0)
            assert not post.done()
            os.close(descriptor)
            descriptor = -1
            status, created = post.result(timeout=10)
    finally:
        if descriptor >= 0:
            os.close(descriptor)
        web.stop()
    assert (status, created["status"]) == (201, "pending")

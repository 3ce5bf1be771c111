"""Database helpers: which errors are transient, and switching SQLite files to WAL."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from app.database import enable_wal, is_transient_error


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.IntegrityError("UNIQUE constraint failed"), False),
        (psycopg.OperationalError("server closed the connection"), True),
        (pg_errors.SerializationFailure("could not serialize"), True),
        (pg_errors.DeadlockDetected("deadlock detected"), True),
        (pg_errors.UniqueViolation("duplicate key"), False),
        (OperationalError("UPDATE", {}, sqlite3.OperationalError("locked")), True),
        (DBAPIError("UPDATE", {}, pg_errors.SerializationFailure("x")), True),
        (IntegrityError("INSERT", {}, pg_errors.UniqueViolation("x")), False),
        (ValueError("not a database error"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_transient_errors(error: Exception, transient: bool) -> None:
    assert is_transient_error(error) is transient


def _switch_when_released(path: str, barrier: Any, outcomes: Any) -> None:
    barrier.wait()
    try:
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA busy_timeout=5000")
        enable_wal(connection, 5.0)
        outcomes.put(connection.execute("PRAGMA journal_mode").fetchone()[0])
        connection.close()
    except sqlite3.Error as error:
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

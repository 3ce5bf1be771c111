"""Attempt history: a row per ended attempt, written in the transaction of its outcome.

Whatever ends a claim (:func:`app.lifecycle.finish_batch`, ``release_claims``,
``recover_expired_leases``) records its attempts here just before it moves the
messages. An attempt is recorded only while its message is still
``processing`` under that attempt number, the fence the outcome's UPDATE uses
too, and the read that checks it locks the messages (PostgreSQL, MySQL; SQLite
holds the write lock already), so exactly the attempts whose outcome is written
are recorded. When the attempt started and which worker held it come from the
message row, where the claim put them. Each message then keeps only its newest
``N3HUB_ATTEMPTS_KEPT`` attempts.

A batch's attempts cost three statements whatever its size: read and lock the
messages, insert the attempts (one multi-row INSERT), read those messages'
history ids to find what to trim; a message over the limit then costs a DELETE
of its rows up to an id (not a DELETE whose subquery reads the same table,
which MySQL refuses). They run as plain SQL on the DB-API connection inside the
caller's transaction, as :mod:`app.pending_rows` does for the ingest: through
SQLAlchemy the row-by-row insert and trim cost nearly as much as the outcomes
themselves. ``started_at`` is copied as the driver read it, so it is stored
exactly as the claim stored it.
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy.engine import Connection, Dialect

from app import driver_sql
from app.models import (
    WORKER_LENGTH,
    AttemptOutcome,
    Message,
    MessageAttempt,
    MessageStatus,
)

# Attempts recorded per statement: each statement's parameters stay well within every
# database's limit (SQLite's is 32766) whatever the size of a claim.
CHUNK = 1000


def worker_name() -> str:
    """This process as the attempt history names it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"[-WORKER_LENGTH:]


@dataclass(frozen=True)
class Ended:
    """An attempt that ended: the message, its attempt number, how and when."""

    message_id: int
    number: int
    outcome: AttemptOutcome
    error: str | None
    at: datetime


class _Statements:
    """The history's SQL in one dialect's parameter style; ``{ids}`` is a list, ``{rows}`` rows."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        messages, history = Message.__tablename__, MessageAttempt.__tablename__
        lock = "" if dialect.name == "sqlite" else " FOR UPDATE"
        # Table names are the models' own and every value is a bound parameter: no injection.
        self.held = (
            f"SELECT id, attempts, started_at, claimed_by FROM {messages}"  # nosec B608
            f" WHERE status = '{MessageStatus.PROCESSING}' AND id IN ({{ids}}) ORDER BY id{lock}"
        )
        self.insert = (
            f"INSERT INTO {history}"  # nosec B608
            " (message_id, number, started_at, ended_at, outcome, error, worker) VALUES {rows}"
        )
        self.kept = (
            f"SELECT message_id, id FROM {history}"  # nosec B608
            " WHERE message_id IN ({ids}) ORDER BY message_id, id DESC"
        )
        mark = driver_sql.mark(dialect)
        self.trim = f"DELETE FROM {history} WHERE message_id = {mark} AND id <= {mark}"  # nosec B608
        self.timestamp = driver_sql.timestamp(dialect)

    def run(self, cursor: Any, sql: str, ids: list[int]) -> None:
        """Execute ``sql`` with ``ids`` as its list of ids."""
        cursor.execute(sql.format(ids=driver_sql.marks(self.dialect, len(ids))), ids)

    def add(self, cursor: Any, rows: list[tuple[Any, ...]]) -> None:
        """Insert ``rows`` (a value for each column of :attr:`insert`) in one statement."""
        row = f"({driver_sql.marks(self.dialect, len(rows[0]))})"
        sql = self.insert.format(rows=", ".join([row] * len(rows)))
        cursor.execute(sql, [value for values in rows for value in values])


_for = driver_sql.per_dialect(_Statements)


def record(connection: Connection, ended: list[Ended]) -> None:
    """Record the attempts still held by their claims, then trim those messages' history."""
    statements = _for(connection.dialect)
    keep = current_app.config["ATTEMPTS_KEPT"]
    cursor = connection.connection.driver_connection.cursor()
    try:
        for start in range(0, len(ended), CHUNK):
            _record(cursor, statements, ended[start : start + CHUNK], keep)
    finally:
        cursor.close()


def _record(cursor: Any, statements: _Statements, ended: list[Ended], keep: int) -> None:
    statements.run(cursor, statements.held, [attempt.message_id for attempt in ended])
    held = {row[0]: row[1:] for row in cursor.fetchall()}
    rows = []
    for attempt in ended:
        number, started_at, worker = held.get(attempt.message_id, (None, None, None))
        if number != attempt.number:
            continue  # no longer this claim's: its outcome will not be written either
        when = (started_at, statements.timestamp(attempt.at))
        rows.append(
            (attempt.message_id, number, *when, attempt.outcome.value, attempt.error, worker)
        )
    if not rows:
        return
    statements.add(cursor, rows)
    statements.run(cursor, statements.kept, list(dict.fromkeys(row[0] for row in rows)))
    beyond = _newest_beyond(cursor.fetchall(), keep)
    if beyond:
        cursor.executemany(statements.trim, beyond)


def _newest_beyond(history: list[tuple[int, int]], keep: int) -> list[tuple[int, int]]:
    """Where to cut: (message, newest attempt id to delete) for each message over ``keep``.

    ``history`` holds ``(message_id, id)`` rows, each message's newest first.
    """
    beyond = []
    seen: Counter[int] = Counter()
    for message_id, attempt_id in history:
        seen[message_id] += 1
        if seen[message_id] == keep + 1:
            beyond.append((message_id, attempt_id))
    return beyond

"""Bulk inserts of messages straight into the database, with the tallies kept true.

One ``INSERT ... SELECT`` per chunk generates the rows inside the database (a
recursive CTE on SQLite, MySQL and MariaDB, ``generate_series`` on PostgreSQL), which fills a
million rows in seconds. Row ``n`` gets its status from ``n % 100``: the first
``completed`` percent are completed, the next ``failed`` percent failed, the
rest pending; all belong to the default tenant. The status tallies move by the
counts inserted, in the same transaction, as :mod:`app.tallies` expects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Flask
from sqlalchemy import delete, func, select, text

from app import tallies
from app.database import write_transaction
from app.models import DEFAULT_TENANT, Message, MessageStatus

# The SQL pieces of a row's content and result, joined by each dialect's concatenation.
CONTENT = ("'benchmark message '", "n", "': the quick brown fox jumps over the lazy dog'")
RESULT = (
    '\'{"characters": 61, "bytes": 61, "words": 11, "lines": 1, "sha256": "\'',
    "DIGEST",
    '\'", "normalized": "benchmark message \'',
    "n",
    "': the quick brown fox jumps over the lazy dog\"}'",
)
MYSQL = {
    # MySQL and MariaDB put the WITH clause after INSERT, and join text with CONCAT.
    "with_after_insert": True,
    "prefix": "WITH RECURSIVE seq(n) AS "
    "(SELECT CAST(:first AS UNSIGNED) UNION ALL SELECT n + 1 FROM seq WHERE n < :last) ",
    "source": "seq",
    "at": "DATE_SUB(CAST(:base AS DATETIME(6)), "
    "INTERVAL CAST((:total - n) * :spacing * 1000000 AS SIGNED) MICROSECOND)",
    "digest": "CONCAT(MD5(n), MD5(n + 1))",
    "json": "{}",
    "concat": "CONCAT({})",
}
# Per dialect: the row source, a timestamp ``(total - n) * spacing`` seconds before
# ``base``, a random-looking SHA-256 hex digest, how a text becomes JSON, and how
# texts are joined.
DIALECTS = {
    "sqlite": {
        "prefix": "WITH RECURSIVE seq(n) AS "
        "(SELECT :first UNION ALL SELECT n + 1 FROM seq WHERE n < :last) ",
        "source": "seq",
        "at": "strftime('%Y-%m-%d %H:%M:%f', julianday(:base) - (:total - n) * :spacing / 86400.0)"
        " || '000'",
        "digest": "lower(hex(randomblob(32)))",
        "json": "{}",
        "concat": "{}",
    },
    "postgresql": {
        "prefix": "",
        "source": "generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS seq(n)",
        "at": "CAST(:base AS timestamptz) - (:total - n) * :spacing * interval '1 second'",
        "digest": "md5(n::text) || md5((n + 1)::text)",
        "json": "CAST({} AS json)",
        "concat": "{}",
    },
    "mysql": MYSQL,
    "mariadb": MYSQL,
}


def _joined(parts: dict[str, object], pieces: tuple[str, ...]) -> str:
    separator = ", " if parts["concat"] != "{}" else " || "
    return str(parts["concat"]).format(separator.join(pieces))


@dataclass(frozen=True)
class StatusMix:
    """Shares of the inserted rows by status, in whole percent; pending takes the rest."""

    completed: int = 0
    failed: int = 0


def insert_statement(dialect: str) -> str:
    """The ``INSERT ... SELECT`` that generates rows ``:first`` to ``:last``."""
    parts = DIALECTS[dialect]
    at = parts["at"]
    done, finished = "n % 100 < :completed", "n % 100 < :finished"
    columns = {
        "tenant": f"'{DEFAULT_TENANT}'",
        "content": _joined(parts, CONTENT),
        "status": f"CASE WHEN {done} THEN 'completed' WHEN {finished} THEN 'failed' "
        "ELSE 'pending' END",
        "attempts": f"CASE WHEN {done} THEN 1 WHEN {finished} THEN 5 ELSE 0 END",
        "created_at": at,
        "updated_at": at,
        "available_at": at,
        "started_at": f"CASE WHEN {finished} THEN {at} END",
        "completed_at": f"CASE WHEN {finished} THEN {at} END",
        "last_error": f"CASE WHEN NOT ({done}) AND {finished} "
        "THEN 'PermanentProcessingError: rejected by the benchmark' END",
        "result": f"CASE WHEN {done} THEN "
        + parts["json"].format(
            _joined(parts, tuple(parts["digest"] if p == "DIGEST" else p for p in RESULT))
        )
        + " END",
    }
    insert = f"INSERT INTO messages ({', '.join(columns)}) "
    select = f"SELECT {', '.join(columns.values())} FROM {parts['source']}"
    if parts.get("with_after_insert"):
        return f"{insert}{parts['prefix']}{select}"
    return f"{parts['prefix']}{insert}{select}"


def insert_messages(
    app: Flask,
    count: int,
    mix: StatusMix,
    spacing_seconds: float,
    chunk: int = 100_000,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Insert ``count`` messages, created ``spacing_seconds`` apart up to now; counts by status."""
    base = datetime.now(UTC)
    inserted: dict[str, int] = {}
    with app.app_context():
        engine_dialect = app.extensions["sqlalchemy"].engine.dialect
        dialect = engine_dialect.name
        statement = text(insert_statement(dialect))
        # MySQL (not MariaDB) stops a recursive CTE at 1,000 rows unless told otherwise.
        setup = (
            f"SET SESSION cte_max_recursion_depth = {chunk + 1}"
            if getattr(engine_dialect, "is_mariadb", True) is False
            else None
        )
        # SQLite and MySQL keep naive UTC; PostgreSQL takes the aware datetime.
        naive = base.replace(tzinfo=None).isoformat(" ")
        base_value = base if dialect == "postgresql" else naive
        for first in range(1, count + 1, chunk):
            last = min(first + chunk - 1, count)
            counts = _insert_chunk(
                statement, first, last, count, mix, spacing_seconds, base_value, setup
            )
            for status, number in counts.items():
                inserted[status] = inserted.get(status, 0) + number
            if progress is not None:
                progress(last)
    return inserted


def _insert_chunk(
    statement: object,
    first: int,
    last: int,
    total: int,
    mix: StatusMix,
    spacing: float,
    base: object,
    setup: str | None,
) -> dict[str, int]:
    params = {
        "first": first,
        "last": last,
        "completed": mix.completed,
        "finished": mix.completed + mix.failed,
        "total": total,
        "spacing": spacing,
        "base": base,
    }
    with write_transaction() as connection:
        if setup is not None:
            connection.exec_driver_sql(setup)
        before = connection.execute(select(func.coalesce(func.max(Message.id), 0))).scalar()
        connection.execute(statement, params)
        counts = dict(
            connection.execute(
                select(Message.status, func.count())
                .where(Message.id > before)
                .group_by(Message.status)
            ).all()
        )
        deltas = {(DEFAULT_TENANT, status): number for status, number in counts.items()}
        deltas[DEFAULT_TENANT, tallies.PROCESSED_COMPLETED] = counts.get(MessageStatus.COMPLETED, 0)
        deltas[DEFAULT_TENANT, tallies.PROCESSED_FAILED] = counts.get(MessageStatus.FAILED, 0)
        tallies.apply(connection, deltas)
    return counts


def delete_messages_after(app: Flask, last_kept_id: int) -> int:
    """Delete the messages with ids above ``last_kept_id``, taking them out of the tallies."""
    with app.app_context(), write_transaction() as connection:
        newer = Message.id > last_kept_id
        counts = dict(
            connection.execute(
                select(Message.status, func.count()).where(newer).group_by(Message.status)
            ).all()
        )
        connection.execute(delete(Message).where(newer))
        tallies.apply(
            connection, {(DEFAULT_TENANT, status): -number for status, number in counts.items()}
        )
    return sum(counts.values())

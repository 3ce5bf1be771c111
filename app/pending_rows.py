"""The ingest hot path: new pending messages written with fixed SQL on the driver's cursor.

``POST /messages`` is the request the service answers most, and its
transaction is always the same two statements: insert the messages, add their
number to the pending tally (one update per tenant among them). A scheduled
message (``deliver_at``) is the same insert, only available later. Through
SQLAlchemy Core each statement costs more CPU in execution-context and result
machinery than SQLite spends running it (BENCHMARKS.md, "Ingest transaction on
the DB-API connection"), so these two
run as plain SQL on the DB-API connection
(:func:`app.database.driver_write_transaction`). Timestamps go
through the bind processor of the column type as the dialect implements it
(on SQLite, SQLAlchemy's own text format), once per transaction, so they are
stored exactly as SQLAlchemy stores them elsewhere. Every other write keeps to
SQLAlchemy.

Each message is its own single-row INSERT, which gives its id back: through
``RETURNING`` where the database has it (SQLite, PostgreSQL), else from the
driver's ``lastrowid`` (MySQL and MariaDB: ``LAST_INSERT_ID()`` of that one
row). A multi-row INSERT would save round trips, but MySQL's default
auto-increment lock mode ("interleaved") does not promise its ids are
consecutive, so they could not be told from another process's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Dialect

from app import driver_sql, mysql, tallies
from app.models import Message, MessageStatus, Tally

PENDING = MessageStatus.PENDING
# Every column of a message, in table order: those a new message does not set stay NULL.
_COLUMNS = tuple(Message.__table__.columns.keys())


class _Statements:
    """The insert and tally SQL in one dialect's parameter style."""

    def __init__(self, dialect: Dialect) -> None:
        mark = driver_sql.mark(dialect)
        table, tally = Message.__tablename__, Tally.__tablename__
        self.returning = not mysql.is_mysql(dialect)
        # Table names are the models' own and every value is a bound parameter: no injection.
        self.insert = (
            f"INSERT INTO {table}"  # nosec B608
            " (tenant, content, status, attempts, created_at, updated_at, available_at, deliver_at)"
            f" VALUES ({mark}, {mark}, '{PENDING}', 0, {mark}, {mark}, {mark}, {mark})"
        ) + (" RETURNING id" if self.returning else "")
        self.add_to_tally = (
            f"UPDATE {tally} SET value = value + {mark}"  # nosec B608
            f" WHERE tenant = {mark} AND name = {mark} AND shard = {mark}"
        )
        self.timestamp = driver_sql.timestamp(dialect)


_for = driver_sql.per_dialect(_Statements)


def insert(
    driver_connection: Any,
    dialect: Dialect,
    items: list[tuple[str, str]],
    now: datetime,
    deliver_at: Sequence[datetime | None] | None = None,
) -> list[dict[str, Any]]:
    """Insert pending (tenant, content) messages in the transaction; their rows, in order.

    ``deliver_at``, one per item when given, holds back a message until then.
    """
    statements = _for(dialect)
    stored_now = statements.timestamp(now)
    deliveries = deliver_at if deliver_at is not None else [None] * len(items)
    cursor = driver_connection.cursor()
    try:
        ids = []
        for (tenant, content), delivery in zip(items, deliveries, strict=True):
            if delivery is None:
                timing = (stored_now, stored_now, stored_now, None)
            else:
                available = statements.timestamp(max(now, delivery))
                timing = (stored_now, stored_now, available, statements.timestamp(delivery))
            cursor.execute(statements.insert, (tenant, content, *timing))
            ids.append(cursor.fetchone()[0] if statements.returning else cursor.lastrowid)
        shard = tallies.random_shard()
        for tenant, count in sorted(Counter(tenant for tenant, _ in items).items()):
            cursor.execute(statements.add_to_tally, (count, tenant, PENDING.value, shard))
    finally:
        cursor.close()
    return [
        _new_row(message_id, tenant, content, now, delivery)
        for message_id, (tenant, content), delivery in zip(ids, items, deliveries, strict=True)
    ]


def _new_row(
    message_id: int, tenant: str, content: str, now: datetime, deliver_at: datetime | None
) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(_COLUMNS)
    row.update(
        id=message_id,
        tenant=tenant,
        content=content,
        status=PENDING,
        attempts=0,
        created_at=now,
        updated_at=now,
        available_at=now if deliver_at is None else max(now, deliver_at),
        deliver_at=deliver_at,
    )
    return row

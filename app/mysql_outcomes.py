"""The outcomes of a batch written to MySQL or MariaDB by one UPDATE per status.

Elsewhere an outcome is one UPDATE per message sent as an executemany, which
psycopg pipelines and SQLite runs in process. PyMySQL sends each of those
statements and waits for its answer, so a batch of 200 cost 200 round trips.
Here the batch's rows travel in one statement instead, as a derived table
(``SELECT ... UNION ALL SELECT ...``, which MySQL and MariaDB both accept) that
the UPDATE joins on id and attempt number: the same fencing as the row-by-row
form, a row changing only while that claim still holds it, and the row count
saying how many did.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from sqlalchemy.engine import Connection

from app import driver_sql
from app.models import Message, MessageStatus

PROCESSING = MessageStatus.PROCESSING


def record_outcomes(
    connection: Connection,
    status: MessageStatus,
    rows: list[dict[str, Any]],
    from_rows: Mapping[str, str],
    stamped: tuple[str, ...],
) -> int:
    """Move the claims in ``rows`` to ``status``; return how many were still ours.

    Each row holds ``m_id``, ``m_attempts``, ``m_now`` and, for each column of
    ``from_rows``, its value under the key named there; the ``stamped`` columns
    are set to ``m_now``.
    """
    bind = _binders(connection.dialect)
    sql = _statement(status, tuple(from_rows), stamped, len(rows))
    parameters: list[Any] = []
    for row in rows:
        parameters += [row["m_id"], row["m_attempts"]]
        parameters += [bind[column](row[key]) for column, key in from_rows.items()]
    stored_now = bind["updated_at"](rows[0]["m_now"])
    parameters += [stored_now] * (1 + len(stamped))
    return connection.exec_driver_sql(sql, tuple(parameters)).rowcount


# Each column's bind processing (JSON serialised, timestamps as naive UTC).
_binders = driver_sql.per_dialect(
    lambda dialect: {
        column.name: driver_sql.binder(column.type, dialect) for column in Message.__table__.columns
    }
)


@lru_cache(maxsize=64)
def _statement(
    status: MessageStatus, from_rows: tuple[str, ...], stamped: tuple[str, ...], count: int
) -> str:
    """The joined UPDATE for ``count`` rows, in PyMySQL's ``format`` parameter style."""
    names = ("id", "attempts", *from_rows)
    first = ", ".join(f"%s AS {name}" for name in names)
    others = ", ".join("%s" for _ in names)
    batch = " UNION ALL ".join([f"SELECT {first}"] + [f"SELECT {others}"] * (count - 1))
    assignments = [f"m.status = '{status}'", "m.updated_at = %s", "m.lease_expires_at = NULL"]
    assignments += [f"m.{column} = %s" for column in stamped]
    assignments += [f"m.{column} = o.{column}" for column in from_rows]
    # The table, columns and statuses are the model's own; every value is a bound parameter.
    return (
        f"UPDATE {Message.__tablename__} AS m JOIN ({batch}) AS o"  # nosec B608
        " ON m.id = o.id AND m.attempts = o.attempts"
        f" SET {', '.join(assignments)} WHERE m.status = '{PROCESSING}'"
    )

"""Read-only views of the messages: one message, its attempts, a page of them, and the counts.

A page may be limited to a created-time range without an index on
``created_at``: ids are given in creation order, so ``created_at`` grows with
the id, and a search over ids (each probe one primary-key lookup) turns each
end of the range into an id bound, in a few lookups whatever the table's size.
Messages committed out of order by concurrent writers are milliseconds apart;
one so close to a bound may fall on its other side.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, false, select
from sqlalchemy.engine import Connection

from app import tallies
from app.database import read_connection
from app.models import Message, MessageAttempt, MessageStatus


@dataclass(frozen=True)
class Page:
    """Messages newest first, and the cursor that continues after the last one."""

    messages: list[dict[str, Any]]
    next_cursor: int | None


def get_message(message_id: int, tenant: str | None = None) -> dict[str, Any] | None:
    """One message's row, or None; with ``tenant``, only if it is that tenant's."""
    query = select(*Message.__table__.columns).where(Message.id == message_id)
    if tenant is not None:
        query = query.where(Message.tenant == tenant)
    with read_connection() as connection:
        row = connection.execute(query).one_or_none()
    return row._asdict() if row is not None else None


def get_attempts(message_id: int) -> list[dict[str, Any]]:
    """A message's recorded attempts, oldest first (only the newest few are kept)."""
    query = (
        select(*MessageAttempt.__table__.columns)
        .where(MessageAttempt.message_id == message_id)
        .order_by(MessageAttempt.id)
    )
    with read_connection() as connection:
        return [row._asdict() for row in connection.execute(query)]


@dataclass(frozen=True)
class CreatedRange:
    """Messages created at or after ``since`` and before ``until``; either end may be open."""

    since: datetime | None = None
    until: datetime | None = None


# Rows fetched from the database at a time while a page is read.
PAGE_FETCH_ROWS = 20


def list_messages(
    limit: int,
    before_id: int | None,
    status: MessageStatus | None,
    tenant: str | None = None,
    budget: tuple[int, Callable[[dict[str, Any]], int]] | None = None,
    created: CreatedRange | None = None,
) -> Page:
    """Up to ``limit`` messages with ids below ``before_id``, newest first; of one tenant or all.

    With ``budget`` (bytes, and the size of a row), the page also ends before the
    row that would pass that many bytes (its first row always counts). Rows are
    fetched a few at a time, so a page of large rows never sits in memory whole.
    With ``created``, only messages created in that range.
    """
    query = select(*Message.__table__.columns).order_by(Message.id.desc()).limit(limit + 1)
    if tenant is not None:
        query = query.where(Message.tenant == tenant)
    if status is not None:
        query = query.where(Message.status == status)
    if before_id is not None:
        query = query.where(Message.id < before_id)
    max_bytes, size = budget or (sys.maxsize, lambda _row: 0)
    rows: list[dict[str, Any]] = []
    used, has_more = 0, False
    with read_connection() as connection:
        if created is not None:
            query = _created_in(connection, query, created)
        result = connection.execution_options(
            stream_results=True, max_row_buffer=PAGE_FETCH_ROWS
        ).execute(query)
        for found in result:
            row = found._asdict()
            used += size(row)
            if len(rows) == limit or (rows and used > max_bytes):
                has_more = True
                break
            rows.append(row)
        result.close()
    return Page(messages=rows, next_cursor=rows[-1]["id"] if has_more else None)


def _created_in(connection: Connection, query: Any, created: CreatedRange) -> Any:
    """``query`` limited to the ids of the messages created in the range.

    The bounds are ids only, no condition on ``created_at``: the page is then
    read along the same indexes as without the range, whatever plan the
    database would make of a time condition it has no index for.
    """
    if created.since is not None:
        first = first_id_created_from(connection, created.since)
        query = query.where(Message.id >= first if first is not None else false())
    if created.until is not None:
        beyond = first_id_created_from(connection, created.until)
        if beyond is not None:  # else every message was created before it
            query = query.where(Message.id < beyond)
    return query


_FIRST_FROM = (
    select(Message.id, Message.created_at)
    .where(Message.id >= bindparam("from_id"))
    .order_by(Message.id)
    .limit(1)
)
_NEWEST = select(Message.id, Message.created_at).order_by(Message.id.desc()).limit(1)


def first_id_created_from(connection: Connection, moment: datetime) -> int | None:
    """The lowest id of a message created at or after ``moment``, or None.

    An interpolation search over ids: messages arrive at a rate that changes
    slowly, so the id where ``moment`` falls between two known rows is a close
    guess. Whenever a guess fails to halve the ids left, the next probe bisects,
    so the probes never exceed twice a binary search's.
    """
    newest = connection.execute(_NEWEST).first()
    if newest is None or newest.created_at < moment:
        return None
    oldest = connection.execute(_FIRST_FROM, {"from_id": 0}).one()
    if oldest.created_at >= moment:
        return int(oldest.id)
    # Rows up to ``low`` were created before ``moment``; ``found`` is the first row known
    # at or after it; ids in (low, top] are still unexplored.
    low, low_at = oldest.id, oldest.created_at
    found, found_at = newest.id, newest.created_at
    top = found - 1
    bisect = False
    while low < top:
        left = top - low
        span = (found_at - low_at).total_seconds()
        if bisect or span <= 0:
            guess = (low + 1 + top) // 2
        else:
            share = (moment - low_at).total_seconds() / span
            guess = min(max(low + 1 + int(share * (found - low - 1)), low + 1), top)
        row = connection.execute(_FIRST_FROM, {"from_id": guess}).one()
        if row.id > top:  # no row between the guess and the first one found
            top = guess - 1
        elif row.created_at >= moment:
            found, found_at, top = row.id, row.created_at, guess - 1
        else:
            low, low_at = row.id, row.created_at
        bisect = top - low > left // 2
    return int(found)


def message_stats(tenant: str | None = None) -> dict[str, int]:
    """Counts by status and their total, of one tenant or all, read from the tallies."""
    with read_connection() as connection:
        counts = tallies.read(connection, tenant)
    stats = {status.value: counts.get(status.value, 0) for status in MessageStatus}
    return {"total": sum(stats.values()), **stats}


def oldest_pending_created_at() -> Any:
    """When the oldest waiting message was created, or None when nothing waits."""
    with read_connection() as connection:
        return connection.execute(
            select(Message.created_at)
            .where(Message.status == MessageStatus.PENDING)
            .order_by(Message.id)
            .limit(1)
        ).scalar()

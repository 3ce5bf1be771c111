"""Read-only views of the messages: one message, its attempts, a page of them, and the counts."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

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


# Rows fetched from the database at a time while a page is read.
PAGE_FETCH_ROWS = 20


def list_messages(
    limit: int,
    before_id: int | None,
    status: MessageStatus | None,
    tenant: str | None = None,
    budget: tuple[int, Callable[[dict[str, Any]], int]] | None = None,
) -> Page:
    """Up to ``limit`` messages with ids below ``before_id``, newest first; of one tenant or all.

    With ``budget`` (bytes, and the size of a row), the page also ends before the
    row that would pass that many bytes (its first row always counts). Rows are
    fetched a few at a time, so a page of large rows never sits in memory whole.
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

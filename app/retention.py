"""Retention: finished messages older than their retention are deleted, a little at a time.

``N3HUB_RETENTION_COMPLETED`` and ``N3HUB_RETENTION_FAILED`` say how long a
``completed`` or ``failed`` message is kept after it ended (0 keeps it
forever). Each recovery sweep deletes at most :data:`CHUNK` expired messages of
each status, one short transaction each, so the write lock is never held long
enough to slow ingest. The candidates are the oldest :data:`WINDOW` messages of
the status by id, read without the write lock through the ``(status, id)``
index, so a sweep costs the same with a million finished messages as with a
thousand; a message that finished late (a long retry, a redrive) can make those
behind it wait until it expires too, at most one retention period more.
The status tally goes down and a ``deleted_*`` tally up in the same transaction,
so the counts keep matching the rows; the messages' attempts go with them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from app import tallies
from app.database import read_connection, write_transaction
from app.models import Message, MessageAttempt, MessageStatus

CHUNK = 500
WINDOW = 2000


def retention_periods(config: Mapping[str, float]) -> dict[MessageStatus, float]:
    """Seconds each finished status is kept, from the app's config (0: forever)."""
    return {
        MessageStatus.COMPLETED: config["RETENTION_COMPLETED"],
        MessageStatus.FAILED: config["RETENTION_FAILED"],
    }


def delete_expired(periods: Mapping[MessageStatus, float], now: datetime) -> Counter[str]:
    """Delete up to :data:`CHUNK` expired messages of each status; how many, by status."""
    deleted: Counter[str] = Counter()
    for status, seconds in periods.items():
        if seconds > 0:
            deleted[status] = _delete_chunk(status, now - timedelta(seconds=seconds))
    return deleted


def _delete_chunk(status: MessageStatus, cutoff: datetime) -> int:
    with read_connection() as connection:
        oldest = (
            select(Message.id, Message.completed_at)
            .where(Message.status == status)
            .order_by(Message.id)
            .limit(WINDOW)
            .subquery()
        )
        ids = (
            connection.execute(
                select(oldest.c.id).where(oldest.c.completed_at < cutoff).limit(CHUNK)
            )
            .scalars()
            .all()
        )
    if not ids:
        return 0
    with write_transaction() as connection:
        # Checked again, and locked: a redrive may have moved one of them meanwhile.
        expired = connection.execute(
            select(Message.id, Message.tenant)
            .where(Message.id.in_(ids), Message.status == status, Message.completed_at < cutoff)
            .with_for_update()
        ).all()
        if not expired:
            return 0
        gone = [row.id for row in expired]
        # The foreign key's cascade would do it, but SQLite does not enforce foreign keys here.
        connection.execute(delete(MessageAttempt).where(MessageAttempt.message_id.in_(gone)))
        connection.execute(delete(Message).where(Message.id.in_(gone)))
        deltas: tallies.Deltas = Counter()
        for _, tenant in expired:
            deltas[tenant, status] -= 1
            deltas[tenant, tallies.DELETED_BY_STATUS[status]] += 1
        tallies.apply(connection, deltas)
    return len(expired)

"""Running counts kept beside the messages, in the same transactions.

Reading ``GET /messages/stats`` or the processed counters then costs a few
dozen rows instead of a scan of the messages table. Each writing transaction
picks one random shard, so concurrent PostgreSQL writers rarely wait on the same
row, and updates the names in sorted order, so two of them never deadlock.

The rows are created once, by migration 0001, and only ever updated: a missing
row would make every count added to it vanish, so :func:`verify` refuses to
start on a database that lacks one.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping

from sqlalchemy import bindparam, func, inspect, select, update
from sqlalchemy.engine import Connection

from app.models import MessageStatus, Tally

SHARDS = 8  # matches the rows created by migration 0001
PROCESSED_COMPLETED = "processed_completed"
PROCESSED_FAILED = "processed_failed"
RETRIES = "retries"
RECOVERIES = "recoveries"
PROCESSED_BY_STATUS = {
    MessageStatus.COMPLETED: PROCESSED_COMPLETED,
    MessageStatus.FAILED: PROCESSED_FAILED,
}
# Messages removed by retention (app.retention), by the status they had.
DELETED_BY_STATUS = {
    MessageStatus.COMPLETED: "deleted_completed",
    MessageStatus.FAILED: "deleted_failed",
}
NAMES = (
    *MessageStatus,
    PROCESSED_COMPLETED,
    PROCESSED_FAILED,
    RETRIES,
    RECOVERIES,
    *DELETED_BY_STATUS.values(),
)


class MissingTallies(RuntimeError):
    """The database lacks tally rows, so the counts kept in them would be lost."""


_add = (
    update(Tally)
    .where(Tally.name == bindparam("tally_name"), Tally.shard == bindparam("tally_shard"))
    .values(value=Tally.value + bindparam("delta"))
)


def random_shard() -> int:
    """The shard a writing transaction updates."""
    return random.randrange(SHARDS)


def apply(connection: Connection, deltas: Mapping[str, int]) -> None:
    """Add each delta to its tally, inside the caller's transaction."""
    shard = random_shard()
    rows = [
        {"tally_name": name, "tally_shard": shard, "delta": delta}
        for name, delta in sorted(deltas.items())
        if delta
    ]
    if rows:
        connection.execute(_add, rows)


def transition_deltas(moves: Iterable[tuple[str, str]]) -> Counter[str]:
    """Tally changes for rows moving between statuses, plus the processed counters."""
    deltas: Counter[str] = Counter()
    for old, new in moves:
        deltas[old] -= 1
        deltas[new] += 1
        if new in PROCESSED_BY_STATUS:
            deltas[PROCESSED_BY_STATUS[new]] += 1
    return deltas


def read(connection: Connection) -> dict[str, int]:
    """Every tally, summed over its shards."""
    rows = connection.execute(select(Tally.name, func.sum(Tally.value)).group_by(Tally.name))
    return {name: int(total) for name, total in rows}


def verify(connection: Connection) -> None:
    """Raise :class:`MissingTallies` unless every tally has its row in every shard.

    A database whose schema is not there yet (before its first migration) passes:
    the migration creates the rows.
    """
    if not inspect(connection).has_table(Tally.__tablename__):
        return
    present = {tuple(row) for row in connection.execute(select(Tally.name, Tally.shard))}
    missing = sorted({(str(name), shard) for name in NAMES for shard in range(SHARDS)} - present)
    if missing:
        shown = ", ".join(f"{name}/{shard}" for name, shard in missing[:8])
        raise MissingTallies(
            f"{Tally.__tablename__} lacks {len(missing)} of its {len(NAMES) * SHARDS} rows "
            f"(name/shard: {shown}{', ...' if len(missing) > 8 else ''}); counts added to "
            "them would be lost. Migration 0001 creates them: restore them (value 0, or the "
            "count they held) before starting N3Hub on this database."
        )

"""Running counts kept beside the messages, in the same transactions, per tenant.

Reading ``GET /messages/stats`` or the processed counters then costs a few
dozen rows instead of a scan of the messages table, for one tenant or, summed,
for all. Each writing transaction picks one random shard, so concurrent
PostgreSQL writers rarely wait on the same row, and updates the rows in sorted
order, so two of them never deadlock. A tenant's rows exist from its first API
key on (:func:`ensure_tenant`); the migration made those of ``default``.

The rows are only ever updated: a missing row would make every count added to
it vanish, so :func:`verify` refuses to start on a database that lacks one.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping

from sqlalchemy import bindparam, func, insert, inspect, select, update
from sqlalchemy.engine import Connection

from app.models import DEFAULT_TENANT, MessageStatus, Tally

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

# (tenant, tally name) -> change
Deltas = Counter[tuple[str, str]]


class MissingTallies(RuntimeError):
    """The database lacks tally rows, so the counts kept in them would be lost."""


_add = (
    update(Tally)
    .where(
        Tally.tenant == bindparam("tally_tenant"),
        Tally.name == bindparam("tally_name"),
        Tally.shard == bindparam("tally_shard"),
    )
    .values(value=Tally.value + bindparam("delta"))
)


def random_shard() -> int:
    """The shard a writing transaction updates."""
    return random.randrange(SHARDS)


def apply(connection: Connection, deltas: Mapping[tuple[str, str], int]) -> None:
    """Add each delta to its tenant's tally, inside the caller's transaction."""
    shard = random_shard()
    rows = [
        {"tally_tenant": tenant, "tally_name": name, "tally_shard": shard, "delta": delta}
        for (tenant, name), delta in sorted(deltas.items())
        if delta
    ]
    if rows:
        connection.execute(_add, rows)


def transition_deltas(moves: Iterable[tuple[str, str, str]]) -> Deltas:
    """Tally changes for rows of a tenant moving between statuses, plus the processed counters."""
    deltas: Deltas = Counter()
    for tenant, old, new in moves:
        deltas[tenant, old] -= 1
        deltas[tenant, new] += 1
        if new in PROCESSED_BY_STATUS:
            deltas[tenant, PROCESSED_BY_STATUS[new]] += 1
    return deltas


def read(connection: Connection, tenant: str | None = None) -> dict[str, int]:
    """Every tally of one tenant, or of all when ``tenant`` is None, summed over shards."""
    query = select(Tally.name, func.sum(Tally.value)).group_by(Tally.name)
    if tenant is not None:
        query = query.where(Tally.tenant == tenant)
    return {name: int(total) for name, total in connection.execute(query)}


def ensure_tenant(connection: Connection, tenant: str) -> None:
    """Create a tenant's tally rows unless it has them (its first key does this)."""
    if connection.execute(select(Tally.name).where(Tally.tenant == tenant).limit(1)).first():
        return
    connection.execute(
        insert(Tally),
        [
            {"tenant": tenant, "name": name, "shard": shard, "value": 0}
            for name in NAMES
            for shard in range(SHARDS)
        ],
    )


def verify(connection: Connection) -> None:
    """Raise :class:`MissingTallies` unless every tenant's tallies have a row in every shard.

    A database whose schema is not there yet (before its migrations) passes: the
    migrations create the rows.
    """
    schema = inspect(connection)
    if not schema.has_table(Tally.__tablename__):
        return
    if "tenant" not in {column["name"] for column in schema.get_columns(Tally.__tablename__)}:
        return  # before migration security_0002, which gives the tallies their tenants
    present = {
        tuple(row) for row in connection.execute(select(Tally.tenant, Tally.name, Tally.shard))
    }
    tenants = {tenant for tenant, _, _ in present} | {DEFAULT_TENANT}
    expected = {
        (tenant, str(name), shard)
        for tenant in tenants
        for name in NAMES
        for shard in range(SHARDS)
    }
    missing = sorted(expected - present)
    if missing:
        shown = ", ".join(f"{tenant}/{name}/{shard}" for tenant, name, shard in missing[:8])
        raise MissingTallies(
            f"{Tally.__tablename__} lacks {len(missing)} of its {len(expected)} rows "
            f"(tenant/name/shard: {shown}{', ...' if len(missing) > 8 else ''}); counts added "
            "to them would be lost. Migration 0001 (and each tenant's first API key) creates "
            "them: restore them (value 0, or the count they held) before starting N3Hub."
        )

"""Tenants: messages, tallies and idempotency keys belong to one.

Rows from before belong to the tenant "default" (the development key's). The
tallies and idempotency keys get the tenant in their primary keys, so both
tables are rebuilt (create, copy, drop, rename: the same on every database);
idempotency keys also remember a batch's messages.

Revision ID: security_0002
Revises: concurrency_0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from app.mysql import TIMESTAMP, table_options

revision = "security_0002"
down_revision = "concurrency_0001"
branch_labels = None
depends_on = None

DEFAULT_TENANT = "default"
big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _tenant(**options: object) -> sa.Column:
    return sa.Column("tenant", sa.String(64), nullable=False, **options)


def _primary_key(with_tenant: bool, table: str) -> str:
    """Distinct names each way: the table being replaced still holds the other."""
    return f"pk_{table}" if with_tenant else f"{table}_pkey"


def _tallies(name: str, *, with_tenant: bool) -> None:
    key = ["tenant", "name", "shard"] if with_tenant else ["name", "shard"]
    op.create_table(
        name,
        *([_tenant()] if with_tenant else []),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("value", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint(*key, name=_primary_key(with_tenant, "message_tallies")),
        **table_options(op.get_bind()),
    )


def _idempotency_keys(name: str, *, with_tenant: bool) -> None:
    key = ["tenant", "key"] if with_tenant else ["key"]
    op.create_table(
        name,
        *([_tenant()] if with_tenant else []),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("message_id", big_id, nullable=False),
        *([sa.Column("batch_ids", sa.JSON())] if with_tenant else []),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint(*key, name=_primary_key(with_tenant, "idempotency_keys")),
        **table_options(op.get_bind()),
    )


def _replace(
    table: str,
    rebuilt: str,
    columns: list[str],
    rows: sa.Select,
    index: tuple[str, list[str]] | None = None,
) -> None:
    """Fill ``rebuilt`` with ``rows`` (for ``columns``), then let it take ``table``'s name."""
    target = sa.table(rebuilt, *(sa.column(name) for name in columns))
    op.execute(target.insert().from_select(columns, rows))
    if index is not None:
        op.drop_index(index[0], table_name=table)
    op.drop_table(table)
    op.rename_table(rebuilt, table)
    if index is not None:
        op.create_index(index[0], table, index[1])


EXPIRY_INDEX = ("ix_idempotency_keys_expires_at", ["expires_at"])
TALLY = sa.table(
    "message_tallies", sa.column("tenant"), sa.column("name"), sa.column("shard"), sa.column("value")
)
KEYS = sa.table(
    "idempotency_keys",
    sa.column("tenant"),
    sa.column("key"),
    sa.column("fingerprint"),
    sa.column("message_id"),
    sa.column("expires_at"),
)
KEY_COLUMNS = ["key", "fingerprint", "message_id", "expires_at"]
DEFAULT = sa.literal(DEFAULT_TENANT, sa.String(64))


def upgrade() -> None:
    # The default only fills the existing rows; every insert names the tenant.
    op.add_column("messages", _tenant(server_default=DEFAULT_TENANT))
    op.create_index("ix_messages_tenant_id", "messages", ["tenant", "id"])
    op.create_index("ix_messages_tenant_status_id", "messages", ["tenant", "status", "id"])
    _tallies("message_tallies_rebuilt", with_tenant=True)
    _replace(
        "message_tallies",
        "message_tallies_rebuilt",
        ["tenant", "name", "shard", "value"],
        sa.select(DEFAULT, TALLY.c.name, TALLY.c.shard, TALLY.c.value),
    )
    _idempotency_keys("idempotency_keys_rebuilt", with_tenant=True)
    _replace(
        "idempotency_keys",
        "idempotency_keys_rebuilt",
        ["tenant", *KEY_COLUMNS],
        sa.select(DEFAULT, *(KEYS.c[name] for name in KEY_COLUMNS)),
        EXPIRY_INDEX,
    )


def downgrade() -> None:
    _idempotency_keys("idempotency_keys_rebuilt", with_tenant=False)
    # Keys were per tenant; only the default tenant's keep their meaning.
    _replace(
        "idempotency_keys",
        "idempotency_keys_rebuilt",
        KEY_COLUMNS,
        sa.select(*(KEYS.c[name] for name in KEY_COLUMNS)).where(KEYS.c.tenant == DEFAULT),
        EXPIRY_INDEX,
    )
    _tallies("message_tallies_rebuilt", with_tenant=False)
    _replace(
        "message_tallies",
        "message_tallies_rebuilt",
        ["name", "shard", "value"],
        sa.select(TALLY.c.name, TALLY.c.shard, sa.func.sum(TALLY.c.value)).group_by(
            TALLY.c.name, TALLY.c.shard
        ),
    )
    op.drop_index("ix_messages_tenant_status_id", table_name="messages")
    op.drop_index("ix_messages_tenant_id", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("tenant")

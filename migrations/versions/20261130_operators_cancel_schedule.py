"""Cancel, scheduled delivery, retention: tally rows, ``deliver_at`` and its look-ahead index.

The status CHECK of hygiene_0001 gains ``cancelled``; every tenant with tallies
gets rows for the new ones. A downgrade fails while cancelled messages exist:
delete or re-create them first.

Revision ID: operators_0001
Revises: security_0002
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from app.mysql import TIMESTAMP

revision = "operators_0001"
down_revision = "security_0002"
branch_labels = None
depends_on = None

# The tally shards made by revision 0001, written out: a migration keeps the schema it made.
TALLY_SHARDS = 8
NEW_TALLIES = ("cancelled", "deleted_completed", "deleted_failed")
STATUS_CHECK = "ck_messages_status"
STATUSES_BEFORE = "status IN ('pending', 'processing', 'completed', 'failed')"
STATUSES_AFTER = "status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')"


def _status_check(condition: str) -> None:
    # SQLite cannot alter a constraint: batch mode copies the table there.
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint(STATUS_CHECK, type_="check")
        batch.create_check_constraint(STATUS_CHECK, condition)


def upgrade() -> None:
    _status_check(STATUSES_AFTER)
    op.add_column("messages", sa.Column("deliver_at", TIMESTAMP))
    op.create_index("ix_messages_status_available_at", "messages", ["status", "available_at"])
    tallies = sa.table(
        "message_tallies",
        sa.column("tenant", sa.String),
        sa.column("name", sa.String),
        sa.column("shard", sa.Integer),
        sa.column("value", sa.BigInteger),
    )
    tenants = sa.select(tallies.c.tenant).distinct().subquery()
    for name in NEW_TALLIES:
        for shard in range(TALLY_SHARDS):
            op.execute(
                tallies.insert().from_select(
                    ["tenant", "name", "shard", "value"],
                    sa.select(
                        tenants.c.tenant,
                        sa.literal(name, sa.String),
                        sa.literal(shard, sa.Integer),
                        sa.literal(0, sa.BigInteger),
                    ),
                )
            )


def downgrade() -> None:
    op.execute(
        sa.text("DELETE FROM message_tallies WHERE name IN :names").bindparams(
            sa.bindparam("names", list(NEW_TALLIES), expanding=True)
        )
    )
    op.drop_index("ix_messages_status_available_at", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("deliver_at")
    _status_check(STATUSES_BEFORE)

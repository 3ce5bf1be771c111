"""Create messages and message_tallies.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from app.mysql import LONG_TEXT, TIMESTAMP, table_options

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TALLY_NAMES = (
    "pending",
    "processing",
    "completed",
    "failed",
    "processed_completed",
    "processed_failed",
    "retries",
    "recoveries",
)
TALLY_SHARDS = 8


def upgrade() -> None:
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    timestamp = TIMESTAMP
    options = table_options(op.get_bind())
    op.create_table(
        "messages",
        sa.Column("id", big_id, primary_key=True),
        sa.Column("content", LONG_TEXT, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("updated_at", timestamp, nullable=False),
        sa.Column("available_at", timestamp, nullable=False),
        sa.Column("started_at", timestamp),
        sa.Column("completed_at", timestamp),
        sa.Column("lease_expires_at", timestamp),
        sa.Column("last_error", sa.Text()),
        sa.Column("result", sa.JSON()),
        **options,
    )
    op.create_index("ix_messages_status_id", "messages", ["status", "id"])
    op.create_index("ix_messages_status_attempts_id", "messages", ["status", "attempts", "id"])
    tallies = op.create_table(
        "message_tallies",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("shard", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("value", sa.BigInteger(), nullable=False, server_default="0"),
        **options,
    )
    op.bulk_insert(
        tallies,
        [
            {"name": name, "shard": shard, "value": 0}
            for name in TALLY_NAMES
            for shard in range(TALLY_SHARDS)
        ],
    )


def downgrade() -> None:
    op.drop_table("message_tallies")
    op.drop_index("ix_messages_status_attempts_id", table_name="messages")
    op.drop_index("ix_messages_status_id", table_name="messages")
    op.drop_table("messages")

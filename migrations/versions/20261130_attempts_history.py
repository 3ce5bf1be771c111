"""Attempt history: the ``message_attempts`` table, and the worker of each claim.

Revision ID: attempts_0001
Revises: operators_0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from app.mysql import TIMESTAMP, table_options

revision = "attempts_0001"
down_revision = "operators_0001"
branch_labels = None
depends_on = None

# Written out: a migration keeps the schema it made.
WORKER_LENGTH = 270
OUTCOMES = ("completed", "failed", "retried", "timed_out", "recovered", "released")


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(WORKER_LENGTH)))
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "message_attempts",
        sa.Column("id", big_id, primary_key=True),
        sa.Column(
            "message_id",
            big_id,
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("ended_at", TIMESTAMP, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("worker", sa.String(WORKER_LENGTH)),
        sa.CheckConstraint(
            "outcome IN ({})".format(", ".join(f"'{outcome}'" for outcome in OUTCOMES)),
            name="ck_message_attempts_outcome",
        ),
        **table_options(op.get_bind()),
    )
    op.create_index(
        "ix_message_attempts_message_id_id", "message_attempts", ["message_id", "id"]
    )


def downgrade() -> None:
    op.drop_table("message_attempts")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("claimed_by")

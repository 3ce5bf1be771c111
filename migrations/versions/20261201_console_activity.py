"""The console's overview: per-minute throughput snapshots and worker heartbeats.

Revision ID: console_0001
Revises: attempts_0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from app.mysql import TIMESTAMP, table_options

revision = "console_0001"
down_revision = "attempts_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "throughput_snapshots",
        sa.Column("minute", TIMESTAMP, primary_key=True),
        sa.Column("completed", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        **table_options(op.get_bind()),
    )
    op.create_table(
        "worker_heartbeats",
        sa.Column("worker", sa.String(255), primary_key=True),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.Column("seen_at", TIMESTAMP, nullable=False),
        **table_options(op.get_bind()),
    )


def downgrade() -> None:
    op.drop_table("worker_heartbeats")
    op.drop_table("throughput_snapshots")

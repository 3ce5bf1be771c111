"""Count the attempts of each message that lost their worker, so a repeat offender runs alone.

Revision ID: concurrency_0001
Revises: hygiene_0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "concurrency_0001"
down_revision = "hygiene_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(
            sa.Column("worker_losses", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("worker_losses")

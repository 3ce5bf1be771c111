"""Create api_keys.

Revision ID: security_0001
Revises: 0002
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from app.mysql import TIMESTAMP, table_options

revision = "security_0001"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    timestamp = TIMESTAMP
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("revoked_at", timestamp),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        **table_options(op.get_bind()),
    )


def downgrade() -> None:
    op.drop_table("api_keys")

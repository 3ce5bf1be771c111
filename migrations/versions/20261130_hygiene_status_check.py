"""Let the database refuse a message status outside the state machine.

Revision ID: hygiene_0001
Revises: security_0001
Create Date: 2026-11-30
"""

from alembic import op

revision = "hygiene_0001"
down_revision = "security_0001"
branch_labels = None
depends_on = None

CONSTRAINT = "ck_messages_status"
# The values of app.models.MessageStatus, written out: a migration keeps the schema it made.
CONDITION = "status IN ('pending', 'processing', 'completed', 'failed')"


def upgrade() -> None:
    # SQLite cannot add a constraint to a table: batch mode copies the table there.
    with op.batch_alter_table("messages") as batch:
        batch.create_check_constraint(CONSTRAINT, CONDITION)


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint(CONSTRAINT, type_="check")

"""Subscriber frequency (daily or weekly) and the confirmation-mail cooldown.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(
            sa.Column("frequency", sa.String(8), nullable=False, server_default="daily")
        )
        batch.add_column(sa.Column("confirm_sent_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("confirm_sent_at")
        batch.drop_column("frequency")

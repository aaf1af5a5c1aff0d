"""Per-subscriber time zone, delivery hour and weekly weekday.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("timezone", sa.String(64), nullable=True))
        batch.add_column(sa.Column("delivery_hour", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("weekday", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("weekday")
        batch.drop_column("delivery_hour")
        batch.drop_column("timezone")

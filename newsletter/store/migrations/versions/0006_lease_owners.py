"""Each lease names the sender that holds it, so a dead sender's leases can be taken over at once.

A sender on PostgreSQL registers a row in `senders` and holds a session-level advisory lock on
its id for its life; a claim takes over the leases of senders whose lock is free. Existing
leases name nobody and still wait for their expiry.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "senders",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.add_column("deliveries", sa.Column("lease_owner", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("lease_owner")
    op.drop_table("senders")

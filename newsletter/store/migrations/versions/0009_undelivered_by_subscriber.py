"""Undelivered deliveries indexed by subscriber: the sent log is written when a delivery is sent.

Planning used to write a sent-log row for each paper of each queued digest, and those rows,
three quarters of the time a PostgreSQL plan took, were written again or deleted for every
delivery that ended unsent. Now a delivery marked sent writes its papers to the sent log in the
same statement, and one not yet sent (queued, sending, retry) holds its papers through its own
paper list: the diff reads both in one statement, the undelivered ones through this partial
index, whose size is what is in flight rather than the history.

Rows written by planners before this revision stay: marking their delivery sent finds them
there, ending it unsent deletes them as before. The downgrade writes the sent-log rows of the
undelivered deliveries, as the older planners expect to find them.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UNDELIVERED = "status IN ('queued', 'sending', 'retry')"


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_undelivered",
        "deliveries",
        ["subscriber_id"],
        postgresql_where=sa.text(UNDELIVERED),
        sqlite_where=sa.text(UNDELIVERED),
    )


def downgrade() -> None:
    papers = (
        "json_array_elements_text(d.paper_ids) AS p(value)"
        if op.get_bind().dialect.name == "postgresql"
        else "json_each(d.paper_ids) AS p"
    )
    op.execute(
        "INSERT INTO sent_papers (subscriber_id, paper_id, delivery_id) "
        f"SELECT d.subscriber_id, p.value, d.id FROM deliveries AS d, {papers} "
        f"WHERE d.{UNDELIVERED} ON CONFLICT (paper_id, subscriber_id) DO NOTHING"
    )
    op.drop_index("ix_deliveries_undelivered", table_name="deliveries")

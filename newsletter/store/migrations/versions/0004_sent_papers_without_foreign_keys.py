"""The sent log without foreign keys.

Planning writes about ten sent_papers rows per digest. On PostgreSQL each row's two foreign-key
checks (a trigger and an index probe apiece) cost more than the row and its primary key: 200,000
rows took 2.2 s with them and 0.8 s without. The rows are only ever written in the transaction
that creates their delivery, and removed explicitly with it or with their subscriber, so the
checks guarded nothing the code does not already guarantee.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# SQLite's foreign keys have no names; batch mode names them so that they can be dropped.
NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
KEYS = [("subscriber_id", "subscribers"), ("delivery_id", "deliveries")]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        with op.batch_alter_table(
            "sent_papers", recreate="always", naming_convention=NAMES
        ) as batch:
            for column, table in KEYS:
                batch.drop_constraint(f"fk_sent_papers_{column}_{table}", type_="foreignkey")
        return
    for key in sa.inspect(bind).get_foreign_keys("sent_papers"):
        if key["name"]:  # PostgreSQL names every constraint
            op.drop_constraint(key["name"], "sent_papers", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("sent_papers", naming_convention=NAMES) as batch:
        for column, table in KEYS:
            batch.create_foreign_key(
                f"fk_sent_papers_{column}_{table}", table, [column], ["id"], ondelete="CASCADE"
            )

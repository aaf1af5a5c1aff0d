"""Subscriber ids are never reused, and each row carries the salt its links are signed with.

Without AUTOINCREMENT, SQLite gives a deleted subscriber's id to the next sign-up, and every
link signed for the old id worked on the new person. PostgreSQL's sequence never reuses an id,
so only SQLite's table is rebuilt (keeping its rows). On both, each subscriber gets a random
`token_salt` that every link to them is signed over, so a link made for a deleted row can never
match another one. Links in mails sent before this migration were signed without a salt, and
telling an old link of the owner from one of a previous holder of the id is exactly what cannot
be done, so they stop working, with one exception: the unsubscribe links (and RFC 8058 one-click
posts) of the rows that exist now (`legacy_unsubscribe`). Readers must be able to leave from any
mail they have, and the worst an old holder of a reused id can do with one is unsubscribe.

Also the per-mailbox confirmation cooldown (case and +tag folded), keyed by a hash.

Revision ID: 0005
Revises: 0004
"""

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


@contextmanager
def _deliveries_kept() -> Iterator[None]:
    """SQLite rebuilds a table by dropping it, and with foreign keys on (they cannot be turned
    off inside the migration's transaction) dropping subscribers deletes their deliveries by
    cascade: they are set aside and put back."""
    op.execute("CREATE TEMPORARY TABLE deliveries_kept AS SELECT * FROM deliveries")
    yield
    op.execute("INSERT INTO deliveries SELECT * FROM deliveries_kept")
    op.execute("DROP TABLE deliveries_kept")


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("subscribers", sa.Column("token_salt", sa.String(length=32), nullable=True))
    op.add_column(
        "subscribers",
        sa.Column("legacy_unsubscribe", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.execute("UPDATE subscribers SET legacy_unsubscribe = TRUE")
    ids = bind.execute(sa.text("SELECT id FROM subscribers")).scalars().all()
    if ids:
        bind.execute(
            sa.text("UPDATE subscribers SET token_salt = :salt WHERE id = :id"),
            [{"id": i, "salt": secrets.token_urlsafe(16)} for i in ids],
        )
    if bind.dialect.name == "sqlite":
        with (
            _deliveries_kept(),
            op.batch_alter_table(
                "subscribers", recreate="always", table_kwargs={"sqlite_autoincrement": True}
            ) as batch,
        ):
            batch.alter_column("token_salt", existing_type=sa.String(length=32), nullable=False)
    else:
        op.alter_column(
            "subscribers", "token_salt", existing_type=sa.String(length=32), nullable=False
        )
    op.create_table(
        "confirm_cooldowns",
        sa.Column("mailbox_hash", sa.String(length=64), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("mailbox_hash", name="pk_confirm_cooldowns"),
    )
    op.create_index("ix_confirm_cooldowns_sent_at", "confirm_cooldowns", ["sent_at"])


def downgrade() -> None:
    op.drop_index("ix_confirm_cooldowns_sent_at", table_name="confirm_cooldowns")
    op.drop_table("confirm_cooldowns")
    if op.get_bind().dialect.name == "sqlite":
        with (
            _deliveries_kept(),
            op.batch_alter_table(
                "subscribers", recreate="always", table_kwargs={"sqlite_autoincrement": False}
            ) as batch,
        ):
            batch.drop_column("legacy_unsubscribe")
            batch.drop_column("token_salt")
    else:
        op.drop_column("subscribers", "legacy_unsubscribe")
        op.drop_column("subscribers", "token_salt")

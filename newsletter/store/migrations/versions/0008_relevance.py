"""Readers' own words, exclude-words, feedback, and the vectors of papers and profiles.

Vectors are float32 bytes in a plain binary column (BLOB, BYTEA): planning reads a day's few
dozen paper vectors and a batch of profiles at a time and multiplies them in numpy, so neither
database needs a vector type.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "paper_vectors",
        sa.Column("paper_id", sa.String(length=32), nullable=False),
        sa.Column("model_id", sa.String(length=80), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["paper_id"], ["papers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("paper_id"),
    )
    op.create_table(
        "reader_profiles",
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("about", sa.Text(), nullable=False, server_default=""),
        sa.Column("exclude", sa.JSON(), nullable=False),
        sa.Column("feedback_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("words_key", sa.String(length=64), nullable=True),
        sa.Column("model_id", sa.String(length=80), nullable=True),
        sa.Column("vector", sa.LargeBinary(), nullable=True),
        sa.Column("anchor", sa.LargeBinary(), nullable=True),
        sa.Column("terms", sa.JSON(), nullable=False),
        sa.Column("parts", sa.JSON(), nullable=False),
        sa.Column("part_vectors", sa.LargeBinary(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("subscriber_id"),
    )
    op.create_table(
        "feedback",
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("paper_id", sa.String(length=32), nullable=False),
        sa.Column("liked", sa.Boolean(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("subscriber_id", "paper_id", name="pk_feedback"),
    )
    op.create_table(
        "delivery_reasons",
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("digest_date", sa.Date(), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("subscriber_id", "digest_date", name="pk_delivery_reasons"),
    )


def downgrade() -> None:
    op.drop_table("delivery_reasons")
    op.drop_table("feedback")
    op.drop_table("reader_profiles")
    op.drop_table("paper_vectors")

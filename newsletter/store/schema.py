"""Tables. Times are naive UTC datetimes so SQLite and PostgreSQL compare them the same way."""

from __future__ import annotations

import secrets
from datetime import date, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import false


class Base(DeclarativeBase):
    pass


class PaperRow(Base):
    """One paper, upserted by canonical arXiv id whichever source or day it came from."""

    __tablename__ = "papers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    abstract: Mapped[str] = mapped_column(Text, default="")
    authors: Mapped[list[str]] = mapped_column(JSON, default=list)
    author_count: Mapped[int] = mapped_column(Integer, default=0)
    organization: Mapped[str | None] = mapped_column(String(200))
    upvotes: Mapped[int] = mapped_column(Integer, default=0)
    comments: Mapped[int] = mapped_column(Integer, default=0)
    ai_summary: Mapped[str | None] = mapped_column(Text)
    ai_keywords: Mapped[list[str]] = mapped_column(JSON, default=list)
    github_repo: Mapped[str | None] = mapped_column(Text)
    github_stars: Mapped[int | None] = mapped_column(Integer)
    project_page: Mapped[str | None] = mapped_column(Text)
    published_on: Mapped[date | None] = mapped_column(Date)
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    first_seen: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class ListingRow(Base):
    """Which papers were trending on which day, in the order the source listed them."""

    __tablename__ = "listings"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    paper_id: Mapped[str] = mapped_column(ForeignKey("papers.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)


class FetchRow(Base):
    """Each fetch of a day from one source: a day fetched with nothing listed is an empty day
    (a weekend), known as such, rather than a day nobody fetched yet."""

    __tablename__ = "fetches"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    papers: Mapped[int] = mapped_column(Integer)
    fetched_at: Mapped[datetime] = mapped_column(DateTime)


def new_token_salt() -> str:
    return secrets.token_urlsafe(16)


class SubscriberRow(Base):
    __tablename__ = "subscribers"
    # AUTOINCREMENT: SQLite would otherwise hand a deleted subscriber's id to the next one
    # (PostgreSQL's sequence never does). Migration 0005.
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    topics: Mapped[list[str]] = mapped_column(JSON, default=list)
    keywords: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(DateTime)
    bounce_count: Mapped[int] = mapped_column(Integer, default=0)
    frequency: Mapped[str] = mapped_column(String(8), default="daily", server_default="daily")
    # When the last confirmation mail went out: at most one per address per cooldown.
    confirm_sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The digest is due at this hour of the subscriber's own day (IANA zone name); unset means
    # the operator's defaults.
    timezone: Mapped[str | None] = mapped_column(String(64))
    delivery_hour: Mapped[int | None] = mapped_column(Integer)
    weekday: Mapped[int | None] = mapped_column(Integer)  # weekly digests: 0 = Monday
    # Random per row, and every link to the subscriber is signed over it: a token made for a
    # deleted row matches no other row (links.py).
    token_salt: Mapped[str] = mapped_column(String(32), default=new_token_salt)
    # Rows from before links were salted (migration 0005): their old unsubscribe links still work.
    legacy_unsubscribe: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ConfirmCooldownRow(Base):
    """When a mailbox (the address with case and +tag folded) was last sent a confirmation or
    reminder: at most one per mailbox per cooldown, whichever variant was typed. Keyed by a
    hash of the mailbox, so a deleted subscriber's address is not kept here; rows older than
    the cooldown are removed by the next sign-up."""

    __tablename__ = "confirm_cooldowns"

    mailbox_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    sent_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class DigestRunRow(Base):
    """One row per digest date: whoever plans a day first creates it, everyone else finds it."""

    __tablename__ = "digest_runs"

    digest_date: Mapped[date] = mapped_column(Date, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    paper_count: Mapped[int] = mapped_column(Integer, default=0)
    planned_at: Mapped[datetime | None] = mapped_column(DateTime)


# Deliveries not yet sent nor closed: their papers are reserved through their own paper list.
UNDELIVERED = "status IN ('queued', 'sending', 'retry')"


class DeliveryRow(Base):
    """The outbox: one row per subscriber per digest date, written before any SMTP."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "digest_date", name="uq_delivery_subscriber_day"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
        Index("ix_deliveries_day_status", "digest_date", "status"),
        # The diff reads the papers of a batch's undelivered digests through it (0009).
        Index(
            "ix_deliveries_undelivered",
            "subscriber_id",
            postgresql_where=text(UNDELIVERED),
            sqlite_where=text(UNDELIVERED),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    digest_date: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32))
    message_id: Mapped[str] = mapped_column(String(255))
    paper_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)
    # The sender holding the lease (SenderRow.id, PostgreSQL): a claim takes over the leases of
    # a sender that is gone without waiting for them to expire. No foreign key: a gone
    # sender's row is deleted while its leases wait to be taken over.
    lease_owner: Mapped[int | None] = mapped_column(Integer)
    # Not before this time: the local delivery hour for queued rows, the backoff for retries.
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)


class SenderRow(Base):
    """A sending process on PostgreSQL, alive exactly while it holds the session-level advisory
    lock on its id (backend.PostgresBackend.sender_owner): the lock dies with its connection,
    so a killed sender is seen gone at once, with no heartbeat to wait out. The row says who
    it is for `status`; rows of gone senders are deleted when the next one registers."""

    __tablename__ = "senders"
    __table_args__ = ({"sqlite_autoincrement": True},)  # ids never reused, as leases name them

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(DateTime)


class SentPaperRow(Base):
    """Every paper of every digest a subscriber was sent: the diff looks up today's ids here,
    and in the paper lists of their undelivered deliveries (UNDELIVERED, migration 0009).

    Rows are written in the statement that marks their delivery sent, so a paper is never
    mailed twice and never lost either (rows planners wrote before 0009 are removed if their
    delivery ends without being sent). Keyed by paper
    first, so that finding which of today's papers a batch of subscribers already got costs
    one short range scan per paper, whatever the length of the history; no foreign keys, since
    rows are only written with their delivery and deleted with it or their subscriber, and
    the checks cost planning more than the rows (migration 0004).
    """

    __tablename__ = "sent_papers"
    __table_args__ = (
        PrimaryKeyConstraint(
            "paper_id", "subscriber_id", name="pk_sent_papers_paper_id_subscriber_id"
        ),
    )

    subscriber_id: Mapped[int] = mapped_column()
    paper_id: Mapped[str] = mapped_column(String(32))
    delivery_id: Mapped[int] = mapped_column(index=True)


class SuppressionRow(Base):
    """Addresses never mailed again: bounced, complained or unsubscribed."""

    __tablename__ = "suppressions"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class PaperVectorRow(Base):
    """A paper's sentence vector (float32 bytes), computed once when the paper is stored; a
    vector from another model is never compared, only recomputed (migration 0008)."""

    __tablename__ = "paper_vectors"

    paper_id: Mapped[str] = mapped_column(
        ForeignKey("papers.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[str] = mapped_column(String(80))
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class ReaderProfileRow(Base):
    """A reader's own words and exclude-words, and the profile computed from them, their topics,
    keywords and feedback. `words_key` is a hash of the words the profile was computed from and
    a NULL `vector` means feedback changed since: either makes the planner recompute it."""

    __tablename__ = "reader_profiles"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    about: Mapped[str] = mapped_column(Text, default="")
    exclude: Mapped[list[str]] = mapped_column(JSON, default=list)
    feedback_count: Mapped[int] = mapped_column(Integer, default=0)
    words_key: Mapped[str | None] = mapped_column(String(64))
    model_id: Mapped[str | None] = mapped_column(String(80))
    vector: Mapped[bytes | None] = mapped_column(LargeBinary)
    anchor: Mapped[bytes | None] = mapped_column(LargeBinary)
    terms: Mapped[list[str]] = mapped_column(JSON, default=list)
    parts: Mapped[list[str]] = mapped_column(JSON, default=list)
    part_vectors: Mapped[bytes | None] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class FeedbackRow(Base):
    """ "More like this" (liked) or "less like this" on a paper: the last one per paper wins."""

    __tablename__ = "feedback"
    __table_args__ = (PrimaryKeyConstraint("subscriber_id", "paper_id", name="pk_feedback"),)

    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    paper_id: Mapped[str] = mapped_column(String(32))
    liked: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(DateTime)


class DeliveryReasonsRow(Base):
    """Why each paper of a profile reader's digest is there, in the order of the delivery's
    paper list; keyword-only digests have no row (the composer matches their labels itself)."""

    __tablename__ = "delivery_reasons"
    __table_args__ = (
        PrimaryKeyConstraint("subscriber_id", "digest_date", name="pk_delivery_reasons"),
    )

    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    digest_date: Mapped[date] = mapped_column(Date)
    reasons: Mapped[str] = mapped_column(Text, default="")  # one per paper, "\x1f" between

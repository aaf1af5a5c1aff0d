"""Subscribers: who they are, what they chose, and every change to their subscription."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from newsletter.addresses import mailbox
from newsletter.clock import utcnow
from newsletter.records import SubscriberRecord
from newsletter.states import Cadence, DeliveryStatus, SkipReason, SubscriberStatus
from newsletter.store.backend import Backend
from newsletter.store.outbox import finish
from newsletter.store.rows import changed, subscriber_record
from newsletter.store.schema import ConfirmCooldownRow, DeliveryRow, SentPaperRow, SubscriberRow


def mailbox_key(email: str) -> str:
    """The cooldown's key for an address: its mailbox, hashed (see ConfirmCooldownRow)."""
    return hashlib.sha256(mailbox(email).encode()).hexdigest()


class Subscribers:
    def __init__(self, db: Backend) -> None:
        self._db = db

    # -- reading --------------------------------------------------------------------------

    def by_email(self, email: str) -> SubscriberRecord | None:
        with self._db.session() as s:
            row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            return subscriber_record(row) if row else None

    def by_id(self, subscriber_id: int) -> SubscriberRecord | None:
        with self._db.session() as s:
            row = s.get(SubscriberRow, subscriber_id)
            return subscriber_record(row) if row else None

    def takes_unsalted_unsubscribe(self, subscriber_id: int) -> bool:
        """Whether the row predates salted links, so its old unsubscribe links still work."""
        with self._db.session() as s:
            row = s.get(SubscriberRow, subscriber_id)
            return bool(row and row.legacy_unsubscribe)

    def all(self) -> list[SubscriberRecord]:
        with self._db.session() as s:
            rows = s.scalars(select(SubscriberRow).order_by(SubscriberRow.id))
            return [subscriber_record(row) for row in rows]

    def export(self, subscriber_id: int) -> dict[str, Any] | None:
        """Everything stored about one subscriber, for "export my data"."""
        with self._db.session() as s:
            row = s.get(SubscriberRow, subscriber_id)
            if row is None:
                return None
            deliveries = s.execute(
                select(
                    DeliveryRow.digest_date,
                    DeliveryRow.status,
                    DeliveryRow.reason,
                    DeliveryRow.paper_ids,
                    DeliveryRow.sent_at,
                )
                .where(DeliveryRow.subscriber_id == subscriber_id)
                .order_by(DeliveryRow.digest_date)
            ).all()
            return {
                "email": row.email,
                "status": row.status,
                "topics": list(row.topics or []),
                "keywords": list(row.keywords or []),
                "frequency": row.frequency,
                "created_at": row.created_at.isoformat(),
                "confirmed_at": row.confirmed_at.isoformat() if row.confirmed_at else None,
                "deliveries": [
                    {
                        "date": d.isoformat(),
                        "status": st,
                        "reason": r,
                        "papers": list(p),
                        "sent_at": at.isoformat() if at else None,
                    }
                    for d, st, r, p, at in deliveries
                ],
            }

    # -- by the operator ------------------------------------------------------------------

    def upsert(
        self,
        email: str,
        topics: Sequence[str],
        keywords: Sequence[str],
        status: SubscriberStatus = SubscriberStatus.ACTIVE,
    ) -> SubscriberRecord:
        now = utcnow()
        with self._db.session() as s:
            row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            if row is None:
                row = SubscriberRow(email=email, created_at=now, bounce_count=0)
                s.add(row)
            row.topics = list(topics)
            row.keywords = list(keywords)
            row.status = status
            if status == SubscriberStatus.ACTIVE:
                row.confirmed_at = row.confirmed_at or now
                row.unsubscribed_at = None
            s.flush()
            return subscriber_record(row)

    def set_status(self, email: str, status: SubscriberStatus) -> bool:
        now = utcnow()
        values: dict[str, Any] = {"status": status}
        if status == SubscriberStatus.UNSUBSCRIBED:
            values["unsubscribed_at"] = now
        with self._db.session() as s:
            result = s.execute(
                update(SubscriberRow).where(SubscriberRow.email == email).values(**values)
            )
            return changed(result)

    def delete(self, email: str) -> bool:
        """Remove the subscriber and everything recorded about them (deliveries, sent log)."""
        with self._db.session() as s:
            sub_id = s.scalar(select(SubscriberRow.id).where(SubscriberRow.email == email))
            if sub_id is None:
                return False
            # By delivery: the sent log is keyed by paper, and indexed by delivery.
            s.execute(
                delete(SentPaperRow).where(
                    SentPaperRow.delivery_id.in_(
                        select(DeliveryRow.id).where(DeliveryRow.subscriber_id == sub_id)
                    )
                )
            )
            s.execute(delete(DeliveryRow).where(DeliveryRow.subscriber_id == sub_id))
            s.execute(delete(SubscriberRow).where(SubscriberRow.id == sub_id))
            return True

    def delete_by_id(self, subscriber_id: int) -> bool:
        record = self.by_id(subscriber_id)
        return record is not None and self.delete(record.email)

    # -- by the subscriber ----------------------------------------------------------------

    def sign_up(
        self, email: str, topics: Sequence[str], keywords: Sequence[str], cooldown_seconds: int
    ) -> tuple[SubscriberRecord, bool]:
        """Record a sign-up; return the subscriber and whether a confirmation mail may go out.

        New, pending and unsubscribed addresses become pending with the chosen interests; an
        active or paused subscriber's interests are left alone (a stranger must not change
        them). At most one mail per mailbox per cooldown (case and +tags folded).
        """
        now = utcnow()
        with self._db.session() as s:
            row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            if row is None:
                row = SubscriberRow(
                    email=email,
                    created_at=now,
                    bounce_count=0,
                    status=SubscriberStatus.PENDING,
                    frequency=Cadence.DAILY,
                )
                s.add(row)
            if row.status in (SubscriberStatus.PENDING, SubscriberStatus.UNSUBSCRIBED):
                row.status = SubscriberStatus.PENDING
                row.topics = list(topics)
                row.keywords = list(keywords)
            s.flush()
            claimed = self._claim_mailbox(s, email, now, cooldown_seconds)
            if claimed:
                row.confirm_sent_at = now
            return subscriber_record(row), claimed

    def _claim_mailbox(self, s: Session, email: str, now: datetime, cooldown_seconds: int) -> bool:
        """Whether this sign-up may mail the address's mailbox: one INSERT ... ON CONFLICT on
        the mailbox's key, so concurrent sign-ups for any of its variants cannot both win."""
        cutoff = now - timedelta(seconds=cooldown_seconds)
        cooldowns = ConfirmCooldownRow.__table__
        s.execute(delete(ConfirmCooldownRow).where(ConfirmCooldownRow.sent_at <= cutoff))
        claim = (
            self._db.insert(cooldowns)
            .values(mailbox_hash=mailbox_key(email), sent_at=now)
            .on_conflict_do_update(
                index_elements=[cooldowns.c.mailbox_hash],
                set_={"sent_at": now},
                where=cooldowns.c.sent_at <= cutoff,
            )
            # RETURNING, not the row count: PostgreSQL counts a conflict whose update was
            # refused as a changed row.
            .returning(cooldowns.c.mailbox_hash)
        )
        return s.execute(claim).first() is not None

    def release_confirmation(self, subscriber_id: int) -> None:
        """Let a confirmation mail go out again at once (the last one could not be sent)."""
        with self._db.session() as s:
            row = s.get(SubscriberRow, subscriber_id)
            if row is None:
                return
            row.confirm_sent_at = None
            s.execute(
                delete(ConfirmCooldownRow).where(
                    ConfirmCooldownRow.mailbox_hash == mailbox_key(row.email)
                )
            )

    def confirm(self, subscriber_id: int) -> SubscriberRecord | None:
        """Activate a pending subscriber; anyone else is returned unchanged."""
        with self._db.session() as s:
            row = s.get(SubscriberRow, subscriber_id)
            if row is None:
                return None
            if row.status == SubscriberStatus.PENDING:
                row.status = SubscriberStatus.ACTIVE
                row.confirmed_at = utcnow()
            return subscriber_record(row)

    def update_preferences(
        self,
        subscriber_id: int,
        *,
        topics: Sequence[str],
        keywords: Sequence[str],
        frequency: Cadence | str,
        paused: bool,
        schedule: tuple[str | None, int | None, int | None] | None = None,
    ) -> SubscriberRecord | None:
        """Save what a subscriber chose; `schedule` is (time zone, delivery hour, weekday)."""
        with self._db.session() as s:
            row = s.get(SubscriberRow, subscriber_id)
            if row is None:
                return None
            row.topics, row.keywords = list(topics), list(keywords)
            row.frequency = Cadence(frequency)
            if schedule is not None:
                row.timezone, row.delivery_hour, row.weekday = schedule
            if paused and row.status == SubscriberStatus.ACTIVE:
                row.status = SubscriberStatus.PAUSED
            elif not paused and row.status == SubscriberStatus.PAUSED:
                row.status = SubscriberStatus.ACTIVE
            return subscriber_record(row)

    def unsubscribe(self, subscriber_id: int) -> SubscriberRecord | None:
        """Stop all mail now: the status is re-checked when any queued digest is claimed, and
        digests still waiting are closed here too so they never reach a sender."""
        now = utcnow()
        with self._db.session() as s:
            row = s.get(SubscriberRow, subscriber_id)
            if row is None:
                return None
            if row.status != SubscriberStatus.BOUNCED:
                row.status = SubscriberStatus.UNSUBSCRIBED
                row.unsubscribed_at = now
            waiting = list(
                s.scalars(
                    select(DeliveryRow.id).where(
                        DeliveryRow.subscriber_id == subscriber_id,
                        DeliveryRow.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.RETRY]),
                    )
                )
            )
            finish(s, waiting, DeliveryStatus.SKIPPED, SkipReason.UNSUBSCRIBED, release=True)
            return subscriber_record(row)

    def resubscribe(self, subscriber_id: int) -> SubscriberRecord | None:
        with self._db.session() as s:
            row = s.get(SubscriberRow, subscriber_id)
            if row is None:
                return None
            if row.status == SubscriberStatus.UNSUBSCRIBED:
                row.status = SubscriberStatus.ACTIVE
                row.unsubscribed_at = None
            return subscriber_record(row)

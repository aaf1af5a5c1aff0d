"""What happened to the deliveries: a day's summary, who did not get it, metrics, history."""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any

from sqlalchemy import func, or_, select

from newsletter.clock import utcnow
from newsletter.records import DaySummary, DeliveryHistory, Undelivered
from newsletter.states import DeliveryStatus
from newsletter.store.backend import Backend
from newsletter.store.rows import delivery_status
from newsletter.store.schema import DeliveryRow, DigestRunRow, SentPaperRow, SubscriberRow


class Reports:
    def __init__(self, db: Backend) -> None:
        self._db = db

    def day_summary(self, day: date) -> DaySummary:
        with self._db.session() as s:
            rows = s.execute(
                select(DeliveryRow.status, DeliveryRow.reason, func.count())
                .where(DeliveryRow.digest_date == day)
                .group_by(DeliveryRow.status, DeliveryRow.reason)
            ).all()
            papers = (
                s.scalar(
                    select(func.count())
                    .select_from(SentPaperRow)
                    .join(DeliveryRow, DeliveryRow.id == SentPaperRow.delivery_id)
                    .where(
                        DeliveryRow.digest_date == day, DeliveryRow.status == DeliveryStatus.SENT
                    )
                )
                or 0
            )
        summary = DaySummary(day, Counter(), Counter(), Counter(), papers)
        for status, reason, count in rows:
            summary.by_status[status] += count
            if status == DeliveryStatus.SKIPPED:
                summary.skipped_by_reason[reason or "unknown"] += count
            elif status == DeliveryStatus.FAILED:
                summary.failed_by_reason[reason or "unknown"] += count
        return summary

    def metrics(self) -> dict[str, Any]:
        """Counters for the metrics endpoint, all read in one short transaction."""
        now = utcnow()
        with self._db.session() as s:
            by_state = s.execute(
                select(DeliveryRow.status, DeliveryRow.reason, func.count()).group_by(
                    DeliveryRow.status, DeliveryRow.reason
                )
            ).all()
            due_now = s.scalar(
                select(func.count()).where(
                    DeliveryRow.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.RETRY]),
                    or_(DeliveryRow.next_attempt_at.is_(None), DeliveryRow.next_attempt_at <= now),
                )
            )
            later = s.scalar(
                select(func.count()).where(
                    DeliveryRow.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.RETRY]),
                    DeliveryRow.next_attempt_at > now,
                )
            )
            last_run = s.execute(
                select(DigestRunRow.digest_date, DigestRunRow.created_at, DigestRunRow.planned_at)
                .order_by(DigestRunRow.digest_date.desc())
                .limit(1)
            ).first()
            sending = s.execute(
                select(func.min(DeliveryRow.created_at), func.max(DeliveryRow.sent_at)).where(
                    DeliveryRow.digest_date == (last_run[0] if last_run else None),
                    DeliveryRow.status == DeliveryStatus.SENT,
                )
            ).first()
        return {
            "deliveries": [(st, r or "", n) for st, r, n in by_state],
            "queue_due": due_now or 0,
            "queue_scheduled": later or 0,
            "last_run": last_run,
            "last_run_send_span": sending,
        }

    def undelivered(self, day: date) -> list[Undelivered]:
        """Who did not get `day`'s digest and why, by status and address."""
        with self._db.session() as s:
            rows = s.execute(
                select(
                    SubscriberRow.email,
                    DeliveryRow.status,
                    DeliveryRow.reason,
                    DeliveryRow.last_error,
                    DeliveryRow.attempts,
                )
                .join(SubscriberRow, SubscriberRow.id == DeliveryRow.subscriber_id)
                .where(DeliveryRow.digest_date == day, DeliveryRow.status != DeliveryStatus.SENT)
                .order_by(DeliveryRow.status, SubscriberRow.email)
            ).all()
            return [
                Undelivered(email, delivery_status(status), reason, error, attempts)
                for email, status, reason, error, attempts in rows
            ]

    def deliveries_for(self, email: str) -> list[DeliveryHistory]:
        """Every day's delivery to `email`, oldest first."""
        with self._db.session() as s:
            rows = s.execute(
                select(
                    DeliveryRow.digest_date,
                    DeliveryRow.status,
                    DeliveryRow.reason,
                    DeliveryRow.paper_ids,
                )
                .join(SubscriberRow, SubscriberRow.id == DeliveryRow.subscriber_id)
                .where(SubscriberRow.email == email)
                .order_by(DeliveryRow.digest_date)
            ).all()
            return [DeliveryHistory(d, delivery_status(st), r, list(p)) for d, st, r, p in rows]

    def delivery_states(self, day: date) -> dict[str, tuple[str, str | None]]:
        """Every subscriber's delivery for `day`: email -> (status, reason)."""
        with self._db.session() as s:
            rows = s.execute(
                select(SubscriberRow.email, DeliveryRow.status, DeliveryRow.reason)
                .join(SubscriberRow, SubscriberRow.id == DeliveryRow.subscriber_id)
                .where(DeliveryRow.digest_date == day)
            ).all()
            return {email: (status, reason) for email, status, reason in rows}

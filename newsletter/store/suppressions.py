"""The suppression list: addresses never mailed again (bounced, complained, by hand)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from newsletter.clock import utcnow
from newsletter.records import SuppressionRecord
from newsletter.states import SubscriberStatus
from newsletter.store.backend import Backend
from newsletter.store.rows import changed
from newsletter.store.schema import SubscriberRow, SuppressionRow


class Suppressions:
    def __init__(self, db: Backend) -> None:
        self._db = db

    def suppressed(self, emails: Iterable[str]) -> set[str]:
        """Which of `emails` are on the list."""
        with self._db.session() as s:
            return set(
                s.scalars(
                    select(SuppressionRow.email).where(SuppressionRow.email.in_(list(emails)))
                )
            )

    def record_bounce(self, email: str, detail: str, limit: int) -> bool:
        """Count a hard bounce; suppress the address once it reaches `limit`. True if suppressed."""
        with self._db.session() as s:
            row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            count = 1
            if row is not None:
                row.bounce_count += 1
                count = row.bounce_count
                if count >= limit:
                    row.status = SubscriberStatus.BOUNCED
            if count >= limit:
                self._suppress(s, email, "bounced", detail)
                return True
            return False

    def suppress(self, email: str, reason: str, detail: str | None = None) -> None:
        with self._db.session() as s:
            self._suppress(s, email, reason, detail)

    def unsuppress(self, email: str) -> bool:
        with self._db.session() as s:
            return changed(s.execute(delete(SuppressionRow).where(SuppressionRow.email == email)))

    def all(self) -> list[SuppressionRecord]:
        """The whole list, oldest first."""
        with self._db.session() as s:
            rows = s.scalars(select(SuppressionRow).order_by(SuppressionRow.created_at))
            return [
                SuppressionRecord(row.email, row.reason, row.detail, row.created_at) for row in rows
            ]

    def _suppress(self, s: Session, email: str, reason: str, detail: str | None) -> None:
        s.execute(
            self._db.insert(SuppressionRow)
            .values(email=email, reason=reason, detail=detail, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["email"])
        )

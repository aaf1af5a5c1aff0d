"""An in-memory DeliveryStore: the outbox's rules without a database, for the engine's tests.

It keeps the rules the delivery loop relies on, as the SQL in newsletter/store does: a claim
takes due deliveries in id order (queued whose time has come, retry whose backoff is over,
sending whose lease expired or whose sender is gone), leases them in this sender's name and
counts an attempt; release gives the attempt back; the subscriber is read as they are at claim
time; a bounce counts towards suppression. The sent log (which papers a digest reserved) is not
kept: the loop never reads it.

Each MemoryOutbox is one sender (`owner`); `sender()` gives another sender on the same rows, and
`die()` ends one, as a killed process's advisory lock ends with its connection.

Every call holds one lock, as every store call is its own transaction. A test can make the
next calls of a method raise StoreUnavailable (`fail`) and let time pass (`advance`).
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from newsletter.clock import utcnow
from newsletter.errors import StoreUnavailable
from newsletter.records import ClaimedDelivery, SubscriberRecord
from newsletter.states import DeliveryStatus, SubscriberStatus

DAY = date(2025, 1, 6)


@dataclass
class Row:
    id: int
    subscriber_id: int
    digest_date: date
    message_id: str
    paper_ids: list[str]
    status: DeliveryStatus = DeliveryStatus.QUEUED
    reason: str | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    lease_until: datetime | None = None
    lease_owner: str | None = None
    last_error: str | None = None
    sent_at: datetime | None = None


@dataclass(frozen=True)
class Retry:
    """A mark_retry as the store received it: when it was asked, and for when."""

    delivery_id: int
    asked_at: datetime  # the real clock, as the loop's own `utcnow() + backoff` used
    when: datetime
    attempts: int


class MemoryOutbox:
    def __init__(self, owner: str = "first") -> None:
        self.owner = owner
        self.live: set[str] = {owner}  # senders whose lock is held, shared by all of them
        self.rows: dict[int, Row] = {}
        self.subscribers: dict[int, SubscriberRecord] = {}
        self.suppressions: dict[str, tuple[str, str | None]] = {}
        self.retries: list[Retry] = []
        self.calls: Counter[str] = Counter()
        self._failures: Counter[str] = Counter()
        self._clock = [timedelta()]  # in a list, so every sender's view shares one clock
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def _offset(self) -> timedelta:
        return self._clock[0]

    # -- senders --------------------------------------------------------------------------

    def sender(self, owner: str) -> MemoryOutbox:
        """Another live sender on the same rows (every other attribute is shared)."""
        other = copy.copy(self)
        other.owner = owner
        self.live.add(owner)
        return other

    def die(self, owner: str | None = None) -> None:
        """A sender is gone (this one by default): its leases may be taken over at once."""
        self.live.discard(owner or self.owner)

    # -- setting the scene ----------------------------------------------------------------

    def add(
        self,
        email: str,
        status: SubscriberStatus = SubscriberStatus.ACTIVE,
        due_at: datetime | None = None,
    ) -> int:
        """A subscriber and their queued digest for DAY; returns the delivery's id."""
        subscriber = SubscriberRecord(
            id=len(self.subscribers) + 1,
            email=email,
            status=status,
            topics=("cs.LG",),
            keywords=(),
            created_at=utcnow(),
        )
        self.subscribers[subscriber.id] = subscriber
        delivery_id = next(self._ids)
        self.rows[delivery_id] = Row(
            id=delivery_id,
            subscriber_id=subscriber.id,
            digest_date=DAY,
            message_id=f"<{delivery_id}.{DAY.isoformat()}@news.example.org>",
            paper_ids=["2501.00001"],
            next_attempt_at=due_at,
        )
        return delivery_id

    def set_status(self, email: str, status: SubscriberStatus) -> None:
        sub = self._by_email(email)
        self.subscribers[sub.id] = replace(sub, status=status)

    def suppress(self, email: str, reason: str, detail: str | None = None) -> None:
        self.suppressions.setdefault(email, (reason, detail))

    def fail(self, method: str, times: int = 1) -> None:
        """The next `times` calls of `method` raise StoreUnavailable, as a locked SQLite file or
        a dropped PostgreSQL connection would, without changing anything."""
        self._failures[method] += times

    def advance(self, seconds: float) -> None:
        """Let time pass for the outbox: leases expire and retries fall due sooner."""
        self._clock[0] += timedelta(seconds=seconds)

    def now(self) -> datetime:
        return utcnow() + self._offset

    # -- reading the outcome --------------------------------------------------------------

    def by_status(self) -> Counter[DeliveryStatus]:
        return Counter(row.status for row in self.rows.values())

    def row_for(self, email: str) -> Row:
        sub_id = self._by_email(email).id
        return next(row for row in self.rows.values() if row.subscriber_id == sub_id)

    def subscriber(self, email: str) -> SubscriberRecord:
        return self._by_email(email)

    # -- DeliveryStore --------------------------------------------------------------------

    def claim(self, limit: int, lease_seconds: int) -> list[ClaimedDelivery]:
        with self._call("claim"):
            now = self.now()
            due = [
                row
                for row in sorted(self.rows.values(), key=lambda r: r.id)
                if _due(row, now) or self._orphaned(row)
            ]
            claimed = []
            for row in due[:limit]:
                row.status = DeliveryStatus.SENDING
                row.lease_until = now + timedelta(seconds=lease_seconds)
                row.lease_owner = self.owner
                row.attempts += 1
                claimed.append(
                    ClaimedDelivery(
                        id=row.id,
                        digest_date=row.digest_date,
                        message_id=row.message_id,
                        paper_ids=list(row.paper_ids),
                        attempts=row.attempts,
                        subscriber=self.subscribers[row.subscriber_id],
                    )
                )
            return claimed

    def suppressed(self, emails: Iterable[str]) -> set[str]:
        with self._call("suppressed"):
            return {email for email in emails if email in self.suppressions}

    def next_due_at(self) -> datetime | None:
        with self._call("next_due_at"):
            times = [
                row.next_attempt_at
                for row in self.rows.values()
                if row.status == DeliveryStatus.RETRY and row.next_attempt_at is not None
            ] + [
                row.lease_until
                for row in self.rows.values()
                if row.status == DeliveryStatus.SENDING and row.lease_until is not None
            ]
            # Stored times are on the outbox's clock; the loop compares them with the real one.
            return min(times) - self._offset if times else None

    def leases_held(self) -> tuple[int, datetime | None]:
        with self._call("leases_held"):
            now = self.now()
            held = [
                row.lease_until
                for row in self.rows.values()
                if row.status == DeliveryStatus.SENDING
                and row.lease_owner != self.owner
                and row.lease_until is not None
                and row.lease_until >= now
                and not self._orphaned(row)
            ]
            return len(held), max(held) - self._offset if held else None

    def mark_sent(self, ids: Sequence[int]) -> None:
        with self._call("mark_sent"):
            for delivery_id in ids:
                row = self.rows[delivery_id]
                row.status = DeliveryStatus.SENT
                row.sent_at = self.now()
                row.lease_until = row.lease_owner = row.reason = row.last_error = None

    def mark_retry(self, retries: Sequence[tuple[int, datetime, str]]) -> None:
        with self._call("mark_retry"):
            for delivery_id, when, error in retries:
                row = self.rows[delivery_id]
                self.retries.append(Retry(delivery_id, utcnow(), when, row.attempts))
                row.status = DeliveryStatus.RETRY
                row.next_attempt_at = when + self._offset
                row.lease_until = row.lease_owner = None
                row.last_error = error[:1000]

    def release(self, ids: Sequence[int]) -> None:
        with self._call("release"):
            for delivery_id in ids:
                row = self.rows[delivery_id]
                if row.status == DeliveryStatus.SENDING:
                    row.status = DeliveryStatus.QUEUED
                    row.lease_until = row.lease_owner = None
                    row.attempts -= 1

    def mark_finished(
        self, ids: Sequence[int], status: DeliveryStatus, reason: str, error: str | None = None
    ) -> None:
        with self._call("mark_finished"):
            for delivery_id in ids:
                row = self.rows[delivery_id]
                row.status = status
                row.reason = reason
                row.lease_until = row.lease_owner = None
                row.last_error = error[:1000] if error else None

    def record_bounce(self, email: str, detail: str, limit: int) -> bool:
        with self._call("record_bounce"):
            count = 1
            sub = next((s for s in self.subscribers.values() if s.email == email), None)
            if sub is not None:
                count = sub.bounce_count + 1
                status = SubscriberStatus.BOUNCED if count >= limit else sub.status
                self.subscribers[sub.id] = replace(sub, bounce_count=count, status=status)
            if count >= limit:
                self.suppress(email, "bounced", detail)
                return True
            return False

    # -- internals ------------------------------------------------------------------------

    def _orphaned(self, row: Row) -> bool:
        """Leased by another sender that is gone: nobody will record it, so it is due now."""
        return (
            row.status == DeliveryStatus.SENDING
            and row.lease_owner is not None
            and row.lease_owner != self.owner
            and row.lease_owner not in self.live
        )

    def _by_email(self, email: str) -> SubscriberRecord:
        return next(s for s in self.subscribers.values() if s.email == email)

    @contextmanager
    def _call(self, method: str) -> Iterator[None]:
        """One store call: under the lock, counted, and failing first if a test asked for it."""
        with self._lock:
            self.calls[method] += 1
            if self._failures[method]:
                self._failures[method] -= 1
                raise StoreUnavailable(f"database is locked ({method})")
            yield


def _due(row: Row, now: datetime) -> bool:
    if row.status == DeliveryStatus.QUEUED:
        return row.next_attempt_at is None or row.next_attempt_at <= now
    if row.status == DeliveryStatus.RETRY:
        return row.next_attempt_at is not None and row.next_attempt_at <= now
    if row.status == DeliveryStatus.SENDING:
        return row.lease_until is not None and row.lease_until < now
    return False

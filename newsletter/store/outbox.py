"""The outbox: planning writes a day's deliveries, senders claim them and record the outcome."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from newsletter.clock import utcnow
from newsletter.records import ClaimedDelivery, PlanCandidate, PlannedDelivery, PlannedDigest
from newsletter.states import DeliveryStatus, SkipReason
from newsletter.store.backend import Backend
from newsletter.store.outbox_sql import TAKE_OVER_ALL, statements_for
from newsletter.store.rows import delivery_status, strings, subscriber_records
from newsletter.store.schema import (
    DeliveryRow,
    DigestRunRow,
    SentPaperRow,
)
from newsletter.store.suppressions import Suppressions

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, db: Backend, suppressions: Suppressions) -> None:
        self._db = db
        self._sql = statements_for(db)
        self._suppressions = suppressions

    # -- planning -------------------------------------------------------------------------

    def plan_candidates(self, day: date, batch_size: int) -> Iterator[list[PlanCandidate]]:
        """Active subscribers in id order, a batch at a time, each with whether `day` is planned
        for them already and whether their address is suppressed: one indexed query a batch
        rather than three queries with thousands of parameters each."""
        query = self._sql.candidates(day, batch_size)
        self._sql.refresh_statistics()
        last_id = 0
        while True:
            with self._db.connection() as c:
                rows = c.execute(query, {"last_id": last_id}).all()
            if not rows:
                return
            yield [
                PlanCandidate(record, bool(row.is_planned), bool(row.is_suppressed))
                for record, row in zip(subscriber_records(rows), rows, strict=True)
            ]
            last_id = rows[-1].id

    def start_run(self, day: date, paper_count: int) -> None:
        """Create `day`'s run row once; concurrent planners all find the same row."""
        with self._db.session() as s:
            s.execute(
                self._db.insert(DigestRunRow)
                .values(digest_date=day, created_at=utcnow(), paper_count=paper_count)
                .on_conflict_do_nothing(index_elements=["digest_date"])
            )

    def finish_run(self, day: date) -> None:
        with self._db.session() as s:
            s.execute(
                update(DigestRunRow)
                .where(DigestRunRow.digest_date == day, DigestRunRow.planned_at.is_(None))
                .values(planned_at=utcnow())
            )

    def run_planned(self, day: date) -> bool:
        with self._db.session() as s:
            return (
                s.scalar(select(DigestRunRow.planned_at).where(DigestRunRow.digest_date == day))
                is not None
            )

    def already_sent(
        self, subscriber_ids: Iterable[int], paper_ids: Iterable[str]
    ) -> dict[int, set[str]]:
        """Which of `paper_ids` each subscriber already got or is about to get (a digest not
        yet sent holds its papers): one range scan per paper over the subscribers' ids, and
        their undelivered digests (outbox_sql._already_sent), so the cost does not grow with
        their history."""
        sent: dict[int, set[str]] = {}
        wanted, papers = set(subscriber_ids), list(paper_ids)
        if not wanted or not papers:
            return sent
        among = set(papers)
        with self._db.connection() as c:
            rows = c.execute(
                self._sql.already_sent,
                {"papers": papers, "first": min(wanted), "last": max(wanted)},
            )
            for subscriber_id, paper_id, undelivered in rows:
                if subscriber_id not in wanted:  # the id range may hold others
                    continue
                held = (paper_id,) if paper_id is not None else strings(undelivered)
                if found := among.intersection(held):
                    sent.setdefault(subscriber_id, set()).update(found)
        return sent

    def add_deliveries(self, day: date, planned: Sequence[PlannedDelivery]) -> set[int]:
        """Insert the outbox rows; return the subscribers whose row this call created. Their
        papers are held by the rows themselves until they are sent (see already_sent), when
        mark_sent writes them to the sent log.

        A row that already exists (another planner, a re-run) is left alone, and so are its
        papers: the unique key, not this process, decides who planned a subscriber's day.
        """
        if not planned:
            return set()
        with self._db.session() as s:
            inserted = self._sql.insert_deliveries(s, day, utcnow(), planned)
            return {sub_id for _, sub_id in inserted}

    def supersede_older(self, day: date) -> int:
        """Undelivered digests of earlier days give way to `day`'s: their papers go back into
        the pool, so the new digest can carry them."""
        with self._db.session() as s:
            ids = list(
                s.scalars(
                    select(DeliveryRow.id).where(
                        DeliveryRow.digest_date < day,
                        DeliveryRow.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.RETRY]),
                    )
                )
            )
            finish(s, ids, DeliveryStatus.SKIPPED, SkipReason.SUPERSEDED, release=True)
            return len(ids)

    def delivery_for(self, subscriber_id: int, day: date) -> PlannedDigest | None:
        """The digest planned for a subscriber on `day`, for previews and the web version."""
        with self._db.session() as s:
            row = s.execute(
                select(DeliveryRow.status, DeliveryRow.paper_ids).where(
                    DeliveryRow.subscriber_id == subscriber_id, DeliveryRow.digest_date == day
                )
            ).first()
            return PlannedDigest(delivery_status(row[0]), list(row[1])) if row else None

    # -- sending --------------------------------------------------------------------------

    @contextmanager
    def exclusive_sender(self) -> Iterator[int]:
        """Hold the right to send: one sender at a time on SQLite, any number on PostgreSQL
        (see Backend.exclusive_sender). Yields how many leases it took over.

        On SQLite the holder knows that no other sender lives (a multi-process `send` takes it
        once for all its processes, before they claim), so every lease already there is a
        dead sender's: they are due at once instead of when they expire.
        """
        with self._db.exclusive_sender() as sole:
            if sole:
                with self._db.single_statement() as c:
                    taken = c.execute(TAKE_OVER_ALL, {"now": utcnow()}).rowcount
            else:
                # On PostgreSQL the claims take them over; counted here to be reported.
                self._db.sender_owner()
                taken = self.leases().orphaned
            if taken:
                log.warning("taking over %d leases of a sender that is gone: due now", taken)
            yield taken

    def claim(self, limit: int, lease_seconds: int) -> list[ClaimedDelivery]:
        """Reserve up to `limit` due deliveries for this sender with a lease.

        Due means queued or retry whose time has come (the local delivery hour, the backoff),
        or sending whose lease expired (its sender hangs) or whose sender is gone (on
        PostgreSQL, its advisory lock is free; on SQLite, see exclusive_sender). On
        PostgreSQL, FOR UPDATE SKIP LOCKED lets many senders claim at once.
        """
        now = utcnow()
        claim = {
            "now": now,
            "limit": limit,
            "lease_until": now + timedelta(seconds=lease_seconds),
            "owner": self._db.sender_owner(),
        }
        rows = self._sql.claim(claim)
        return [
            ClaimedDelivery(
                id=row.delivery_id,
                digest_date=row.digest_date,
                message_id=row.message_id,
                paper_ids=list(strings(row.paper_ids)),
                attempts=row.attempts,
                subscriber=subscriber,
            )
            for row, subscriber in zip(rows, subscriber_records(rows), strict=True)
        ]

    def suppressed(self, emails: Iterable[str]) -> set[str]:
        """Which of `emails` are suppressed (Suppressions.suppressed), for the sender."""
        return self._suppressions.suppressed(emails)

    def record_bounce(self, email: str, detail: str, limit: int) -> bool:
        """Count a hard bounce (Suppressions.record_bounce), for the sender."""
        return self._suppressions.record_bounce(email, detail, limit)

    def mark_sent(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        self._sql.mark_sent(list(ids), utcnow())

    def release(self, ids: Sequence[int]) -> None:
        """Put claimed deliveries back untried (the run stopped first): the attempt is not
        counted against them."""
        if not ids:
            return
        with self._db.session() as s:
            s.execute(
                update(DeliveryRow)
                .where(DeliveryRow.id.in_(ids), DeliveryRow.status == DeliveryStatus.SENDING)
                .values(
                    status=DeliveryStatus.QUEUED,
                    lease_until=None,
                    attempts=DeliveryRow.attempts - 1,
                    updated_at=utcnow(),
                )
            )

    def mark_retry(self, retries: Sequence[tuple[int, datetime, str]]) -> None:
        now = utcnow()
        with self._db.session() as s:
            for delivery_id, when, error in retries:
                s.execute(
                    update(DeliveryRow)
                    .where(DeliveryRow.id == delivery_id)
                    .values(
                        status=DeliveryStatus.RETRY,
                        next_attempt_at=when,
                        lease_until=None,
                        last_error=error[:1000],
                        updated_at=now,
                    )
                )

    def mark_finished(
        self, ids: Sequence[int], status: DeliveryStatus, reason: str, error: str | None = None
    ) -> None:
        """Close deliveries that will not be sent (skipped or failed); their papers are
        released so a later digest may carry them."""
        with self._db.session() as s:
            finish(s, ids, status, reason, release=True, error=error)

    def next_due_at(self) -> datetime | None:
        """When the next delivery becomes claimable: a retry's time, or the expiry of a lease
        (a sender that died mid-run leaves its claims in `sending` until then)."""
        with self._db.session() as s:
            retry_at = s.scalar(
                select(func.min(DeliveryRow.next_attempt_at)).where(
                    DeliveryRow.status == DeliveryStatus.RETRY
                )
            )
            lease_until = s.scalar(
                select(func.min(DeliveryRow.lease_until)).where(
                    DeliveryRow.status == DeliveryStatus.SENDING
                )
            )
        times = [t for t in (retry_at, lease_until) if t is not None]
        return min(times) if times else None

    def leases_held(self) -> tuple[int, datetime | None]:
        """Deliveries leased by other senders that are alive, and when the last lease ends."""
        leases = self.leases()
        return leases.held, leases.held_until

    def leases(self) -> Leases:
        """Every unexpired lease, as held by a live sender or left by a gone one."""
        params = {"now": utcnow(), "owner": self._db.registered_owner}  # `status` registers not
        with self._db.single_statement() as c:
            held, until, orphaned = c.execute(self._sql.leases, params).one()
        if orphaned is None:  # SQLite: only the lock file knows whether their sender lives
            if self._db.running_sender() is None:
                held, until, orphaned = 0, None, held
            else:
                orphaned = 0
        return Leases(held, until, orphaned)


@dataclass(frozen=True)
class Leases:
    """Deliveries in `sending` whose lease has not expired."""

    held: int  # by a sender that is alive: they wait for it, or for held_until
    held_until: datetime | None  # when the last of them expires
    orphaned: int  # left by a sender that is gone: the next claim takes them at once


def finish(
    s: Session,
    ids: Sequence[int],
    status: DeliveryStatus,
    reason: str,
    release: bool,
    error: str | None = None,
) -> None:
    """Close deliveries in `s`; with `release`, their papers leave the sent log."""
    if not ids:
        return
    s.execute(
        update(DeliveryRow)
        .where(DeliveryRow.id.in_(ids))
        .values(
            status=status,
            reason=reason,
            lease_until=None,
            updated_at=utcnow(),
            last_error=error[:1000] if error else None,
        )
    )
    if release:
        s.execute(delete(SentPaperRow).where(SentPaperRow.delivery_id.in_(ids)))

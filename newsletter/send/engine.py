"""The delivery loop: claim due deliveries, re-check each subscriber, send, record the outcome.

The database, not memory, says how far a run got: every claimed delivery holds a lease in its
sender's name, and the store makes the leases of a sender that died due at once (see
DeliveryStore.claim), so a re-run right after a crash finishes the day; a live sender's leases
wait for it, or for their expiry if it hangs. Nothing is marked sent before the relay accepted
it, and no send starts while `record_every` outcomes are unrecorded, so a crash re-sends at
most that many plus the ones on the wire, each with its original Message-ID.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from newsletter.clock import utcnow
from newsletter.config import Settings
from newsletter.errors import StoreUnavailable
from newsletter.records import ClaimedDelivery
from newsletter.send.errors import (
    RecipientRejected,
    SenderRejected,
    SendError,
    ServerUnreachable,
)
from newsletter.send.message import Envelope
from newsletter.send.senders import Sender
from newsletter.states import DeliveryStatus, FailureReason, SkipReason, SubscriberStatus

log = logging.getLogger(__name__)

_SKIP_FOR_STATUS = {
    SubscriberStatus.UNSUBSCRIBED: SkipReason.UNSUBSCRIBED,
    SubscriberStatus.PAUSED: SkipReason.PAUSED,
    SubscriberStatus.BOUNCED: SkipReason.SUPPRESSED,
    SubscriberStatus.PENDING: SkipReason.UNSUBSCRIBED,
}


T = TypeVar("T")

# Deliveries claimed per lane before the relay's pace is known.
FIRST_CLAIM_PER_LANE = 20


class DeliveryStore(Protocol):
    """The outbox as the delivery loop uses it, and nothing more.

    Each call is its own transaction and may raise StoreUnavailable when the database is
    briefly away; the loop tries it again (see DeliveryLoop._retrying).
    """

    def claim(self, limit: int, lease_seconds: int) -> list[ClaimedDelivery]:
        """Lease up to `limit` due deliveries (queued or retry whose time has come, or sending
        whose lease expired or whose sender is gone), counting an attempt on each, with their
        subscribers as they are now."""
        ...

    def suppressed(self, emails: Iterable[str]) -> set[str]:
        """Those of `emails` on the suppression list."""
        ...

    def next_due_at(self) -> datetime | None:
        """When the next delivery becomes claimable: a retry's time or a lease's expiry."""
        ...

    def leases_held(self) -> tuple[int, datetime | None]:
        """Deliveries leased by other senders that are still alive (a dead sender's leases are
        claimable at once), and when the last of those leases expires."""
        ...

    def mark_sent(self, ids: Sequence[int]) -> None: ...

    def mark_retry(self, retries: Sequence[tuple[int, datetime, str]]) -> None:
        """(delivery id, when to try again, the error) for each."""
        ...

    def release(self, ids: Sequence[int]) -> None:
        """Put claimed deliveries back untried: their attempt does not count."""
        ...

    def mark_finished(
        self, ids: Sequence[int], status: DeliveryStatus, reason: str, error: str | None = None
    ) -> None:
        """Close deliveries that will not be sent (skipped or failed)."""
        ...

    def record_bounce(self, email: str, detail: str, limit: int) -> bool:
        """Count a hard bounce; suppress the address once it reaches `limit`. True if
        suppressed."""
        ...


@dataclass(frozen=True)
class DeliveryPolicy:
    batch_size: int = 500
    lease_seconds: int = 300
    max_attempts: int = 8
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 3600.0
    retry_wait_seconds: float = 120.0
    hard_bounce_limit: int = 1
    sender_error_threshold: int = 5
    unreachable_threshold: int = 3
    # Outcomes are written after this many sends: it bounds what a crash can re-send.
    record_every: int = 500
    # A store call that fails (a locked SQLite file, a dropped PostgreSQL connection) is tried
    # again this many times, after 0.5 s, 1 s, 2 s..., before the run gives up.
    store_retries: int = 4
    store_retry_seconds: float = 0.5
    # While a planner is still writing the outbox, an empty claim is tried again this often.
    planning_poll_seconds: float = 0.1
    # A claim holds no more than the lanes send in this long at the pace seen, so a crash (or
    # a sender that hangs) leaves few leases behind.
    claim_ahead_seconds: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        s = settings
        return cls(
            batch_size=s.batch_size,
            lease_seconds=s.lease_seconds,
            max_attempts=s.max_attempts,
            retry_base_seconds=s.retry_base_seconds,
            retry_max_seconds=s.retry_max_seconds,
            retry_wait_seconds=s.retry_wait_seconds,
            hard_bounce_limit=s.hard_bounce_limit,
            sender_error_threshold=s.sender_error_threshold,
            unreachable_threshold=s.smtp_unreachable_threshold,
            record_every=s.record_every,
            store_retries=s.store_retries,
        )

    def backoff(self, attempts: int) -> float:
        """Exponential backoff with jitter, so retries from many senders do not arrive at once."""
        delay = min(self.retry_max_seconds, self.retry_base_seconds * 2 ** max(attempts - 1, 0))
        return delay * random.uniform(0.5, 1.5)


@dataclass
class DrainReport:
    sent: int = 0
    retrying: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    suppressed: int = 0
    stopped: str | None = None  # why the run stopped early (sender refused, relay down)
    # Leases of a sender that was gone (a crash) that this run took over without waiting.
    taken_over: int = 0
    # Left to a live sender when this run ended: how many, and until when at the latest (a
    # multi-process send asks again once all its processes are done: see Newsletter.send).
    leased_elsewhere: int = 0
    leased_until: datetime | None = None
    seconds: float = 0.0
    store_retries: int = 0  # store calls that failed once and succeeded when tried again
    # CPU seconds composing messages: rendering the personal parts, assembling the MIME bytes.
    render_seconds: float = 0.0
    build_seconds: float = 0.0

    def add(self, other: DrainReport) -> None:
        """Fold in the report of another process that drained the same outbox at once."""
        self.sent += other.sent
        self.retrying += other.retrying
        self.failed.update(other.failed)
        self.skipped.update(other.skipped)
        self.suppressed += other.suppressed
        self.stopped = self.stopped or other.stopped
        self.taken_over += other.taken_over
        self.seconds = max(self.seconds, other.seconds)
        self.store_retries += other.store_retries
        self.render_seconds += other.render_seconds
        self.build_seconds += other.build_seconds


@dataclass
class _Outcomes:
    sent: list[int] = field(default_factory=list)
    retry: list[tuple[int, datetime, str]] = field(default_factory=list)
    released: list[int] = field(default_factory=list)  # not tried: back to the queue, no attempt
    skipped: dict[SkipReason, list[int]] = field(default_factory=dict)
    failed: dict[FailureReason, list[tuple[int, str]]] = field(default_factory=dict)
    bounces: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.sent)
            + len(self.retry)
            + len(self.released)
            + sum(map(len, self.skipped.values()))
            + sum(map(len, self.failed.values()))
        )


class DeliveryLoop:
    def __init__(
        self,
        store: DeliveryStore,
        sender: Sender,
        compose: Callable[[ClaimedDelivery], Envelope],
        policy: DeliveryPolicy,
        progress: Callable[[DrainReport], None] | None = None,
        planning: Callable[[], bool] | None = None,
    ) -> None:
        """`planning` says whether a planner is still adding deliveries; while it does, the
        loop waits for them instead of ending when nothing is due."""
        self.store = store
        self.planning = planning
        self.sender = sender
        self.compose = compose
        self.policy = policy
        self.progress = progress
        self.report = DrainReport()
        self._sender_errors = 0  # consecutive rejections that may be about us
        self._unreachable = 0  # consecutive connection failures
        self._answered = 0  # definite answers (accepted, or a recipient refused) this run
        # Only as many sends as the sender can carry are in progress at once (one lane each),
        # so that once the run stops, nothing still queued in front of the sender reaches the
        # relay.
        self._lanes = max(1, sender.concurrency)
        # The first claim is small, until the relay's pace is known (see _fit_claims_to_lease):
        # a few sends a lane, whatever record_every, so that even a slow relay finishes it well
        # within a lease.
        self._claim_size = min(policy.batch_size, self._lanes * FIRST_CLAIM_PER_LANE)
        self._pending = _Outcomes()
        self._recording = 0  # outcomes being written by the flush in progress
        self._flush_lock = asyncio.Lock()
        # A flush starts at half the bound, so sending goes on while it is written, and no send
        # starts while a whole bound is unrecorded (see _make_room).
        self._flush_at = max(1, policy.record_every // 2)
        # Deliveries refused in a way that is about us only if everyone gets it (5.7.x to RCPT,
        # 5xx to DATA): judged when the batch is done.
        self._suspects: list[tuple[ClaimedDelivery, str]] = []

    async def run(self) -> DrainReport:
        """Send until nothing is due (waiting for retries and expiring leases due soon) or the
        run must stop."""
        started = time.monotonic()
        try:
            while self.report.stopped is None:
                claimed = await self._store(
                    self.store.claim, self._claim_size, self.policy.lease_seconds
                )
                if not claimed:
                    if self.planning is not None:
                        still = self.planning()
                        if not still:  # planned: one more claim sees the last batch
                            self.planning = None
                        await asyncio.sleep(self.policy.planning_poll_seconds if still else 0)
                        continue
                    if not await self._wait_for_due():
                        await self._note_leases_held()
                        break
                    continue
                batch_started = time.monotonic()
                await self._deliver(claimed)
                self._fit_claims_to_lease(len(claimed), time.monotonic() - batch_started)
        finally:
            self.report.seconds = time.monotonic() - started
        return self.report

    def _fit_claims_to_lease(self, count: int, seconds: float) -> None:
        """Claim no more than can be sent soon (claim_ahead_seconds, and never more than half
        a lease) at the pace just seen.

        A batch that outlives its lease is claimable by another sender while this one still
        works through it, which would duplicate mail; what a sender holds when it dies or
        hangs waits for it. A slow or rate-limited relay makes the pace, so it is measured
        rather than configured.
        """
        if seconds <= 0:
            return
        ahead = min(self.policy.lease_seconds / 2, self.policy.claim_ahead_seconds)
        fits = int(count / seconds * ahead)
        self._claim_size = max(1, min(self.policy.batch_size, max(self._lanes, fits)))

    async def _note_leases_held(self) -> None:
        """Say what is left to a live sender, so the run's end does not look like the day's."""
        count, until = await self._store(self.store.leases_held)
        self.report.leased_elsewhere, self.report.leased_until = count, until
        if count:
            log.info("%d deliveries are leased by another sender until %s", count, until)

    async def _wait_for_due(self) -> bool:
        """Wait for the next retry, or for a dead sender's lease to expire, if it is soon."""
        next_due = await self._store(self.store.next_due_at)
        if next_due is None:
            return False
        delay = (next_due - utcnow()).total_seconds()
        if delay > self.policy.retry_wait_seconds:
            return False
        await asyncio.sleep(max(delay, 0) + 0.05)
        return True

    async def _deliver(self, claimed: list[ClaimedDelivery]) -> None:
        suppressed = await self._store(self.store.suppressed, [d.subscriber.email for d in claimed])
        ready: list[ClaimedDelivery] = []
        pending = self._pending
        for delivery in claimed:
            # Re-checked at claim time: an unsubscribe wins over anything not yet sent.
            status = delivery.subscriber.status
            if status != SubscriberStatus.ACTIVE:
                reason = _SKIP_FOR_STATUS.get(SubscriberStatus(status), SkipReason.UNSUBSCRIBED)
                pending.skipped.setdefault(reason, []).append(delivery.id)
            elif delivery.subscriber.email in suppressed:
                pending.skipped.setdefault(SkipReason.SUPPRESSED, []).append(delivery.id)
            else:
                ready.append(delivery)
        # A few lanes working through the batch rather than a task per delivery: at thousands
        # of messages a second, creating and scheduling the tasks was a visible cost.
        waiting = deque(ready)

        async def lane() -> None:
            while waiting:
                await self._send_next(waiting.popleft())

        tasks = [asyncio.create_task(lane()) for _ in range(min(self._lanes, len(ready)))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # A store failure ends the run: stop the other sends rather than leave them running
            # with nobody to record them (their leases expire and the next run retries them).
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        self._settle_suspects()
        await self._flush()

    async def _send_next(self, delivery: ClaimedDelivery) -> None:
        await self._make_room()
        if self.report.stopped is not None:  # also while it waited for room
            self._pending.released.append(delivery.id)
            return
        # Composed just before sending, so rendering overlaps the other connections' I/O
        # instead of holding up the whole batch.
        try:
            envelope = self.compose(delivery)
        except ValueError as exc:
            self._pending.failed.setdefault(FailureReason.INVALID_ADDRESS, []).append(
                (delivery.id, str(exc))
            )
        else:
            await self._send_one(delivery, envelope)
        if len(self._pending) >= self._flush_at and not self._flush_lock.locked():
            await self._flush()

    async def _make_room(self) -> None:
        """Backpressure: wait while `record_every` outcomes are unrecorded (being written or
        waiting to be), writing them if nobody is.

        Without it a relay that answers at once outruns the recording thread (which needs the
        GIL the sending lanes hold), and what a crash re-sends grows past the bound.
        """
        while self._recording + len(self._pending) >= self.policy.record_every:
            await self._flush(full_only=True)

    async def _send_one(self, delivery: ClaimedDelivery, envelope: Envelope) -> None:
        try:
            await self.sender.send(envelope)
        except RecipientRejected as exc:
            self._sender_errors = self._unreachable = 0
            self._answered += 1
            self._pending.failed.setdefault(FailureReason.REJECTED, []).append(
                (delivery.id, str(exc))
            )
            self._pending.bounces.append((delivery.subscriber.email, str(exc)))
        except SenderRejected as exc:
            if exc.certain:
                self._pending.released.append(delivery.id)
                self._stop(f"the relay refuses us, not the recipients: {exc}")
                return
            self._sender_errors += 1
            self._suspects.append((delivery, str(exc)))
            if self._sender_errors >= self.policy.sender_error_threshold:
                self._stop(
                    f"{self._sender_errors} recipients in a row refused by policy, so the relay "
                    f"refuses us, not them: {exc}"
                )
        except ServerUnreachable as exc:
            self._unreachable += 1
            self._pending.released.append(delivery.id)
            if self._unreachable >= self.policy.unreachable_threshold:
                self._stop(str(exc))
        except SendError as exc:
            self._unreachable = 0
            self._retry_or_fail(delivery, str(exc))
        else:
            self._sender_errors = self._unreachable = 0
            self._answered += 1
            self._pending.sent.append(delivery.id)

    def _settle_suspects(self) -> None:
        """Decide the batch's policy refusals: about us if the run stopped or nobody was
        answered at all; otherwise about those recipients, so retried (never suppressed)."""
        suspects, self._suspects = self._suspects, []
        if suspects and self._answered == 0:
            self._stop(f"every recipient tried was refused by policy: {suspects[-1][1]}")
        for delivery, error in suspects:
            if self.report.stopped is not None:
                self._pending.released.append(delivery.id)
            else:
                self._retry_or_fail(delivery, error)

    def _retry_or_fail(self, delivery: ClaimedDelivery, error: str) -> None:
        if delivery.attempts >= self.policy.max_attempts:
            self._pending.failed.setdefault(FailureReason.RETRIES_EXHAUSTED, []).append(
                (delivery.id, error)
            )
            return
        when = utcnow() + timedelta(seconds=self.policy.backoff(delivery.attempts))
        self._pending.retry.append((delivery.id, when, error))

    def _stop(self, reason: str) -> None:
        if self.report.stopped is None:
            self.report.stopped = reason
            log.error("run paused: %s", reason)

    async def _flush(self, full_only: bool = False) -> None:
        """Write the pending outcomes; with `full_only`, only if a whole bound is waiting
        (once the flush in progress is done), so lanes held back do not each write a few."""
        async with self._flush_lock:
            if full_only and len(self._pending) < self.policy.record_every:
                return
            outcomes, self._pending = self._pending, _Outcomes()
            if not len(outcomes) and not outcomes.bounces:
                return
            self._recording = len(outcomes)
            try:
                await asyncio.to_thread(self._record, outcomes)
            except StoreUnavailable as exc:
                raise StoreUnavailable(
                    f"{exc}; sending stopped. {len(outcomes.sent)} messages the relay accepted "
                    "could not be recorded: the next run re-sends them, with the same "
                    "Message-ID"
                ) from exc
            finally:
                self._recording = 0
        if self.progress:
            self.progress(self.report)

    # -- the store, tried again when it is briefly unavailable -----------------------------

    async def _store(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(self._retrying, call, *args)

    def _retrying(self, call: Callable[..., T], *args: Any) -> T:
        """Run one store call, again after a short wait if the database is briefly away.

        Each call is its own transaction, so repeating it after a failure cannot apply it twice
        unless the failure struck after the commit, and every call the loop makes tolerates that
        (marking sent twice is harmless; a claim lost that way expires and is claimed again).
        """
        delay = self.policy.store_retry_seconds
        for attempt in range(self.policy.store_retries + 1):
            try:
                result = call(*args)
            except StoreUnavailable as exc:
                if attempt == self.policy.store_retries:
                    raise
                log.warning("database call %s failed, trying again: %s", call.__name__, exc)
                time.sleep(delay * random.uniform(0.8, 1.2))
                delay *= 2
            else:
                if attempt:
                    self.report.store_retries += 1
                return result
        raise AssertionError("unreachable")

    def _record(self, outcomes: _Outcomes) -> None:
        call = self._retrying
        store = self.store
        call(store.mark_sent, outcomes.sent)
        # Counted as soon as they are durable, so a later failure does not hide them.
        self.report.sent += len(outcomes.sent)
        if outcomes.retry:
            call(store.mark_retry, outcomes.retry)
        self.report.retrying += len(outcomes.retry)
        call(store.release, outcomes.released)
        for skip_reason, ids in outcomes.skipped.items():
            call(store.mark_finished, ids, DeliveryStatus.SKIPPED, skip_reason)
            self.report.skipped[skip_reason] += len(ids)
        for failure, items in outcomes.failed.items():
            for delivery_id, detail in items:
                call(store.mark_finished, [delivery_id], DeliveryStatus.FAILED, failure, detail)
            self.report.failed[failure] += len(items)
        for email, detail in outcomes.bounces:
            if call(store.record_bounce, email, detail, self.policy.hard_bounce_limit):
                self.report.suppressed += 1

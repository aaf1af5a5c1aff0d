"""The delivery loop: claim due deliveries, re-check each subscriber, send, record the outcome.

The database, not memory, says how far a run got: every claimed delivery holds a lease, and a
sender that dies simply lets its leases expire for the next run to pick up. Nothing is marked
sent before the relay accepted it, so a crash can at worst re-send what was in flight, with the
same Message-ID.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from newsletter.send.errors import (
    RecipientRejected,
    SenderRejected,
    SendError,
    ServerUnreachable,
)
from newsletter.send.message import Envelope
from newsletter.send.senders import Sender
from newsletter.states import DeliveryStatus, FailureReason, SkipReason, SubscriberStatus
from newsletter.store import ClaimedDelivery, Store
from newsletter.store.database import utcnow

log = logging.getLogger(__name__)

_SKIP_FOR_STATUS = {
    SubscriberStatus.UNSUBSCRIBED: SkipReason.UNSUBSCRIBED,
    SubscriberStatus.PAUSED: SkipReason.PAUSED,
    SubscriberStatus.BOUNCED: SkipReason.SUPPRESSED,
    SubscriberStatus.PENDING: SkipReason.UNSUBSCRIBED,
}


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
    seconds: float = 0.0


@dataclass
class _Outcomes:
    sent: list[int] = field(default_factory=list)
    retry: list[tuple[int, datetime, str]] = field(default_factory=list)
    released: list[int] = field(default_factory=list)  # not tried: back to the queue, no attempt
    skipped: dict[SkipReason, list[int]] = field(default_factory=dict)
    failed: dict[FailureReason, list[tuple[int, str]]] = field(default_factory=dict)
    bounces: list[tuple[str, str]] = field(default_factory=list)


class DeliveryLoop:
    def __init__(
        self,
        store: Store,
        sender: Sender,
        compose: Callable[[ClaimedDelivery], Envelope],
        policy: DeliveryPolicy,
        progress: Callable[[DrainReport], None] | None = None,
    ) -> None:
        self.store = store
        self.sender = sender
        self.compose = compose
        self.policy = policy
        self.progress = progress
        self.report = DrainReport()
        self._sender_errors = 0  # consecutive sender-wide rejections
        self._unreachable = 0  # consecutive connection failures

    async def run(self) -> DrainReport:
        """Send until nothing is due (waiting for retries due soon) or the run must stop."""
        started = time.monotonic()
        while self.report.stopped is None:
            claimed = await asyncio.to_thread(
                self.store.claim, self.policy.batch_size, self.policy.lease_seconds
            )
            if not claimed:
                if not await self._wait_for_retries():
                    break
                continue
            outcomes = await self._deliver(claimed)
            await asyncio.to_thread(self._record, outcomes)
            if self.progress:
                self.progress(self.report)
        self.report.seconds = time.monotonic() - started
        return self.report

    async def _wait_for_retries(self) -> bool:
        next_retry = await asyncio.to_thread(self.store.next_retry_at)
        if next_retry is None:
            return False
        delay = (next_retry - utcnow()).total_seconds()
        if delay > self.policy.retry_wait_seconds:
            return False
        await asyncio.sleep(max(delay, 0) + 0.05)
        return True

    async def _deliver(self, claimed: list[ClaimedDelivery]) -> _Outcomes:
        outcomes = _Outcomes()
        suppressed = await asyncio.to_thread(
            self.store.suppressed, [d.subscriber.email for d in claimed]
        )
        ready: list[tuple[ClaimedDelivery, Envelope]] = []
        for delivery in claimed:
            # Re-checked at claim time: an unsubscribe wins over anything not yet sent.
            status = delivery.subscriber.status
            if status != SubscriberStatus.ACTIVE:
                reason = _SKIP_FOR_STATUS.get(SubscriberStatus(status), SkipReason.UNSUBSCRIBED)
                outcomes.skipped.setdefault(reason, []).append(delivery.id)
            elif delivery.subscriber.email in suppressed:
                outcomes.skipped.setdefault(SkipReason.SUPPRESSED, []).append(delivery.id)
            else:
                try:
                    ready.append((delivery, self.compose(delivery)))
                except ValueError as exc:
                    outcomes.failed.setdefault(FailureReason.INVALID_ADDRESS, []).append(
                        (delivery.id, str(exc))
                    )
        await asyncio.gather(*(self._send_one(d, env, outcomes) for d, env in ready))
        return outcomes

    async def _send_one(
        self, delivery: ClaimedDelivery, envelope: Envelope, outcomes: _Outcomes
    ) -> None:
        if self.report.stopped is not None:
            outcomes.released.append(delivery.id)
            return
        try:
            await self.sender.send(envelope)
        except RecipientRejected as exc:
            self._sender_errors = self._unreachable = 0
            outcomes.failed.setdefault(FailureReason.REJECTED, []).append((delivery.id, str(exc)))
            outcomes.bounces.append((delivery.subscriber.email, str(exc)))
        except SenderRejected as exc:
            self._sender_errors += 1
            outcomes.released.append(delivery.id)
            if self._sender_errors >= self.policy.sender_error_threshold or exc.code in (530, 535):
                self._stop(f"the relay refuses us, not the recipients: {exc}")
        except ServerUnreachable as exc:
            self._unreachable += 1
            outcomes.released.append(delivery.id)
            if self._unreachable >= self.policy.unreachable_threshold:
                self._stop(str(exc))
        except SendError as exc:
            self._sender_errors = 0
            self._retry_or_fail(delivery, str(exc), outcomes)
        else:
            self._sender_errors = self._unreachable = 0
            outcomes.sent.append(delivery.id)

    def _retry_or_fail(self, delivery: ClaimedDelivery, error: str, outcomes: _Outcomes) -> None:
        if delivery.attempts >= self.policy.max_attempts:
            outcomes.failed.setdefault(FailureReason.RETRIES_EXHAUSTED, []).append(
                (delivery.id, error)
            )
            return
        when = utcnow() + timedelta(seconds=self.policy.backoff(delivery.attempts))
        outcomes.retry.append((delivery.id, when, error))

    def _stop(self, reason: str) -> None:
        if self.report.stopped is None:
            self.report.stopped = reason
            log.error("run paused: %s", reason)

    def _record(self, outcomes: _Outcomes) -> None:
        store = self.store
        store.mark_sent(outcomes.sent)
        store.mark_retry(outcomes.retry)
        store.release(outcomes.released)
        for skip_reason, ids in outcomes.skipped.items():
            store.mark_finished(ids, DeliveryStatus.SKIPPED, skip_reason)
            self.report.skipped[skip_reason] += len(ids)
        for failure, items in outcomes.failed.items():
            for delivery_id, detail in items:
                store.mark_finished([delivery_id], DeliveryStatus.FAILED, failure, detail)
            self.report.failed[failure] += len(items)
        for email, detail in outcomes.bounces:
            if store.record_bounce(email, detail, self.policy.hard_bounce_limit):
                self.report.suppressed += 1
        self.report.sent += len(outcomes.sent)
        self.report.retrying += len(outcomes.retry)

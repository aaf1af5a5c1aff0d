"""The delivery loop's rules on their own: an in-memory outbox and scripted senders, no SMTP.

The fault suite in tests/reliability reaches these rules through a misbehaving relay; here
each one is held to account directly (which refusal pauses the run, who is suppressed, how
retries are timed, what a crash can re-send), in milliseconds.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

import newsletter.send
from newsletter.clock import utcnow
from newsletter.errors import StoreUnavailable
from newsletter.records import ClaimedDelivery
from newsletter.send.engine import (
    FIRST_CLAIM_PER_LANE,
    DeliveryLoop,
    DeliveryPolicy,
    DeliveryStore,
    DrainReport,
)
from newsletter.send.errors import (
    RecipientRejected,
    SenderRejected,
    SendError,
    ServerUnreachable,
    TransientError,
    classify,
)
from newsletter.send.message import Envelope
from newsletter.send.senders import MemorySender
from newsletter.states import DeliveryStatus, FailureReason, SkipReason, SubscriberStatus
from tests.memory_outbox import MemoryOutbox

FROM = "news@example.org"


def policy(**overrides: float) -> DeliveryPolicy:
    """Fast timings; a run ends when nothing is due instead of waiting for a retry."""
    fields: dict[str, float] = {
        "retry_wait_seconds": 0,
        "store_retry_seconds": 0.001,
        "planning_poll_seconds": 0,
    }
    fields.update(overrides)
    return DeliveryPolicy(**fields)  # type: ignore[arg-type]


def compose(delivery: ClaimedDelivery) -> Envelope:
    data = f"Message-ID: {delivery.message_id}\r\n\r\nToday's papers\r\n".encode()
    return Envelope(FROM, delivery.subscriber.email, data)


def outbox_of(count: int) -> MemoryOutbox:
    outbox = MemoryOutbox()
    for n in range(count):
        outbox.add(f"reader{n}@example.org")
    return outbox


def run(
    outbox: MemoryOutbox, sender: MemorySender | ScriptedSender, **overrides: float
) -> DrainReport:
    store: DeliveryStore = outbox  # the protocol is all the loop may rely on
    return asyncio.run(DeliveryLoop(store, sender, compose, policy(**overrides)).run())


def failing(error: Callable[[Envelope], SendError | None]) -> MemorySender:
    return MemorySender(fail=error)


def recipients(sender: MemorySender) -> list[str]:
    return [envelope.recipient for envelope in sender.outbox]


class ScriptedSender:
    """Accepts messages until `hang_after`, then leaves every further send on the wire for good,
    as a process that is about to die would."""

    def __init__(
        self, hang_after: int, concurrency: int = 4, round_trip: float | None = 0.01
    ) -> None:
        """`round_trip` None: the relay answers at once, without the event loop ever waiting."""
        self.concurrency = concurrency
        self.round_trip = round_trip
        self.accepted: list[Envelope] = []
        self.hang_after = hang_after
        self.hanging = asyncio.Event()
        self._started = 0

    async def send(self, envelope: Envelope) -> None:
        self._started += 1
        if self._started > self.hang_after:
            self.hanging.set()
            await asyncio.Event().wait()
        # A relay's round trip, during which the event loop waits on the network and the
        # recording thread runs. The crash bound assumes the outbox records a batch faster
        # than a relay answers one message; a sender answering at once, with the event loop
        # never idle, starves the recording thread, and only backpressure keeps the bound.
        if self.round_trip is not None:
            await asyncio.sleep(self.round_trip)
        self.accepted.append(envelope)

    async def close(self) -> None:
        return None


# -- refusals that are about us pause the run and blame nobody -----------------------------


@pytest.mark.parametrize("stage", ["auth", "mail"])
def test_a_certain_sender_refusal_pauses_at_once_and_suppresses_nobody(stage: str) -> None:
    outbox = outbox_of(30)
    refusal = classify(535 if stage == "auth" else 550, "5.7.0 not allowed", stage=stage)  # type: ignore[arg-type]
    assert isinstance(refusal, SenderRejected) and refusal.certain
    tried: list[str] = []

    def refuse(envelope: Envelope) -> SendError:
        tried.append(envelope.recipient)
        return refusal

    sender = failing(refuse)
    report = run(outbox, sender, sender_error_threshold=20)

    # At the first refusal, not after counting up to the threshold.
    assert report.stopped is not None and "not the recipients" in report.stopped
    assert len(tried) == 1
    assert report.sent == 0 and report.suppressed == 0 and not report.failed
    assert outbox.suppressions == {}
    assert outbox.calls["record_bounce"] == 0
    # Nothing after the refusal went to the relay; every digest waits, its attempt not counted.
    assert outbox.by_status() == {DeliveryStatus.QUEUED: 30}
    assert all(row.attempts == 0 for row in outbox.rows.values())
    assert len(sender.outbox) == 0


def test_policy_refusals_of_every_recipient_pause_after_the_threshold_and_suppress_nobody() -> None:
    outbox = outbox_of(40)
    tried: list[str] = []

    def refuse(envelope: Envelope) -> SendError:
        tried.append(envelope.recipient)
        return classify(554, "5.7.1 Service unavailable; client host blocked", stage="rcpt")

    report = run(outbox, failing(refuse), sender_error_threshold=5)

    assert report.stopped is not None and "5 recipients in a row" in report.stopped
    assert report.suppressed == 0 and not report.failed and report.retrying == 0
    assert outbox.suppressions == {}
    assert outbox.by_status() == {DeliveryStatus.QUEUED: 40}
    assert all(row.attempts == 0 for row in outbox.rows.values())
    # The threshold, plus at most what the other lanes had started meanwhile.
    assert 5 <= len(tried) < 5 + MemorySender().concurrency


def test_one_recipients_policy_refusal_among_accepted_ones_is_retried_not_a_pause() -> None:
    outbox = outbox_of(20)
    picky = "reader7@example.org"
    sender = failing(
        lambda e: (
            classify(554, "5.7.1 rejected by recipient's policy", stage="rcpt")
            if e.recipient == picky
            else None
        )
    )

    report = run(outbox, sender)

    assert report.stopped is None
    assert report.sent == 19 and report.retrying == 1 and report.suppressed == 0
    assert outbox.row_for(picky).status == DeliveryStatus.RETRY
    assert outbox.suppressions == {}


# -- a recipient's refusal is about that recipient only ------------------------------------


def test_a_recipient_refusal_fails_and_suppresses_only_that_address() -> None:
    outbox = outbox_of(25)
    gone = "reader3@example.org"
    sender = failing(
        lambda e: (
            classify(550, "5.1.1 <reader3@example.org>: user unknown", stage="rcpt")
            if e.recipient == gone
            else None
        )
    )

    report = run(outbox, sender)

    assert report.stopped is None
    assert report.sent == 24 and report.suppressed == 1
    assert report.failed == {FailureReason.REJECTED: 1}
    assert set(outbox.suppressions) == {gone}
    assert outbox.subscriber(gone).status == SubscriberStatus.BOUNCED
    row = outbox.row_for(gone)
    assert row.status == DeliveryStatus.FAILED and row.reason == FailureReason.REJECTED
    assert row.last_error is not None and "5.1.1" in row.last_error
    others = [s for s in outbox.subscribers.values() if s.email != gone]
    assert all(s.status == SubscriberStatus.ACTIVE and s.bounce_count == 0 for s in others)
    assert sorted(recipients(sender)) == sorted(s.email for s in others)


def test_below_the_bounce_limit_a_refused_address_is_counted_not_suppressed() -> None:
    outbox = outbox_of(3)
    sender = failing(
        lambda e: (
            RecipientRejected("550 5.1.1 user unknown", 550, "rcpt")
            if e.recipient == "reader0@example.org"
            else None
        )
    )

    report = run(outbox, sender, hard_bounce_limit=2)

    assert report.suppressed == 0 and outbox.suppressions == {}
    assert outbox.subscriber("reader0@example.org").bounce_count == 1
    assert outbox.subscriber("reader0@example.org").status == SubscriberStatus.ACTIVE


# -- transient errors back off, then give up --------------------------------------------------


def test_transient_errors_back_off_exponentially_with_jitter_then_fail_after_max_attempts() -> None:
    base, cap, max_attempts = 2.0, 20.0, 6
    outbox = outbox_of(30)
    sender = failing(lambda e: TransientError("451 4.3.0 try again later", 451, "rcpt"))

    for attempt in range(1, max_attempts + 1):
        report = run(
            outbox,
            sender,
            retry_base_seconds=base,
            retry_max_seconds=cap,
            max_attempts=max_attempts,
        )
        assert report.stopped is None
        if attempt < max_attempts:
            assert report.retrying == 30
            assert outbox.by_status() == {DeliveryStatus.RETRY: 30}
            # Not due yet: a run now sends nothing.
            assert run(outbox, sender).retrying == 0 and len(outbox.retries) == 30 * attempt
            outbox.advance(cap * 1.5 + 1)
        else:
            assert report.retrying == 0
            assert report.failed == {FailureReason.RETRIES_EXHAUSTED: 30}

    assert all(row.attempts == max_attempts for row in outbox.rows.values())
    assert all(row.reason == FailureReason.RETRIES_EXHAUSTED for row in outbox.rows.values())
    assert outbox.suppressions == {}
    for n in range(1, max_attempts):
        delays = [(r.when - r.asked_at).total_seconds() for r in outbox.retries if r.attempts == n]
        nominal = min(cap, base * 2 ** (n - 1))
        assert len(delays) == 30
        assert all(0.5 * nominal - 0.05 <= d <= 1.5 * nominal + 0.05 for d in delays), (n, delays)
        assert len({round(d, 3) for d in delays}) > 20  # spread out, not all at one instant


def test_a_retry_due_within_the_wait_is_waited_for_in_the_same_run() -> None:
    outbox = outbox_of(2)
    first = {"reader0@example.org"}

    def once(envelope: Envelope) -> SendError | None:
        if envelope.recipient in first:
            first.discard(envelope.recipient)
            return TransientError("421 4.4.2 timeout", 421, "data")
        return None

    sender = failing(once)
    report = run(outbox, sender, retry_base_seconds=0.01, retry_wait_seconds=5)

    assert report.sent == 2 and report.retrying == 1
    assert outbox.by_status() == {DeliveryStatus.SENT: 2}
    assert outbox.row_for("reader0@example.org").attempts == 2


# -- a crash re-sends at most what was not yet recorded -------------------------------------


def crash_midway(
    outbox: MemoryOutbox, sender: ScriptedSender, record_every: int, lease: int = 300
) -> None:
    """Run until the sender hangs, then end the run as a kill -9 would: nothing more recorded
    after whatever write was under way, and the sender's lock gone with the process."""

    async def crash() -> None:
        loop = DeliveryLoop(
            outbox, sender, compose, policy(record_every=record_every, lease_seconds=lease)
        )
        task = asyncio.create_task(loop.run())
        await sender.hanging.wait()
        await asyncio.sleep(0.02)  # whatever was being recorded lands, as the OS would let it
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(crash())
    outbox.die()


@pytest.mark.parametrize("round_trip", [0.01, None], ids=["relay-10ms", "instant-relay"])
@pytest.mark.parametrize("record_every", [1, 7, 20])
def test_a_crash_re_sends_at_most_record_every_plus_in_flight_with_the_same_message_id(
    record_every: int, round_trip: float | None
) -> None:
    total, lanes, crash_at = 300, 4, 137
    outbox = outbox_of(total)
    sender = ScriptedSender(hang_after=crash_at, concurrency=lanes, round_trip=round_trip)
    # The bound holds at every moment, not only at the crash: what the relay accepted minus
    # what the outbox holds as sent, seen at each acceptance.
    unrecorded_seen: list[int] = []
    accept = sender.send

    async def watched(envelope: Envelope) -> None:
        await accept(envelope)
        unrecorded_seen.append(len(sender.accepted) - outbox.by_status()[DeliveryStatus.SENT])

    sender.send = watched  # type: ignore[method-assign]

    crash_midway(outbox, sender, record_every)

    states = outbox.by_status()
    recorded, leased = states[DeliveryStatus.SENT], states[DeliveryStatus.SENDING]
    unrecorded = len(sender.accepted) - recorded
    assert len(sender.accepted) == crash_at
    assert 0 <= unrecorded <= record_every + lanes, (recorded, unrecorded)
    assert max(unrecorded_seen) <= record_every + lanes, max(unrecorded_seen)
    assert leased > 0

    # The dead run's leases are taken over at once: the re-run sends everyone left, now.
    rerun = MemorySender()
    report = run(outbox.sender("rerun"), rerun, record_every=record_every)
    assert report.sent == total - recorded
    assert report.leased_elsewhere == 0

    assert outbox.by_status() == {DeliveryStatus.SENT: total}
    first = {e.data for e in sender.accepted}
    again = [e for e in rerun.outbox if e.data in first]
    assert len(again) == unrecorded  # the only duplicates, byte for byte: same Message-ID
    everyone = [e.recipient for e in sender.accepted + rerun.outbox]
    assert set(everyone) == {s.email for s in outbox.subscribers.values()}


def test_claims_hold_only_what_the_lanes_send_soon() -> None:
    # A large record_every must not make the first claim, sent before the pace is known, large.
    lanes, record_every, ahead = 2, 500, 0.1
    outbox = outbox_of(300)
    sender = ScriptedSender(hang_after=10**6, concurrency=lanes, round_trip=0.005)
    sizes: list[int] = []
    claim = outbox.claim

    def counted(limit: int, lease_seconds: int) -> list[ClaimedDelivery]:
        sizes.append(limit)
        return claim(limit, lease_seconds)

    outbox.claim = counted  # type: ignore[method-assign]
    report = run(outbox, sender, record_every=record_every, claim_ahead_seconds=ahead)

    assert report.sent == 300
    assert sizes[0] == lanes * FIRST_CLAIM_PER_LANE
    pace = lanes / 0.005  # at most this many a second
    assert max(sizes) <= pace * ahead * 1.5, sizes


def test_a_live_senders_leases_are_left_to_it_and_said_how_many_until_when() -> None:
    total, lease = 100, 300
    outbox = outbox_of(total)
    stuck = ScriptedSender(hang_after=10, concurrency=2)

    async def hold_leases() -> None:
        loop = DeliveryLoop(outbox, stuck, compose, policy(record_every=5, lease_seconds=lease))
        task = asyncio.create_task(loop.run())
        await stuck.hanging.wait()
        await asyncio.sleep(0.02)
        task.cancel()  # the sender stays alive (its lock held): a relay that hangs
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(hold_leases())
    held, recorded = (outbox.by_status()[s] for s in (DeliveryStatus.SENDING, DeliveryStatus.SENT))
    assert held > 0

    other = MemorySender()
    report = run(outbox.sender("other"), other)
    assert report.sent == total - held - recorded
    assert outbox.by_status()[DeliveryStatus.SENDING] == held  # none taken from the live one
    assert not {e.data for e in stuck.accepted} & {e.data for e in other.outbox}
    assert report.leased_elsewhere == held
    assert report.leased_until is not None
    left = (report.leased_until - utcnow()).total_seconds()
    assert lease - 5 < left <= lease

    # Once their lease expires, a live sender's leases are due too (it may be wedged).
    outbox.advance(lease + 1)
    late = MemorySender()
    assert run(outbox.sender("late"), late).sent == held
    assert outbox.by_status() == {DeliveryStatus.SENT: total}


def test_a_claim_takes_over_only_the_leases_of_senders_that_are_gone() -> None:
    outbox = outbox_of(9)
    alive, gone = outbox.sender("alive"), outbox.sender("gone")
    assert [d.id for d in alive.claim(3, 300)] == [1, 2, 3]
    assert [d.id for d in gone.claim(3, 300)] == [4, 5, 6]
    gone.die()

    taken = outbox.sender("new").claim(10, 300)

    assert [d.id for d in taken] == [4, 5, 6, 7, 8, 9]
    assert [d.attempts for d in taken] == [2, 2, 2, 1, 1, 1]  # the dead one's attempt counts
    assert {outbox.rows[i].lease_owner for i in (1, 2, 3)} == {"alive"}
    assert {outbox.rows[i].lease_owner for i in range(4, 10)} == {"new"}
    assert outbox.sender("another").leases_held()[0] == 9


# -- the subscriber as they are at claim time -----------------------------------------------


def test_unsubscribed_paused_or_suppressed_at_claim_time_is_skipped_with_its_reason() -> None:
    outbox = outbox_of(10)
    outbox.set_status("reader1@example.org", SubscriberStatus.UNSUBSCRIBED)
    outbox.set_status("reader2@example.org", SubscriberStatus.PAUSED)
    outbox.set_status("reader3@example.org", SubscriberStatus.BOUNCED)
    outbox.set_status("reader4@example.org", SubscriberStatus.PENDING)
    outbox.suppress("reader5@example.org", "complaint")
    sender = MemorySender()

    report = run(outbox, sender)

    assert report.sent == 5
    assert report.skipped == {
        SkipReason.UNSUBSCRIBED: 2,
        SkipReason.PAUSED: 1,
        SkipReason.SUPPRESSED: 2,
    }
    expected = {
        "reader1@example.org": SkipReason.UNSUBSCRIBED,
        "reader2@example.org": SkipReason.PAUSED,
        "reader3@example.org": SkipReason.SUPPRESSED,
        "reader4@example.org": SkipReason.UNSUBSCRIBED,
        "reader5@example.org": SkipReason.SUPPRESSED,
    }
    for email, reason in expected.items():
        row = outbox.row_for(email)
        assert (row.status, row.reason) == (DeliveryStatus.SKIPPED, reason)
    assert sorted(recipients(sender)) == [f"reader{n}@example.org" for n in (0, 6, 7, 8, 9)]


def test_an_address_the_composer_refuses_fails_as_invalid_without_reaching_the_sender() -> None:
    outbox = outbox_of(3)

    def picky_compose(delivery: ClaimedDelivery) -> Envelope:
        if delivery.subscriber.email == "reader1@example.org":
            raise ValueError("invalid address")
        return compose(delivery)

    sender = MemorySender()
    report = asyncio.run(DeliveryLoop(outbox, sender, picky_compose, policy()).run())

    assert report.failed == {FailureReason.INVALID_ADDRESS: 1} and report.sent == 2
    assert "reader1@example.org" not in recipients(sender)


# -- the store and the relay, briefly or lastingly away -------------------------------------


@pytest.mark.parametrize("method", ["claim", "suppressed", "mark_sent", "mark_finished"])
def test_a_briefly_failing_store_call_is_tried_again_and_the_run_completes(method: str) -> None:
    outbox = outbox_of(12)
    outbox.set_status("reader0@example.org", SubscriberStatus.PAUSED)  # so mark_finished runs
    outbox.fail(method, times=2)
    sender = MemorySender()

    report = run(outbox, sender, store_retries=4)

    assert report.store_retries == 1  # one call, which succeeded on its third try
    assert report.sent == 11 and len(sender.outbox) == 11
    assert outbox.by_status() == {DeliveryStatus.SENT: 11, DeliveryStatus.SKIPPED: 1}


def test_a_store_that_stays_away_ends_the_run_saying_what_was_sent_but_not_recorded() -> None:
    outbox = outbox_of(12)
    outbox.fail("mark_sent", times=100)
    sender = MemorySender()

    with pytest.raises(StoreUnavailable, match=r"12 messages the relay accepted"):
        run(outbox, sender, store_retries=2, record_every=100)

    assert outbox.calls["mark_sent"] == 3
    assert len(sender.outbox) == 12
    assert outbox.by_status() == {DeliveryStatus.SENDING: 12}  # their leases bring them back


def test_an_unreachable_relay_stops_after_the_threshold_with_everything_still_queued() -> None:
    outbox = outbox_of(50)
    tries: list[str] = []

    def down(envelope: Envelope) -> SendError:
        tries.append(envelope.recipient)
        return ServerUnreachable("cannot connect to SMTP server 127.0.0.1:2525")

    report = run(outbox, failing(down), unreachable_threshold=3)

    assert report.stopped is not None and "cannot connect" in report.stopped
    assert report.sent == 0 and report.retrying == 0 and not report.failed
    assert 3 <= len(tries) < 3 + MemorySender().concurrency
    assert outbox.by_status() == {DeliveryStatus.QUEUED: 50}
    assert all(row.attempts == 0 for row in outbox.rows.values())
    assert outbox.suppressions == {}


def test_a_connection_failure_between_successes_does_not_add_up_to_a_stop() -> None:
    outbox = outbox_of(30)
    count = 0

    def flaky(envelope: Envelope) -> SendError | None:
        nonlocal count
        count += 1
        return ServerUnreachable("connection refused") if count % 3 == 0 else None

    report = run(outbox, MemorySender(fail=flaky, concurrency=1), unreachable_threshold=2)

    assert report.stopped is None
    assert outbox.by_status() == {DeliveryStatus.SENT: 30}


# -- the engine stands on its own ------------------------------------------------------------


def test_the_lanes_follow_the_senders_concurrency() -> None:
    outbox = outbox_of(40)
    sender = ScriptedSender(hang_after=10**6, concurrency=3, round_trip=0)
    in_flight = peak = 0
    original = sender.send

    async def counting(envelope: Envelope) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await original(envelope)
        in_flight -= 1

    sender.send = counting  # type: ignore[method-assign]
    run(outbox, sender)
    assert peak == 3 and len(sender.accepted) == 40


def test_send_imports_nothing_from_the_store() -> None:
    package = Path(newsletter.send.__file__).parent
    for module in package.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(n.startswith("newsletter.store") for n in names), module.name

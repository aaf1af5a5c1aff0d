"""SMTP faults injected by a real server on loopback (invariant 7).

Transient trouble (dropped connections, 4xx) is retried until everyone has the digest exactly
once; a recipient's permanent 5.1.1 suppresses that address only; a refusal of the sender
(535 at AUTH, 554 5.7.1 to every RCPT) pauses the run without blaming anyone, and the next run
sends only the rest. Expectations are computed from what was planned, never typed in.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import subprocess
import zlib
from collections.abc import Callable
from datetime import date

import pytest

from newsletter.capture import free_port
from newsletter.root import Newsletter
from newsletter.send.engine import DeliveryPolicy, DrainReport
from newsletter.states import DeliveryStatus, FailureReason, SkipReason, SubscriberStatus
from tests.reliability.conftest import DAY, NEXT_DAY, SmtpClient, cli_env, newsletter_bin
from tests.reliability.faulty_smtp import DROP, STALL, Authenticator, FaultyHandler

SUBSCRIBERS = 240

# The 535 case needs AUTH without TLS on the loopback test relay; aiosmtpd warns about that.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def planned(app: Newsletter, day: date = DAY) -> set[str]:
    """Who the day's plan says should get a digest."""
    return {
        email
        for email, (status, _) in app.store.reports.delivery_states(day).items()
        if status != DeliveryStatus.SKIPPED
    }


def drain(app: Newsletter, day: date | None = None) -> DrainReport:
    if day is None:
        return asyncio.run(app.drain())
    return asyncio.run(app.send(day)).drain


def picked(address: str, share: float, salt: str = "") -> bool:
    """A stable pseudo-random pick of `share` of the addresses, the same on every attempt."""
    return zlib.crc32(f"{salt}{address}".encode()) % 10_000 < share * 10_000


def test_connection_dropped_mid_data_is_retried_and_each_reader_gets_one_copy(
    smtp_client: SmtpClient,
    newsletter_with: Callable[..., Newsletter],
    figure: Callable[[str], None],
) -> None:
    data_commands = itertools.count(1)

    def every_50th_data(_recipient: str, _attempt: int) -> str | None:
        # The server hangs up after the message arrived but before it answers: nothing was
        # accepted, so exactly one copy each is the right outcome.
        return DROP if next(data_commands) % 50 == 0 else None

    handler = FaultyHandler(data_fault=every_50th_data)
    with smtp_client.relay(handler) as server:
        app = newsletter_with(SUBSCRIBERS, smtp_port=server.port)
        report = drain(app, DAY)

    expected = planned(app)
    figure(
        f"{handler.drops} connections dropped mid-DATA in {sum(handler.data_attempts.values())} "
        f"DATA commands: delivered {len(handler.accepted)}/{len(expected)}, "
        f"duplicates {len(handler.duplicates())}, retries {report.retrying}"
    )
    assert handler.drops >= len(expected) // 50 > 0
    assert report.stopped is None
    assert set(handler.accepted) == expected
    assert not handler.duplicates()
    assert report.sent == len(expected)
    assert report.retrying == handler.drops


def test_a_kept_connection_the_relay_closed_is_replaced_at_once_without_a_retry(
    smtp_client: SmtpClient,
    newsletter_with: Callable[..., Newsletter],
    figure: Callable[[str], None],
) -> None:
    def idle_timeout(number: int) -> str | None:
        # The relay has closed a kept connection (idle timeout, restart): the next MAIL on it
        # meets a dead socket. Nothing was transmitted, so the sender reconnects and goes on.
        return DROP if number % 30 == 0 else None

    handler = FaultyHandler(mail_fault=idle_timeout)
    with smtp_client.relay(handler) as server:
        app = newsletter_with(SUBSCRIBERS // 2, smtp_port=server.port)
        report = drain(app, DAY)

    expected = planned(app)
    figure(
        f"{handler.drops} kept connections found closed at MAIL: delivered "
        f"{len(handler.accepted)}/{len(expected)}, retries {report.retrying}, "
        f"duplicates {len(handler.duplicates())}"
    )
    assert handler.drops > 0
    assert set(handler.accepted) == expected and not handler.duplicates()
    assert report.retrying == 0  # replaced on the spot, not charged an attempt


def test_a_relay_that_stops_answering_is_timed_out_and_each_reader_gets_one_copy(
    smtp_client: SmtpClient,
    newsletter_with: Callable[..., Newsletter],
    figure: Callable[[str], None],
) -> None:
    timeout = 0.5

    def wedged_at_rcpt(recipient: str, attempt: int) -> str | None:
        # No answer before DATA: nothing can have been delivered, so it goes again at once.
        return STALL if attempt == 1 and picked(recipient, 0.05, "rcpt") else None

    def wedged_at_data(recipient: str, attempt: int) -> str | None:
        # No answer to the message itself: the client must give up and retry it later.
        return STALL if attempt == 1 and picked(recipient, 0.05, "data") else None

    handler = FaultyHandler(rcpt_fault=wedged_at_rcpt, data_fault=wedged_at_data)
    with smtp_client.relay(handler) as server:
        app = newsletter_with(60, smtp_port=server.port, smtp_timeout=timeout)
        report = drain(app, DAY)

    expected = planned(app)
    at_data = {r for r in expected if picked(r, 0.05, "data")}
    figure(
        f"{handler.stalls} replies never sent ({len(at_data)} to DATA), timeout {timeout}s: "
        f"delivered {len(handler.accepted)}/{len(expected)}, retries {report.retrying}, "
        f"duplicates {len(handler.duplicates())}"
    )
    assert handler.stalls > len(at_data) > 0
    assert report.stopped is None
    assert set(handler.accepted) == expected and not handler.duplicates()
    # Every stall at DATA costs an attempt; one at RCPT only when it hit a fresh connection
    # (a kept one is replaced at once, as nothing was transmitted).
    assert len(at_data) <= report.retrying <= handler.stalls


def test_a_dead_relay_stops_the_run_and_every_digest_stays_queued(
    smtp_client: SmtpClient,
    newsletter_with: Callable[..., Newsletter],
    figure: Callable[[str], None],
) -> None:
    app = newsletter_with(30, smtp_port=free_port())
    report = drain(app, DAY)

    expected = planned(app)
    summary = app.store.reports.day_summary(DAY)
    figure(f"nobody listening: stopped ('{report.stopped}'), queued {len(expected)}")
    assert report.stopped is not None and "cannot connect" in report.stopped
    assert report.sent == 0 and not report.failed and report.retrying == 0
    assert summary.by_status[DeliveryStatus.QUEUED] == len(expected) > 0


def test_451_on_a_fifth_of_rcpts_delivers_everyone_once_and_suppresses_nobody(
    smtp_client: SmtpClient,
    newsletter_with: Callable[..., Newsletter],
    figure: Callable[[str], None],
) -> None:
    dice = random.Random(451)

    def greylist(_recipient: str, _attempt: int) -> str | None:
        return "451 4.7.1 Greylisted, please try again later" if dice.random() < 0.2 else None

    handler = FaultyHandler(rcpt_fault=greylist)
    with smtp_client.relay(handler) as server:
        app = newsletter_with(SUBSCRIBERS, smtp_port=server.port)
        report = drain(app, DAY)

    expected = planned(app)
    rcpts = sum(handler.rcpt_attempts.values())
    figure(
        f"451 on {handler.refusals['451']}/{rcpts} RCPTs "
        f"({handler.refusals['451'] / rcpts:.0%}): delivered {len(handler.accepted)}/"
        f"{len(expected)}, suppressed {len(app.store.suppressions.all())}, "
        f"duplicates {len(handler.duplicates())}"
    )
    assert handler.refusals["451"] > 0
    assert set(handler.accepted) == expected
    assert not handler.duplicates()
    assert not app.store.suppressions.all() and report.suppressed == 0
    assert report.retrying == handler.refusals["451"]
    assert app.store.reports.day_summary(DAY).by_status[DeliveryStatus.SENT] == len(expected)


def test_550_user_unknown_suppresses_only_that_address_and_it_is_not_tried_next_day(
    smtp_client: SmtpClient,
    newsletter_with: Callable[..., Newsletter],
    figure: Callable[[str], None],
) -> None:
    def unknown_users(recipient: str, _attempt: int) -> str | None:
        if picked(recipient, 0.1, "gone"):
            return f"550 5.1.1 <{recipient}>: Recipient address rejected: User unknown"
        return None

    handler = FaultyHandler(rcpt_fault=unknown_users)
    with smtp_client.relay(handler) as server:
        # One connection, so every rejection is followed by other mail on the same session.
        app = newsletter_with(
            SUBSCRIBERS, days=(DAY, NEXT_DAY), smtp_port=server.port, smtp_connections=1
        )
        report = drain(app, DAY)
        expected = planned(app)
        gone = {r for r in expected if picked(r, 0.1, "gone")}
        first_day = dict(handler.accepted)
        rcpts_before = dict(handler.rcpt_attempts)
        connections = len(handler.sessions)

        next_report = drain(app, NEXT_DAY)

    states = app.store.reports.delivery_states(DAY)
    suppressed = {row.email for row in app.store.suppressions.all()}
    tried_again = {r for r in gone if handler.rcpt_attempts[r] > rcpts_before[r]}
    figure(
        f"550 5.1.1 for {len(gone)}/{len(expected)}: failed {report.failed['recipient_rejected']}, "
        f"suppressed {len(suppressed)}, others delivered {len(first_day)} on "
        f"{connections} connection(s); next day: RCPTs to them {len(tried_again)}, "
        f"delivered {next_report.sent}"
    )
    assert gone
    assert set(first_day) == expected - gone
    assert all(n == 1 for n in first_day.values())
    assert connections == 1  # the 550s did not cost the connection
    assert suppressed == gone and report.suppressed == len(gone)
    for email in gone:
        assert states[email] == (DeliveryStatus.FAILED, FailureReason.REJECTED)
        record = app.store.subscribers.by_email(email)
        assert record is not None and record.status == SubscriberStatus.BOUNCED
    assert all(str(row[3]).startswith("550 5.1.1") for row in app.store.reports.undelivered(DAY))

    # The next day: nobody suppressed is mailed, or even named to the relay; everyone else is.
    assert not tried_again
    next_states = app.store.reports.delivery_states(NEXT_DAY)
    for email in gone:
        # Bounced subscribers are no longer active, so the plan leaves them out; if a planner
        # does write a row for them, it must be a skip for being suppressed.
        skipped = (DeliveryStatus.SKIPPED, SkipReason.SUPPRESSED)
        assert next_states.get(email, skipped) == skipped
    assert next_report.sent == len(planned(app, NEXT_DAY))
    assert not planned(app, NEXT_DAY) & gone

    # The operator's view of the day, through the real command line.
    env = cli_env(app.settings)
    status = subprocess.run(
        [newsletter_bin(), "status", "--date", DAY.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"sent: {len(expected) - len(gone)}" in status
    assert f"failed (recipient_rejected): {len(gone)}" in status
    failures = subprocess.run(
        [newsletter_bin(), "failures", "--date", DAY.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(failures) == len(gone)
    assert {line.split("\t")[0] for line in failures} == gone
    assert all("recipient_rejected" in line and "5.1.1" in line for line in failures)


def test_535_at_login_pauses_the_run_and_the_next_run_sends_only_the_rest(
    smtp_client: SmtpClient,
    newsletter_with: Callable[..., Newsletter],
    figure: Callable[[str], None],
) -> None:
    auth = Authenticator(accept=True)
    revoke_at = SUBSCRIBERS // 3

    def revoke(total: int) -> None:
        if total == revoke_at:
            auth.accept = False  # the password was rotated under us

    handler = FaultyHandler(on_accept=revoke)
    with smtp_client.relay(handler, auth) as server:
        app = newsletter_with(
            SUBSCRIBERS,
            smtp_port=server.port,
            smtp_user="digest",
            smtp_password="secret",
            # Reconnect (and so log in again) often, so the rotation bites mid-run.
            smtp_messages_per_connection=10,
        )
        paused = drain(app, DAY)
        after_pause = dict(handler.accepted)
        summary = app.store.reports.day_summary(DAY)

        auth.accept = True
        resumed = drain(app)

    expected = planned(app)
    figure(
        f"535 after {len(after_pause)}/{len(expected)}: paused ('{paused.stopped}'), "
        f"suppressed {len(app.store.suppressions.all())}, failed {sum(paused.failed.values())}; "
        f"resumed run sent {resumed.sent}, duplicates {len(handler.duplicates())}"
    )
    assert paused.stopped is not None and "535" in paused.stopped
    assert "refuses us" in paused.stopped
    assert 0 < len(after_pause) < len(expected)
    assert not app.store.suppressions.all() and not paused.failed
    # Nothing is left claimed or charged an attempt: the rest is simply queued again.
    assert summary.by_status[DeliveryStatus.QUEUED] == len(expected) - len(after_pause)
    assert resumed.stopped is None and resumed.sent == len(expected) - len(after_pause)
    assert set(handler.accepted) == expected and not handler.duplicates()


def test_554_5_7_1_on_every_rcpt_pauses_and_the_next_run_sends_only_the_rest(
    smtp_client: SmtpClient,
    newsletter_with: Callable[..., Newsletter],
    figure: Callable[[str], None],
) -> None:
    blocked_from = SUBSCRIBERS // 3
    relay = {"blocked": False}

    def blocklisted(_recipient: str, _attempt: int) -> str | None:
        if relay["blocked"]:
            return "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org"
        return None

    def block(total: int) -> None:
        if total == blocked_from:
            relay["blocked"] = True

    handler = FaultyHandler(rcpt_fault=blocklisted, on_accept=block)
    with smtp_client.relay(handler) as server:
        app = newsletter_with(SUBSCRIBERS, smtp_port=server.port)
        paused = drain(app, DAY)
        after_pause = dict(handler.accepted)
        refused = handler.refusals["554"]

        relay["blocked"] = False
        resumed = drain(app)

    expected = planned(app)
    figure(
        f"554 5.7.1 on every RCPT after {len(after_pause)}/{len(expected)}: paused after "
        f"{refused} refusals, suppressed {len(app.store.suppressions.all())}; resumed run sent "
        f"{resumed.sent}, each reader exactly once: {not handler.duplicates()}"
    )
    assert paused.stopped is not None and "5.7.1" in paused.stopped
    # Paused quickly, in each sending process: the refusals in a row needed to judge it, plus
    # at most one per connection on the wire when the relay started refusing (an acceptance
    # still arriving from before resets "in a row"), plus those on the wire when it paused.
    connections = app.settings.smtp_connections
    per_process = DeliveryPolicy().sender_error_threshold + 2 * connections
    assert refused <= per_process * app.settings.send_processes
    assert not app.store.suppressions.all() and not paused.failed and paused.retrying == 0
    assert resumed.stopped is None
    assert resumed.sent == len(expected) - len(after_pause)
    assert set(handler.accepted) == expected and not handler.duplicates()


def test_one_recipients_policy_refusal_is_retried_not_a_pause_and_retries_are_bounded(
    smtp_client: SmtpClient,
    newsletter_with: Callable[..., Newsletter],
    figure: Callable[[str], None],
) -> None:
    readers = 40
    always_451 = {
        r for r in (f"reader{i:05d}@example.org" for i in range(readers)) if picked(r, 0.1, "451")
    }
    always_571 = {f"reader{readers - 1:05d}@example.org"} - always_451

    def stubborn(recipient: str, _attempt: int) -> str | None:
        if recipient in always_451:
            return "451 4.3.0 Mailbox temporarily unavailable"
        if recipient in always_571:
            return "550 5.7.1 Recipient address rejected: Access denied"
        return None

    handler = FaultyHandler(rcpt_fault=stubborn)
    base, attempts = 0.1, 4
    with smtp_client.relay(handler) as server:
        app = newsletter_with(
            readers, smtp_port=server.port, max_attempts=attempts, retry_base_seconds=base
        )
        report = drain(app, DAY)

    expected = planned(app)
    stuck = always_451 | always_571
    states = app.store.reports.delivery_states(DAY)
    gaps = [
        later - earlier
        for r in always_451
        for earlier, later in itertools.pairwise(handler.rcpt_times[r])
    ]
    figure(
        f"{len(always_451)} always-451 + {len(always_571)} 5.7.1 of {len(expected)}: "
        f"{attempts} attempts each, then retries_exhausted {report.failed['retries_exhausted']}; "
        f"paused: {report.stopped is not None}, suppressed {len(app.store.suppressions.all())}, "
        f"shortest gap {min(gaps):.2f}s (base {base}s)"
    )
    assert report.stopped is None
    assert set(handler.accepted) == expected - stuck and not handler.duplicates()
    for r in stuck:
        assert handler.rcpt_attempts[r] == attempts
        assert states[r] == (DeliveryStatus.FAILED, FailureReason.RETRIES_EXHAUSTED)
    assert not app.store.suppressions.all()
    # Backoff: the n-th wait is at least half of base * 2^(n-1) (jitter is 0.5x to 1.5x).
    for r in always_451:
        times = handler.rcpt_times[r]
        for n, (earlier, later) in enumerate(itertools.pairwise(times), start=1):
            assert later - earlier >= 0.5 * base * 2 ** (n - 1) * 0.95


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    policy = DeliveryPolicy(retry_base_seconds=2.0, retry_max_seconds=60.0)
    for attempts in range(1, 12):
        nominal = min(60.0, 2.0 * 2 ** (attempts - 1))
        samples = [policy.backoff(attempts) for _ in range(200)]
        assert all(0.5 * nominal <= s <= 1.5 * nominal for s in samples)
        assert len({round(s, 6) for s in samples}) > 150  # jittered, not one fixed delay


def test_a_retry_left_for_a_later_run_is_sent_then_exactly_once(
    smtp_client: SmtpClient,
    newsletter_with: Callable[..., Newsletter],
    figure: Callable[[str], None],
) -> None:
    def once(recipient: str, attempt: int) -> str | None:
        return (
            "452 4.2.2 Over quota, try later" if attempt == 1 and picked(recipient, 0.2) else None
        )

    handler = FaultyHandler(rcpt_fault=once)
    with smtp_client.relay(handler) as server:
        # This run does not wait for retries (none is due before it ends, with a 2 s base):
        # it ends and leaves them in the database.
        app = newsletter_with(
            60, smtp_port=server.port, retry_base_seconds=2.0, retry_wait_seconds=0
        )
        first = drain(app, DAY)
        left = app.store.reports.day_summary(DAY).by_status[DeliveryStatus.RETRY]
        # A later run, willing to wait for what falls due soon, picks them up.
        app.settings.retry_wait_seconds = 10
        second = drain(app)

    expected = planned(app)
    figure(
        f"first run sent {first.sent}/{len(expected)} and left {left} retries; "
        f"the later run sent {second.sent}; duplicates {len(handler.duplicates())}"
    )
    assert left == first.retrying == handler.refusals["452"] > 0
    assert first.sent == len(expected) - left
    assert second.sent == left
    assert set(handler.accepted) == expected and not handler.duplicates()


def test_the_next_days_plan_supersedes_an_undelivered_digest(
    smtp_client: SmtpClient,
    newsletter_with: Callable[..., Newsletter],
    figure: Callable[[str], None],
) -> None:
    relay = {"down": True}

    def busy(_recipient: str, _attempt: int) -> str | None:
        return "421 4.3.2 System not accepting network messages" if relay["down"] else None

    handler = FaultyHandler(rcpt_fault=busy)
    with smtp_client.relay(handler) as server:
        app = newsletter_with(60, days=(DAY, NEXT_DAY), smtp_port=server.port, retry_wait_seconds=0)
        first = drain(app, DAY)
        day_one_planned = planned(app, DAY)
        retrying = app.store.reports.day_summary(DAY).by_status[DeliveryStatus.RETRY]
        relay["down"] = False
        plan = app.plan(NEXT_DAY)
        second = drain(app)

    day_one = app.store.reports.day_summary(DAY)
    expected = planned(app, NEXT_DAY)
    figure(
        f"day 1: {retrying} left retrying after {first.sent} sent; day 2's plan superseded "
        f"{plan.superseded}; day 2 sent {second.sent}/{len(expected)}, "
        f"duplicates {len(handler.duplicates())}"
    )
    assert first.sent == 0 and retrying == len(day_one_planned) > 0
    assert plan.superseded == retrying
    assert day_one.skipped_by_reason[SkipReason.SUPERSEDED] == retrying
    assert day_one.by_status[DeliveryStatus.RETRY] == 0
    assert second.sent == len(expected)
    assert set(handler.accepted) == expected and not handler.duplicates()
    # The superseded digest's papers went back into the pool: the next digest may carry them.
    assert day_one.papers_sent == 0

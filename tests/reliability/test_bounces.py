"""Inbound bounces: RFC 3464 DSNs built with the email package, written to a real mbox by the
standard library, applied through the `newsletter bounces` command."""

from __future__ import annotations

import mailbox
import subprocess
from collections.abc import Callable
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

from newsletter.bounces import apply_bounces, parse_dsn, split_mailbox
from newsletter.root import Newsletter
from newsletter.states import DeliveryStatus, SubscriberStatus
from tests.reliability.conftest import DAY, cli_env, newsletter_bin, reader


def dsn(*blocks: tuple[str, str, str], number: int = 0) -> MIMEMultipart:
    """A DSN as a relay writes it: a human part, the delivery-status fields per recipient
    (address, Action, Status) and the headers of the digest that bounced."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@mx.example.org"
    report["To"] = "digest@papers.example.org"
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Message-ID"] = f"<dsn-{number}@mx.example.org>"
    report.attach(MIMEText("This is the mail system at host mx.example.org.\n"))
    status = MIMEBase("message", "delivery-status")
    per_message = Message()
    per_message["Reporting-MTA"] = "dns; mx.example.org"
    fields: list[Message | str] = [per_message]
    for address, action, code in blocks:
        block = Message()
        block["Final-Recipient"] = f"rfc822; {address}"
        block["Action"] = action
        block["Status"] = code
        block["Diagnostic-Code"] = f"smtp; {code[0]}50 {code} mailbox problem"
        fields.append(block)
    status.set_payload(fields)
    report.attach(status)
    report.attach(
        MIMEText(
            f"Message-ID: <20260211.{number}@papers.example.org>\nSubject: Trending papers\n",
            "rfc822-headers",
        )
    )
    return report


def not_a_dsn(subject: str) -> Message:
    reply = MIMEText("I am out of the office until Monday.\n")
    reply["From"] = "reader@example.org"
    reply["Subject"] = subject
    return reply


def test_dsns_from_an_mbox_suppress_hard_bounces_only_and_name_unreadable_messages(
    newsletter_with: Callable[..., Newsletter], figure: Callable[[str], None], tmp_path: Path
) -> None:
    app = newsletter_with(40)
    hard = {reader(i) for i in range(0, 40, 8)}  # 5.1.1 and 5.2.1
    delayed = {reader(i) for i in range(1, 40, 8)}  # Action: delayed, 4.4.1
    soft = {reader(i) for i in range(2, 40, 8)}  # failed, but 4.x.x or 5.7.x or 5.2.2
    soft_codes = ["4.4.7", "5.7.1", "5.2.2"]

    box = mailbox.mbox(tmp_path / "bounces.mbox")
    messages: list[Message] = []
    for n, address in enumerate(sorted(hard)):
        messages.append(dsn((address, "failed", "5.1.1" if n % 2 else "5.2.1"), number=n))
    for n, address in enumerate(sorted(delayed)):
        messages.append(dsn((address, "delayed", "4.4.1"), number=100 + n))
    for n, address in enumerate(sorted(soft)):
        messages.append(dsn((address, "failed", soft_codes[n % 3]), number=200 + n))
    # One DSN about two recipients, one gone for good and one only delayed.
    extra_hard, extra_delayed = reader(3), reader(4)
    messages.append(dsn((extra_hard, "failed", "5.1.1"), (extra_delayed, "delayed", "4.4.1")))
    hard.add(extra_hard)
    garbage = [not_a_dsn("Out of office"), dsn(("not an address", "failed", "5.1.1"))]
    broken = MIMEMultipart("report", report_type="delivery-status")
    broken["Subject"] = "report without a status part"
    broken.attach(MIMEText("nothing here"))
    garbage.append(broken)
    for message in [*messages[:3], *garbage, *messages[3:]]:  # garbage in the middle
        box.add(message)
    box.flush()

    result = subprocess.run(
        [newsletter_bin(), "bounces", str(tmp_path / "bounces.mbox")],
        env=cli_env(app.settings),
        capture_output=True,
        text=True,
    )
    warnings = result.stderr.strip().splitlines()
    suppressed = {row.email for row in app.store.suppressions.all()}
    figure(
        f"{len(messages) + len(garbage)} messages: {len(hard)} hard bounces suppressed, "
        f"{len(delayed) + 1} delayed and {len(soft)} soft ignored, {len(garbage)} unreadable "
        f"named on stderr; exit {result.returncode}"
    )
    assert result.returncode == 0, result.stderr
    assert suppressed == hard
    for address in hard:
        record = app.store.subscribers.by_email(address)
        assert record is not None and record.status == SubscriberStatus.BOUNCED
        assert record.bounce_count == 1
    for address in delayed | soft | {extra_delayed}:
        record = app.store.subscribers.by_email(address)
        assert record is not None and record.status == SubscriberStatus.ACTIVE
    assert f"{len(hard)} hard bounces recorded, {len(hard)} addresses suppressed" in result.stdout
    assert len(warnings) == len(garbage)
    assert "message 4 (Subject Out of office): not a delivery status notification" in warnings[0]
    assert "message 5 (Message-ID <dsn-0@mx.example.org>)" in warnings[1]
    assert "not a usable address" in warnings[1]
    assert "message 6 (Subject report without a status part)" in warnings[2]

    # The next day's plan leaves the suppressed out; nobody else is affected.
    app.plan(DAY)
    states = app.store.reports.delivery_states(DAY)
    assert not hard & {e for e, (s, _) in states.items() if s == DeliveryStatus.QUEUED}
    assert len(states) - len(hard & set(states)) == 40 - len(hard)

    # The detail kept for the operator names the status and the digest that bounced.
    detail = {row.email: row.detail for row in app.store.suppressions.all()}[extra_hard]
    assert detail is not None and "5.1.1" in detail and "@papers.example.org>" in detail


def test_one_dsn_on_stdin_and_input_that_is_no_dsn_at_all(
    newsletter_with: Callable[..., Newsletter], tmp_path: Path
) -> None:
    app = newsletter_with(3)
    env = cli_env(app.settings)
    piped = subprocess.run(
        [newsletter_bin(), "bounces", "--stdin"],
        input=dsn((reader(1), "failed", "5.1.1")).as_bytes(),
        env=env,
        capture_output=True,
    )
    assert piped.returncode == 0, piped.stderr
    assert {row.email for row in app.store.suppressions.all()} == {reader(1)}

    junk = tmp_path / "junk.eml"
    junk.write_bytes(not_a_dsn("Re: your digest").as_bytes())
    refused = subprocess.run(
        [newsletter_bin(), "bounces", str(junk)], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 1
    assert "no message was a readable delivery status notification" in refused.stderr
    assert "Re: your digest" in refused.stderr


def test_parse_dsn_reads_each_recipient_block_and_mbox_splitting_keeps_bodies() -> None:
    message = dsn((reader(7), "failed", "5.1.1"), (reader(8), "delayed", "4.4.1"), number=9)
    raw = message.as_bytes()
    assert list(split_mailbox(raw)) == [raw]
    import email
    import email.policy

    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    first, second = parse_dsn(parsed)
    assert (first.recipient, first.action, first.status, first.kind) == (
        reader(7),
        "failed",
        "5.1.1",
        "hard",
    )
    assert first.original_message_id == "<20260211.9@papers.example.org>"
    assert second.kind == "delayed"
    # A body line starting with "From " is quoted in an mbox and comes back unquoted.
    body = b"Subject: x\n\nFrom here on\n"
    box = b"From a@b Thu Jan  1 00:00:00 2026\n" + body.replace(b"\nFrom ", b"\n>From ")
    assert list(split_mailbox(box + b"\n" + box)) == [body, body]


def test_apply_bounces_counts_a_limit_above_one(
    newsletter_with: Callable[..., Newsletter],
) -> None:
    app = newsletter_with(2)
    bounce = dsn((reader(0), "failed", "5.1.1")).as_bytes()
    first = apply_bounces(app.store, [bounce], hard_bounce_limit=2)
    assert first.hard == [reader(0)] and first.suppressed == 0
    assert not app.store.suppressions.all()
    second = apply_bounces(app.store, [bounce], hard_bounce_limit=2)
    assert second.suppressed == 1
    assert [row.email for row in app.store.suppressions.all()] == [reader(0)]

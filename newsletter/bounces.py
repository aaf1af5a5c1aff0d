"""Inbound bounces: reading RFC 3464 delivery status notifications and applying them.

A relay that accepted a digest may still fail to deliver it and mail a DSN back to the envelope
sender. Those reports arrive in a mailbox (an mbox file, or one message piped in by the MTA);
`apply_bounces` turns each hard failure into a recorded bounce, which suppresses the address
once it reaches the configured count. Delays, soft failures and anything that is not a DSN are
counted and reported, never applied, so an auto-reply can never unsubscribe anyone.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from typing import Literal

from newsletter.addresses import InvalidAddress, normalise_email
from newsletter.errors import NewsletterError
from newsletter.send.errors import enhanced_status, is_hard_bounce
from newsletter.store import Store
from newsletter.text import one_line

Kind = Literal["hard", "soft", "delayed", "other"]

# mbox separators: "From " at the start of a line, at the start of the file or after a blank line.
_MBOX_SEPARATOR = re.compile(rb"(?:\A|(?<=\n)\r?\n)From [^\r\n]*\r?\n")
_QUOTED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)


_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")


class BounceFormatError(NewsletterError):
    """A message is not a delivery status notification we can read."""


@dataclass(frozen=True)
class DsnRecipient:
    """One per-recipient block of a DSN."""

    recipient: str
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str  # the enhanced status code, "5.1.1"
    diagnostic: str | None = None
    original_message_id: str | None = None

    @property
    def kind(self) -> Kind:
        if self.action == "delayed":
            return "delayed"
        if self.action != "failed":
            return "other"  # delivered, relayed, expanded: good news
        if is_hard_bounce(self.status):
            return "hard"
        return "soft"  # 4.x.x, mailbox full, policy: may clear up; never suppresses

    def detail(self) -> str:
        text = f"DSN {self.action} {self.status}"
        if self.diagnostic:
            text += f": {self.diagnostic}"
        if self.original_message_id:
            text += f" (message {self.original_message_id})"
        return one_line(text, 1000)


@dataclass
class BounceReport:
    messages: int = 0  # messages read
    reports: int = 0  # of those, readable DSNs
    hard: list[str] = field(default_factory=list)  # addresses whose bounce was recorded
    suppressed: int = 0  # addresses that reached the bounce limit
    not_applied: Counter[str] = field(default_factory=Counter)  # kind -> recipient blocks
    problems: list[str] = field(default_factory=list)  # one line per unreadable message


def split_mailbox(data: bytes) -> Iterator[bytes]:
    """The messages of an mbox file (mboxo or mboxrd), or `data` itself if it is one message."""
    if not data.startswith(b"From "):
        if data.strip():
            yield data
        return
    for chunk in _MBOX_SEPARATOR.split(data):
        if chunk.strip():
            yield _QUOTED_FROM.sub(rb"\1", chunk)


def _label(number: int, message: Message | None, source: str) -> str:
    where = f"{source} message {number}"
    if message is None:
        return where
    for header in ("Message-ID", "Subject"):
        value = message.get(header)
        if value:
            return f"{where} ({header} {one_line(str(value), 120)})"
    return where


def parse_dsn(message: Message) -> list[DsnRecipient]:
    """The per-recipient reports of a DSN; BounceFormatError if it is not one."""
    content_type = message.get_content_type()
    report_type = str(message.get_param("report-type", "", header="content-type") or "")
    if content_type != "multipart/report" or report_type.lower() != "delivery-status":
        raise BounceFormatError(
            f"not a delivery status notification (Content-Type {content_type}"
            + (f"; report-type={report_type}" if report_type else "")
            + ")"
        )
    status_part = next(
        (
            part
            for part in message.walk()
            if part.get_content_type()
            in ("message/delivery-status", "message/global-delivery-status")
        ),
        None,
    )
    if status_part is None:
        raise BounceFormatError("multipart/report without a message/delivery-status part")
    blocks = status_part.get_payload()
    if not isinstance(blocks, list) or len(blocks) < 2:
        raise BounceFormatError("the delivery-status part has no per-recipient fields")
    original_id = _original_message_id(message)
    recipients = []
    for block in blocks[1:]:
        if isinstance(block, Message) and (found := _recipient(block, original_id)):
            recipients.append(found)
    if not recipients:
        raise BounceFormatError("the delivery-status part names no recipient")
    return recipients


def _recipient(block: Message, original_id: str | None) -> DsnRecipient | None:
    if not block.keys():
        return None  # a trailing blank block
    raw = block.get("Final-Recipient") or block.get("Original-Recipient")
    action = str(block.get("Action", "")).strip().lower()
    status_field = str(block.get("Status", ""))
    if not raw or not action or not status_field:
        raise BounceFormatError(
            "a per-recipient block lacks Final-Recipient, Action or Status: "
            + one_line(", ".join(f"{k}: {v}" for k, v in block.items()), 200)
        )
    # "rfc822; reader@example.org" (the address type is optional in practice).
    address = str(raw).split(";", 1)[-1].strip().strip("<>")
    try:
        address = normalise_email(address)
    except InvalidAddress as exc:
        raise BounceFormatError(f"Final-Recipient is not a usable address: {exc}") from None
    status = enhanced_status(status_field)
    if status is None:
        raise BounceFormatError(f"Status {one_line(status_field, 40)!r} is not an x.y.z code")
    diagnostic = block.get("Diagnostic-Code")
    if diagnostic:
        diagnostic = one_line(str(diagnostic).split(";", 1)[-1], 300)
    return DsnRecipient(address, action, status, diagnostic or None, original_id)


def _original_message_id(message: Message) -> str | None:
    """The Message-ID of the digest that bounced, from the returned headers, if included."""
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type == "text/rfc822-headers":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                headers = email.message_from_bytes(payload, policy=email.policy.default)
                if headers.get("Message-ID"):
                    return one_line(str(headers["Message-ID"]), 200)
        elif content_type == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                found = inner[0].get("Message-ID")
                if found:
                    return one_line(str(found), 200)
    return None


def apply_bounces(
    store: Store, messages: Iterable[bytes], hard_bounce_limit: int, source: str = "input"
) -> BounceReport:
    """Record every hard bounce in `messages`; an unreadable message is reported by its
    position and Message-ID or Subject, and the others are still applied."""
    report = BounceReport()
    for number, raw in enumerate(messages, start=1):
        report.messages += 1
        message: EmailMessage | None = None
        try:
            parsed = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            message = parsed
            recipients = parse_dsn(message)
        except BounceFormatError as exc:
            report.problems.append(f"{_label(number, message, source)}: {exc}")
            continue
        except Exception as exc:  # the email package can fail on truly broken input
            report.problems.append(
                f"{_label(number, message, source)}: unreadable ({type(exc).__name__}: {exc})"
            )
            continue
        report.reports += 1
        for recipient in recipients:
            if recipient.kind != "hard":
                report.not_applied[recipient.kind] += 1
                continue
            report.hard.append(recipient.recipient)
            if store.suppressions.record_bounce(
                recipient.recipient, recipient.detail(), hard_bounce_limit
            ):
                report.suppressed += 1
    return report

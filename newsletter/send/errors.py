"""How a send can fail. Third-party SMTP errors are translated into these at the boundary.

The delivery loop acts on the type: transient errors are retried with backoff, a recipient's
permanent rejection suppresses that address, and a sender-wide rejection pauses the run instead
of blaming every recipient.
"""

from __future__ import annotations

import re
from typing import Literal

# The SMTP command a reply answered: it decides whether a rejection is about us or the recipient.
Stage = Literal["connect", "auth", "mail", "rcpt", "data"]

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


class SendError(Exception):
    def __init__(self, message: str, code: int | None = None, stage: Stage | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.stage = stage


class TransientError(SendError):
    """4xx replies, timeouts and dropped connections: try again later."""


class RecipientRejected(SendError):
    """A permanent rejection of this one address (5.1.x, 5.2.1, 550 user unknown)."""


class SenderRejected(SendError):
    """A permanent rejection of us, not the recipient (auth, 5.7.x policy, MAIL FROM refused).

    Carrying on would only fail, or wrongly suppress, every remaining subscriber.
    """

    @property
    def certain(self) -> bool:
        """Whether the refusal is about us beyond doubt.

        Refusals before any recipient is named (greeting, AUTH, MAIL FROM) can only be about the
        sender. A 5.7.x to RCPT or a 5xx to DATA may be one recipient's policy, and only says "us"
        when every recipient gets it, which the delivery loop judges by counting.
        """
        return self.stage in ("connect", "auth", "mail") or self.code in (530, 535)


class ServerUnreachable(TransientError):
    """No SMTP connection could be opened at all."""


def enhanced_status(text: str) -> str | None:
    """The RFC 3463 enhanced status code ("5.1.1") in a reply or DSN field, if there is one."""
    found = _ENHANCED.search(text)
    return found.group(0) if found else None


def is_hard_bounce(status: str) -> bool:
    """Whether an enhanced status says the mailbox itself is gone for good (5.1.x, 5.2.1).

    Only these suppress an address: 5.2.2 (mailbox full), 5.7.x (policy, reputation) and the
    rest may clear up or are about the sender, and suppressing on them would lose subscribers.
    """
    parts = status.split(".")
    if len(parts) != 3 or parts[0] != "5":
        return False
    return parts[1] == "1" or (parts[1] == "2" and parts[2] == "1")


def classify(code: int, message: str, *, stage: Stage) -> SendError:
    """Map an SMTP reply to the error type the delivery loop acts on.

    `stage` is the command that was refused: "rcpt" rejections may be about the recipient,
    "connect"/"auth"/"mail" ones are about us. We send one recipient per transaction, so a
    5.1.x to DATA (relays that check mailboxes late) is still about that recipient.
    """
    text = f"{code} {message}".strip()
    if 400 <= code < 500:
        return TransientError(text, code, stage)
    status = enhanced_status(message)
    if stage not in ("rcpt", "data"):
        return SenderRejected(f"{stage.upper()} refused: {text}", code, stage)
    if status:
        if is_hard_bounce(status):
            return RecipientRejected(text, code, stage)
        subject = status.split(".")[1]
        if subject == "7":
            return SenderRejected(f"{stage.upper()} refused by policy: {text}", code, stage)
        if subject == "2":  # mailbox full and friends may clear up
            return TransientError(text, code, stage)
    if stage == "rcpt" and code in (550, 551, 553):
        return RecipientRejected(text, code, stage)
    if code == 552:
        return TransientError(text, code, stage)
    return SenderRejected(f"{stage.upper()} refused: {text}", code, stage)


class NotTransmitted(Exception):
    """The connection failed before DATA: the relay cannot have the message, so sending it again
    at once, on a fresh connection, cannot duplicate it."""

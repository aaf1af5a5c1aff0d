"""Confirmation mail, and the sign-ups that decide it, run in the background: a sign-up answers
once what was typed is checked, before the database is asked anything, so the answer takes the
same time whether the address is new, pending, subscribed, suppressed or recently mailed (no
address enumeration by timing)."""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from newsletter.config import Settings
from newsletter.send.message import Envelope
from newsletter.send.senders import SmtpConfig, SmtpSender
from newsletter.subscriptions import MailKind, SignUpMail

log = logging.getLogger(__name__)


def _message(
    settings: Settings,
    to_address: str,
    subject: str,
    lead: str,
    action: str,
    url: str,
    footnote: str,
) -> Envelope:
    """A short transactional mail. Nothing the visitor typed appears in it except the address,
    which is validated and only used in To: a sign-up form cannot be used to mail text."""
    message = EmailMessage()
    message["From"] = settings.from_address
    message["To"] = to_address
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=settings.from_domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(f"{lead}\n\n{action}:\n{url}\n\n{footnote}\n")
    message.add_alternative(
        '<!doctype html><html><body style="font-family:-apple-system,Segoe UI,Roboto,Arial,'
        'sans-serif;color:#1f2937;max-width:560px;margin:24px auto;padding:0 16px">'
        f'<p style="font-size:16px">{html.escape(lead)}</p>'
        f'<p><a href="{html.escape(url)}" style="display:inline-block;background:#1d4ed8;'
        'color:#fff;padding:12px 20px;border-radius:8px;text-decoration:none;font-weight:600">'
        f"{html.escape(action)}</a></p>"
        f'<p style="font-size:13px;color:#6b7280">{html.escape(footnote)}</p></body></html>',
        subtype="html",
    )
    return Envelope(settings.envelope_from, to_address, message.as_bytes())


def confirmation_message(settings: Settings, to_address: str, confirm_url: str) -> Envelope:
    name = settings.newsletter_name
    return _message(
        settings,
        to_address,
        f"Confirm your subscription to {name}",
        f"Someone, hopefully you, asked to receive {name}: a daily digest of trending research "
        "papers.",
        "Confirm my subscription",
        confirm_url,
        "If it was not you, ignore this mail: nothing will be sent without a confirmation.",
    )


def preferences_message(settings: Settings, to_address: str, preferences_url: str) -> Envelope:
    name = settings.newsletter_name
    return _message(
        settings,
        to_address,
        f"Your {name} subscription",
        f"Someone, hopefully you, tried to subscribe this address to {name}. It is already "
        "subscribed.",
        "Manage my preferences",
        preferences_url,
        "If it was not you, ignore this mail: nothing has changed.",
    )


def sign_up_message(settings: Settings, mail: SignUpMail) -> Envelope:
    """The mail the Subscriptions service decided a sign-up sends."""
    if mail.kind is MailKind.CONFIRMATION:
        return confirmation_message(settings, mail.to, mail.url)
    return preferences_message(settings, mail.to, mail.url)


class ConfirmationMailer:
    """Runs sign-ups and sends their mails on background tasks, one short SMTP session each."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tasks: set[asyncio.Task[Any]] = set()

    def run_later(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._logged(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def send_later(self, envelope: Envelope, on_failure: Callable[[], None] | None = None) -> None:
        self.run_later(self.send(envelope, on_failure))

    async def _logged(self, work: Coroutine[Any, Any, Any]) -> None:
        try:
            await work
        except Exception as exc:  # a background task must log, never die silently
            log.error("background sign-up failed: %s", exc)

    async def send(self, envelope: Envelope, on_failure: Callable[[], None] | None = None) -> bool:
        config = SmtpConfig.from_settings(self.settings)
        config.connections = 1
        sender = SmtpSender(config)
        try:
            await sender.send(envelope)
            return True
        except Exception as exc:  # a background task must log, never die silently
            log.error("confirmation mail to %s failed: %s", envelope.recipient, exc)
            if on_failure is not None:
                on_failure()
            return False
        finally:
            await sender.close()

    @property
    def pending(self) -> int:
        """Sign-ups and mails still running in the background."""
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait for mails still being sent (on shutdown, and in tests)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

"""Senders: the narrow interface the delivery loop talks to, over SMTP or in memory."""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import aiosmtplib

from newsletter.send.errors import (
    RecipientRejected,
    SenderRejected,
    SendError,
    ServerUnreachable,
    TransientError,
)
from newsletter.send.message import Envelope

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


class Sender(Protocol):
    async def send(self, envelope: Envelope) -> None:
        """Hand one message to the relay, or raise a SendError subclass."""

    async def close(self) -> None: ...


def classify(code: int, message: str, *, stage: str) -> SendError:
    """Map an SMTP reply to the error type the delivery loop acts on.

    `stage` is the command that was refused: "rcpt" rejections may be about the recipient,
    "mail"/"data"/"auth" ones are about us.
    """
    text = f"{code} {message}".strip()
    if 400 <= code < 500:
        return TransientError(text, code)
    enhanced = _ENHANCED.search(message)
    if stage != "rcpt":
        return SenderRejected(f"{stage.upper()} refused: {text}", code)
    if enhanced:
        subject, detail = enhanced.group(2), enhanced.group(3)
        if subject == "1" or (subject == "2" and detail == "1"):
            return RecipientRejected(text, code)
        if subject == "7":
            return SenderRejected(f"RCPT refused by policy: {text}", code)
        if subject == "2":  # mailbox full and friends may clear up
            return TransientError(text, code)
    if code in (550, 551, 553):
        return RecipientRejected(text, code)
    if code == 552:
        return TransientError(text, code)
    return SenderRejected(f"RCPT refused: {text}", code)


@dataclass
class SmtpConfig:
    host: str
    port: int
    user: str | None = None
    password: str | None = None
    tls: str = "none"  # none | starttls | tls
    timeout: float = 30.0
    connections: int = 4
    messages_per_connection: int = 500
    rate_limit: float = 0.0


@dataclass
class _Slot:
    client: aiosmtplib.SMTP | None = None
    sent: int = 0


class RateLimiter:
    """Spaces sends evenly at `rate` per second across every connection (0 = unlimited)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            self._next = max(self._next, now)
            delay = self._next - now
            self._next += self.interval
        if delay > 0:
            await asyncio.sleep(delay)


class SmtpSender:
    """A pool of reused SMTP connections; at most `connections` messages are in flight."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._slots: asyncio.Queue[_Slot] = asyncio.Queue()
        for _ in range(config.connections):
            self._slots.put_nowait(_Slot())
        self._limiter = RateLimiter(config.rate_limit)

    @property
    def where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    async def _connect(self) -> aiosmtplib.SMTP:
        cfg = self.config
        client = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            timeout=cfg.timeout,
            use_tls=cfg.tls == "tls",
            start_tls=cfg.tls == "starttls",
            tls_context=ssl.create_default_context() if cfg.tls != "none" else None,
        )
        try:
            await client.connect()
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPConnectTimeoutError, OSError) as exc:
            raise ServerUnreachable(f"cannot connect to SMTP server {self.where}: {exc}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise classify(exc.code, exc.message, stage="connect") from exc
        if cfg.user:
            try:
                await client.login(cfg.user, cfg.password or "")
            except aiosmtplib.SMTPAuthenticationError as exc:
                client.close()
                raise SenderRejected(
                    f"SMTP login refused by {self.where}: {exc.code} {exc.message}", exc.code
                ) from exc
            except aiosmtplib.SMTPException as exc:
                client.close()
                raise SenderRejected(f"SMTP login failed at {self.where}: {exc}") from exc
        return client

    async def send(self, envelope: Envelope) -> None:
        slot = await self._slots.get()
        try:
            await self._limiter.wait()
            if slot.client is None or not slot.client.is_connected:
                slot.client, slot.sent = await self._connect(), 0
            await self._send_on(slot.client, envelope)
            slot.sent += 1
            if slot.sent >= self.config.messages_per_connection:
                await self._drop(slot, polite=True)
        except (TransientError, SenderRejected) as exc:
            if not isinstance(exc, ServerUnreachable) and exc.code is None:
                await self._drop(slot)  # the connection is in an unknown state
            raise
        finally:
            self._slots.put_nowait(slot)

    async def _send_on(self, client: aiosmtplib.SMTP, envelope: Envelope) -> None:
        try:
            await client.sendmail(envelope.sender, [envelope.recipient], envelope.data)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            raise classify(refused.code, refused.message, stage="rcpt") from exc
        except aiosmtplib.SMTPSenderRefused as exc:
            raise classify(exc.code, exc.message, stage="mail") from exc
        except aiosmtplib.SMTPDataError as exc:
            raise classify(exc.code, exc.message, stage="data") from exc
        except aiosmtplib.SMTPResponseException as exc:
            # e.g. a 421 "shutting down" reply to any command.
            raise classify(exc.code, exc.message, stage="data") from exc
        except (
            aiosmtplib.SMTPServerDisconnected,
            aiosmtplib.SMTPTimeoutError,
            ConnectionError,
            TimeoutError,
        ) as exc:
            raise TransientError(f"connection to {self.where} lost: {exc}") from exc

    async def _drop(self, slot: _Slot, polite: bool = False) -> None:
        client, slot.client, slot.sent = slot.client, None, 0
        if client is None:
            return
        try:
            if polite and client.is_connected:
                await client.quit()
            else:
                client.close()
        except aiosmtplib.SMTPException:
            client.close()

    async def close(self) -> None:
        slots = [self._slots.get_nowait() for _ in range(self._slots.qsize())]
        for slot in slots:
            await self._drop(slot, polite=True)
            self._slots.put_nowait(slot)


@dataclass
class MemorySender:
    """Keeps messages in a list instead of sending them: for previews, dry runs and tests.

    `fail` may return a SendError for an envelope to simulate a relay's answer.
    """

    outbox: list[Envelope] = field(default_factory=list)
    fail: Callable[[Envelope], SendError | None] | None = None

    async def send(self, envelope: Envelope) -> None:
        if self.fail is not None and (error := self.fail(envelope)) is not None:
            raise error
        self.outbox.append(envelope)

    async def close(self) -> None:
        return None


def smtp_config_from(settings: object) -> SmtpConfig:
    from newsletter.config import Settings

    assert isinstance(settings, Settings)
    return SmtpConfig(
        host=settings.smtp_host,
        port=settings.smtp_port,
        user=settings.smtp_user,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        tls=settings.smtp_tls,
        timeout=settings.smtp_timeout,
        connections=settings.smtp_connections,
        messages_per_connection=settings.smtp_messages_per_connection,
        rate_limit=settings.smtp_rate_limit,
    )

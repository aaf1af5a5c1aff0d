"""Senders: the narrow interface the delivery loop talks to, over SMTP or in memory."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, NoReturn, Protocol, TypeVar

import aiosmtplib

from newsletter.config import Settings
from newsletter.send.errors import (
    NotTransmitted,
    SenderRejected,
    SendError,
    ServerUnreachable,
    Stage,
    TransientError,
    classify,
)
from newsletter.send.message import Envelope

log = logging.getLogger(__name__)


class Sender(Protocol):
    @property
    def concurrency(self) -> int:
        """How many sends can usefully be in flight at once: the delivery loop runs that many
        lanes, so nothing queues in front of the sender once a run stops."""

    async def send(self, envelope: Envelope) -> None:
        """Hand one message to the relay, or raise a SendError subclass."""

    async def close(self) -> None: ...


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

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig:
        return cls(
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


C = TypeVar("C")  # a connection, of whatever client a pooled sender uses


class _Refused(Exception):
    """The relay would not open a connection (the SendError it gave is `error`)."""

    def __init__(self, error: SendError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _Slot(Generic[C]):
    conn: C | None = None
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


class PooledSender(Generic[C]):
    """A pool of reused connections of type C; at most `connections` messages are in flight.

    Subclasses say how to open, use and close one connection; the pool does the rest: the rate
    limit, reopening after `messages_per_connection`, and replacing a kept connection that the
    relay closed while it sat idle.
    """

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._slots: asyncio.Queue[_Slot[C]] = asyncio.Queue()
        for _ in range(config.connections):
            self._slots.put_nowait(_Slot())
        self._limiter = RateLimiter(config.rate_limit)
        self._open = 0  # slots holding a connection the relay accepted
        self._connecting = 0
        self._settled = asyncio.Condition()  # a connect in flight was answered
        self.retired = 0  # slots given up because the relay refused them a connection

    @property
    def where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    @property
    def concurrency(self) -> int:
        """How many sends can usefully be in flight at once (the delivery loop's lanes)."""
        return self.config.connections

    async def _connect(self) -> C:
        raise NotImplementedError

    async def _transaction(self, conn: C, envelope: Envelope) -> None:
        """Send one message; raise NotTransmitted if the connection died before DATA."""
        raise NotImplementedError

    def _is_open(self, conn: C) -> bool:
        raise NotImplementedError

    async def _close(self, conn: C, polite: bool) -> None:
        raise NotImplementedError

    async def send(self, envelope: Envelope) -> None:
        waited = False
        while True:
            slot = await self._slots.get()
            try:
                if not waited:
                    await self._limiter.wait()
                    waited = True
                await self._send_with_reconnect(slot, envelope)
            except _Refused as refused:
                if not await self._others_connected():
                    self._slots.put_nowait(slot)  # not one connection: the relay is down
                    raise refused.error from refused.error.__cause__
                # The relay caps connections per client (Postfix answers 421 beyond
                # smtpd_client_connection_count_limit): this slot is given up and the message
                # goes over one of the connections it accepted.
                self.retired += 1
                log.warning(
                    "%s refused a connection (%s); sending over the %d of %d it accepted",
                    self.where,
                    refused.error,
                    self._open,
                    self.config.connections,
                )
                continue
            except BaseException:
                self._slots.put_nowait(slot)
                raise
            slot.sent += 1
            if slot.sent >= self.config.messages_per_connection:
                await self._drop(slot, polite=True)
            self._slots.put_nowait(slot)
            return

    async def _others_connected(self) -> bool:
        """Whether the relay holds another of our connections, once the connects in flight
        (all lanes start at once) have been answered."""
        async with self._settled:
            await self._settled.wait_for(lambda: self._open > 0 or self._connecting == 0)
        return self._open > 0

    async def _open_connection(self, slot: _Slot[C]) -> None:
        """Connect the slot; a refusal at connect time becomes _Refused, so that send can
        tell a relay that is full from one that is down."""
        self._connecting += 1
        try:
            slot.conn = await self._connect()
            self._open += 1
        except (ServerUnreachable, TransientError) as exc:
            raise _Refused(exc) from exc
        finally:
            self._connecting -= 1
            async with self._settled:
                self._settled.notify_all()

    async def _send_with_reconnect(self, slot: _Slot[C], envelope: Envelope) -> None:
        """Send on the slot's connection; a kept connection the relay closed while it sat idle
        (an idle timeout, a relay restart) is replaced once, which is safe only because the
        failure came before DATA."""
        for attempt in range(2):
            fresh = slot.conn is None or not self._is_open(slot.conn)
            if fresh:
                await self._drop(slot)
                await self._open_connection(slot)
            conn = slot.conn
            assert conn is not None
            try:
                await self._transaction(conn, envelope)
                return
            except NotTransmitted as exc:
                await self._drop(slot)
                if fresh or attempt:
                    raise TransientError(f"connection to {self.where} lost: {exc}") from exc
            except SendError:
                if not self._is_open(conn):
                    await self._drop(slot)
                raise

    def _lost(self, stage: Stage, exc: Exception) -> NoReturn:
        """The connection broke mid-transaction (the caller has closed it)."""
        if stage != "data":
            raise NotTransmitted(f"{type(exc).__name__}: {exc} (before DATA)") from exc
        # Whether the relay kept the message is unknown: a retry may duplicate it, and keeps its
        # Message-ID so the duplicate is recognisable.
        raise TransientError(
            f"connection to {self.where} lost during DATA: {type(exc).__name__}: {exc}",
            stage=stage,
        ) from exc

    async def _drop(self, slot: _Slot[C], polite: bool = False) -> None:
        conn, slot.conn, slot.sent = slot.conn, None, 0
        if conn is not None:
            self._open -= 1
            await self._close(conn, polite)

    async def close(self) -> None:
        slots = [self._slots.get_nowait() for _ in range(self._slots.qsize())]
        for slot in slots:
            await self._drop(slot, polite=True)
            self._slots.put_nowait(slot)


class SmtpSender(PooledSender[aiosmtplib.SMTP]):
    """The pool over aiosmtplib: MAIL, RCPT and DATA one command at a time."""

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
            except aiosmtplib.SMTPResponseException as exc:
                client.close()
                # 535 and friends pause the run; a 454 "try later" is only transient.
                error = classify(exc.code, exc.message, stage="auth")
                raise type(error)(
                    f"SMTP login refused by {self.where}: {exc.code} {exc.message}",
                    exc.code,
                    "auth",
                ) from exc
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
                client.close()
                raise ServerUnreachable(f"SMTP login at {self.where} cut off: {exc}") from exc
            except aiosmtplib.SMTPException as exc:  # e.g. no AUTH offered: a setup problem
                client.close()
                raise SenderRejected(
                    f"SMTP login failed at {self.where}: {exc}", stage="auth"
                ) from exc
        return client

    def _is_open(self, conn: aiosmtplib.SMTP) -> bool:
        return conn.is_connected

    async def _transaction(self, client: aiosmtplib.SMTP, envelope: Envelope) -> None:
        """MAIL, RCPT, DATA one command at a time, so a refusal is classified by the command
        that drew it and the connection is reset (RSET) for the next message."""
        stage: Stage = "mail"
        try:
            await client.mail(envelope.sender)
            stage = "rcpt"
            await client.rcpt(envelope.recipient)
            stage = "data"
            await client.data(envelope.data)
        except aiosmtplib.SMTPServerDisconnected as exc:
            client.close()
            self._lost(stage, exc)
        except aiosmtplib.SMTPResponseException as exc:
            error = classify(exc.code, exc.message, stage=stage)
            if exc.code == 421:  # "closing channel": the relay hangs up after saying so
                client.close()
            else:
                await self._reset(client)
            raise error from exc
        except (aiosmtplib.SMTPTimeoutError, ConnectionError, TimeoutError, OSError) as exc:
            client.close()
            self._lost(stage, exc)

    @staticmethod
    async def _reset(client: aiosmtplib.SMTP) -> None:
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, ConnectionError, TimeoutError, OSError):
            client.close()  # an unusable connection is dropped, not reused

    async def _close(self, conn: aiosmtplib.SMTP, polite: bool) -> None:
        try:
            if polite and conn.is_connected:
                await conn.quit()
            else:
                conn.close()
        except (aiosmtplib.SMTPException, OSError):
            conn.close()


@dataclass
class MemorySender:
    """Keeps messages in a list instead of sending them: for previews, dry runs and tests.

    `fail` may return a SendError for an envelope to simulate a relay's answer.
    """

    outbox: list[Envelope] = field(default_factory=list)
    fail: Callable[[Envelope], SendError | None] | None = None
    concurrency: int = 8

    async def send(self, envelope: Envelope) -> None:
        if self.fail is not None and (error := self.fail(envelope)) is not None:
            raise error
        self.outbox.append(envelope)

    async def close(self) -> None:
        return None

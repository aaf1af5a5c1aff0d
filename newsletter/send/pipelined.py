"""An SMTP sender that pipelines MAIL, RCPT and DATA (RFC 2920) over reused connections.

aiosmtplib waits for each reply before the next command, which costs a round trip and an event
loop turn per command, and its per-message CPU (1-2 ms) is what limits a sender on this kind of
machine. Here the three envelope commands leave in one write when the relay advertises
PIPELINING, then the replies are read in order, so each refusal is still classified by the
command that drew it, exactly as SmtpSender does: a refused MAIL is about us, a refused RCPT
about the recipient. Relays without PIPELINING get the same commands one at a time.

Only what the newsletter needs is spoken: EHLO (HELO as a fallback), STARTTLS, implicit TLS,
AUTH PLAIN, one recipient per transaction, RSET after a refusal and QUIT.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
from dataclasses import dataclass
from typing import NoReturn

from newsletter.send.errors import (
    SenderRejected,
    SendError,
    ServerUnreachable,
    Stage,
    TransientError,
)
from newsletter.send.message import Envelope
from newsletter.send.senders import RateLimiter, SmtpConfig, classify


class _Lost(Exception):
    """The connection broke (closed, reset, timed out) while waiting for a reply."""


class _NotTransmitted(Exception):
    """The connection failed before the message body was sent: sending it again at once, on a
    fresh connection, cannot duplicate it."""


def dot_stuffed(data: bytes) -> bytes:
    """The DATA payload with lines starting "." doubled and the closing ".", CRLF-terminated."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


class _Connection:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.pipelining = False
        self.auth: set[str] = set()
        self.starttls = False
        self.sent = 0

    @property
    def open(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    async def reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply."""
        lines: list[str] = []
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    raw = await self.reader.readline()
                    if not raw.endswith(b"\n"):
                        raise _Lost("connection closed by the server")
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    code = line[:3]
                    if len(line) < 3 or not code.isdigit():
                        raise _Lost(f"malformed SMTP reply {line[:80]!r}")
                    lines.append(line[4:])
                    if len(line) == 3 or line[3] != "-":
                        return int(code), "\n".join(lines)
        except (TimeoutError, ConnectionError, OSError) as exc:
            raise _Lost(f"{type(exc).__name__}: {exc}") from exc

    async def write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
        except (TimeoutError, ConnectionError, OSError) as exc:
            raise _Lost(f"{type(exc).__name__}: {exc}") from exc

    async def command(self, line: str) -> tuple[int, str]:
        await self.write(line.encode("ascii") + b"\r\n")
        return await self.reply()

    async def ehlo(self, name: str) -> None:
        code, text = await self.command(f"EHLO {name}")
        if code != 250:
            code, text = await self.command(f"HELO {name}")
            if code != 250:
                raise classify(code, text, stage="connect")
            return
        extensions = [line.upper().split() for line in text.split("\n")[1:]]
        self.pipelining = any(ext[:1] == ["PIPELINING"] for ext in extensions)
        self.starttls = any(ext[:1] == ["STARTTLS"] for ext in extensions)
        for ext in extensions:
            if ext[:1] == ["AUTH"] or ext[:1] == ["AUTH=LOGIN"]:
                self.auth.update(ext[1:])

    def close(self) -> None:
        self.writer.close()


@dataclass
class _Slot:
    conn: _Connection | None = None


class PipelinedSmtpSender:
    """A pool of reused, pipelining SMTP connections; at most `connections` messages in flight."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._slots: asyncio.Queue[_Slot] = asyncio.Queue()
        for _ in range(config.connections):
            self._slots.put_nowait(_Slot())
        self._limiter = RateLimiter(config.rate_limit)
        self._helo = socket.getfqdn() or "localhost"

    @property
    def where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    @property
    def concurrency(self) -> int:
        return self.config.connections

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context()

    async def _connect(self) -> _Connection:
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.timeout):
                reader, writer = await asyncio.open_connection(
                    cfg.host,
                    cfg.port,
                    ssl=self._tls_context() if cfg.tls == "tls" else None,
                    server_hostname=cfg.host if cfg.tls == "tls" else None,
                )
        except (TimeoutError, OSError) as exc:
            raise ServerUnreachable(f"cannot connect to SMTP server {self.where}: {exc}") from exc
        conn = _Connection(reader, writer, cfg.timeout)
        try:
            code, text = await conn.reply()
            if code != 220:
                raise classify(code, text, stage="connect")
            await conn.ehlo(self._helo)
            if cfg.tls == "starttls":
                if not conn.starttls:
                    raise SenderRejected(f"{self.where} does not offer STARTTLS", stage="connect")
                code, text = await conn.command("STARTTLS")
                if code != 220:
                    raise classify(code, text, stage="connect")
                async with asyncio.timeout(cfg.timeout):
                    await writer.start_tls(self._tls_context(), server_hostname=cfg.host)
                await conn.ehlo(self._helo)
            if cfg.user:
                await self._login(conn)
        except _Lost as exc:
            conn.close()
            raise ServerUnreachable(f"SMTP session with {self.where} cut off: {exc}") from exc
        except (SendError, OSError, ssl.SSLError) as exc:
            conn.close()
            if isinstance(exc, SendError):
                raise
            raise ServerUnreachable(f"TLS with {self.where} failed: {exc}") from exc
        return conn

    async def _login(self, conn: _Connection) -> None:
        cfg = self.config
        if "PLAIN" not in conn.auth:
            raise SenderRejected(
                f"SMTP login failed at {self.where}: AUTH PLAIN not offered", stage="auth"
            )
        secret = f"\0{cfg.user}\0{cfg.password or ''}".encode()
        code, text = await conn.command(f"AUTH PLAIN {base64.b64encode(secret).decode()}")
        if code != 235:
            # 535 and friends pause the run; a 454 "try later" is only transient.
            error = classify(code, text, stage="auth")
            raise type(error)(f"SMTP login refused by {self.where}: {code} {text}", code, "auth")

    async def send(self, envelope: Envelope) -> None:
        slot = await self._slots.get()
        try:
            await self._limiter.wait()
            await self._send_with_reconnect(slot, envelope)
            conn = slot.conn
            if conn is not None:
                conn.sent += 1
                if conn.sent >= self.config.messages_per_connection:
                    await self._drop(slot, polite=True)
        finally:
            self._slots.put_nowait(slot)

    async def _send_with_reconnect(self, slot: _Slot, envelope: Envelope) -> None:
        """A kept connection the relay closed while idle is replaced once: safe only because
        the failure came before the message body was sent."""
        for attempt in range(2):
            fresh = slot.conn is None or not slot.conn.open
            if fresh:
                if slot.conn is not None:
                    slot.conn.close()
                slot.conn = await self._connect()
            conn = slot.conn
            assert conn is not None
            try:
                await self._transaction(conn, envelope)
                return
            except _NotTransmitted as exc:
                await self._drop(slot)
                if fresh or attempt:
                    raise TransientError(f"connection to {self.where} lost: {exc}") from exc
            except SendError:
                if not conn.open:
                    await self._drop(slot)
                raise

    async def _transaction(self, conn: _Connection, envelope: Envelope) -> None:
        commands = [
            f"MAIL FROM:<{envelope.sender}>",
            f"RCPT TO:<{envelope.recipient}>",
            "DATA",
        ]
        stage: Stage = "mail"
        try:
            if conn.pipelining:
                await conn.write("".join(f"{c}\r\n" for c in commands).encode("ascii"))
                replies = [await conn.reply() for _ in commands]
            else:
                replies = []
                for command in commands:
                    replies.append(await conn.command(command))
                    if replies[-1][0] >= 400:
                        break
            stages: tuple[Stage, ...] = ("mail", "rcpt", "data")
            for stage, (code, text) in zip(stages, replies, strict=False):
                expected = 354 if stage == "data" else 250
                if code == expected or (stage != "data" and code == 251):
                    continue
                if replies[-1][0] == 354:
                    # The relay wants a body although an envelope command was refused: send an
                    # empty one (no accepted recipient, so it goes nowhere) to stay in step.
                    await conn.write(b".\r\n")
                    await conn.reply()
                await self._refused(conn, code, text, stage)
            stage = "data"
            await conn.write(dot_stuffed(envelope.data))
            code, text = await conn.reply()
        except _Lost as exc:
            self._lost(conn, stage, exc)
        if code != 250:
            await self._refused(conn, code, text, "data")

    async def _refused(self, conn: _Connection, code: int, text: str, stage: Stage) -> NoReturn:
        error = classify(code, text, stage=stage)
        if code == 421:  # "closing channel": the relay hangs up after saying so
            conn.close()
        else:
            try:
                code, _ = await conn.command("RSET")
                if code != 250:
                    conn.close()
            except _Lost:
                conn.close()  # an unusable connection is dropped, not reused
        raise error

    def _lost(self, conn: _Connection, stage: Stage, exc: Exception) -> NoReturn:
        conn.close()
        if stage != "data":
            raise _NotTransmitted(f"{exc} (before DATA)") from exc
        # Whether the relay kept the message is unknown: a retry may duplicate it, and keeps its
        # Message-ID so the duplicate is recognisable.
        raise TransientError(
            f"connection to {self.where} lost during DATA: {exc}", stage=stage
        ) from exc

    async def _drop(self, slot: _Slot, polite: bool = False) -> None:
        conn, slot.conn = slot.conn, None
        if conn is None:
            return
        if polite and conn.open:
            with contextlib.suppress(_Lost):
                await conn.command("QUIT")
        conn.close()

    async def close(self) -> None:
        slots = [self._slots.get_nowait() for _ in range(self._slots.qsize())]
        for slot in slots:
            await self._drop(slot, polite=True)
            self._slots.put_nowait(slot)

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
from typing import NoReturn

from newsletter.send.errors import (
    SenderRejected,
    SendError,
    ServerUnreachable,
    Stage,
)
from newsletter.send.message import Envelope
from newsletter.send.senders import PooledSender, SmtpConfig, classify


class _Lost(Exception):
    """The connection broke (closed, reset, timed out) while waiting for a reply."""


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


class PipelinedSmtpSender(PooledSender[_Connection]):
    """A pool of reused, pipelining SMTP connections; at most `connections` messages in flight."""

    def __init__(self, config: SmtpConfig) -> None:
        super().__init__(config)
        self._helo = socket.getfqdn() or "localhost"

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

    def _is_open(self, conn: _Connection) -> bool:
        return conn.open

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
            conn.close()
            self._lost(stage, exc)
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

    async def _close(self, conn: _Connection, polite: bool) -> None:
        if polite and conn.open:
            with contextlib.suppress(_Lost):
                await conn.command("QUIT")
        conn.close()

"""An SMTP sender that pipelines MAIL, RCPT and DATA (RFC 2920) over reused connections.

aiosmtplib waits for each reply before the next command, which costs a round trip and an event
loop turn per command, and its per-message CPU (1-2 ms) is what limits a sender on this kind of
machine. Here the three envelope commands leave in one write when the relay advertises
PIPELINING, then the replies are read in order, so each refusal is still classified by the
command that drew it, exactly as SmtpSender does: a refused MAIL is about us, a refused RCPT
about the recipient. Relays without PIPELINING get the same commands one at a time.

Only what the newsletter needs is spoken: EHLO (HELO as a fallback), STARTTLS, implicit TLS,
AUTH PLAIN, one recipient per transaction, RSET after a refusal and QUIT.

The connection is a plain asyncio.Protocol rather than streams, because at thousands of messages
a second the per-message Python work is the limit: data_received cuts whatever arrived into
replies at once (the three pipelined replies usually come in one segment, so they cost one
wake-up, not three readline() calls), a write is only followed by a wait for the buffer to drain
when the transport has actually asked us to pause, and timeouts are watched by one timer per
connection instead of an asyncio.timeout around every reply (see _Connection._watch).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
from collections import deque
from typing import NoReturn

from newsletter.send.errors import (
    SenderRejected,
    SendError,
    ServerUnreachable,
    Stage,
    classify,
)
from newsletter.send.message import Envelope
from newsletter.send.senders import PooledSender, SmtpConfig

# RFC 5321 caps a reply line at 512 octets; a "line" far longer than that is not SMTP, and
# buffering it without a bound would let a broken peer grow our memory.
_MAX_LINE = 8192


class _Lost(Exception):
    """The connection broke (closed, reset, timed out) while waiting for a reply."""


def dot_stuffed(data: bytes) -> bytes:
    """The DATA payload with lines starting "." doubled and the closing ".", CRLF-terminated."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


class _Connection(asyncio.Protocol):
    """One SMTP client connection, used by one transaction at a time (the pool's slot).

    Complete replies wait in `_replies` in the order they came, so pipelined replies are
    matched to commands by position; a reply that arrived before the connection broke is still
    read before the breakage is reported, as the relay sent it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.pipelining = False
        self.auth: set[str] = set()
        self.starttls = False
        self._partial = b""  # the start of a line whose CRLF has not arrived yet
        self._lines: list[str] = []  # the lines so far of a multi-line reply
        self._replies: deque[tuple[int, str]] = deque()
        self._reply_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._waiting_since = 0.0
        self._paused = False
        self._failure: str | None = None  # why the connection is unusable, once it is
        self._watchdog: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol callbacks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._watchdog = self._loop.call_later(self.timeout, self._watch)

    def data_received(self, data: bytes) -> None:
        if self._partial:
            data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            code = raw[:3]
            if raw[3:4] == b" " and not self._lines and code.isdigit():
                # The common case, a one-line reply, without the multi-line bookkeeping.
                self._replies.append((int(code), raw[4:].rstrip(b"\r").decode("utf-8", "replace")))
                continue
            # bytes.isdigit() is ASCII-only, unlike str.isdigit(), so int() cannot fail.
            if len(raw) < 3 or not code.isdigit():
                self._fail(f"malformed SMTP reply {raw[:80].decode('utf-8', 'replace')!r}")
                return
            self._lines.append(raw[4:].rstrip(b"\r").decode("utf-8", "replace"))
            if raw[3:4] != b"-":  # the last line of the reply
                self._replies.append((int(code), "\n".join(self._lines)))
                self._lines = []
        if len(self._partial) > _MAX_LINE:
            self._fail(f"malformed SMTP reply: a line of over {_MAX_LINE} bytes")
            return
        if self._replies:
            self._wake(self._reply_waiter)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self._fail("connection closed by the server")
        else:
            self._fail(f"{type(exc).__name__}: {exc}")
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake(self._drain_waiter)

    # -- failure and timeouts ----------------------------------------------------------------

    @staticmethod
    def _wake(waiter: asyncio.Future[None] | None) -> None:
        """Wake a wait; the waiting loop then looks at the state again (replies, failure)."""
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, why: str) -> None:
        """Make the connection unusable: a wait on it raises _Lost (after the replies that
        came before the failure have been read), and we hang up."""
        if self._failure is None:
            self._failure = why
        self._wake(self._reply_waiter)
        self._wake(self._drain_waiter)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()  # unsent data is worthless on a connection we give up

    def _watch(self) -> None:
        """The timeout, as one timer per connection rather than a timer per reply.

        Arming and cancelling an asyncio.timeout around each of the four replies a message
        needs was a measurable share of the sender's CPU. Instead each wait notes when it began
        (one clock read) and this timer, which re-arms itself, fails a wait that has lasted
        `timeout` seconds; with nothing pending it sleeps a full period. So, as before, every
        reply (and every wait for the write buffer to drain) gets `timeout` seconds of its own.
        """
        self._watchdog = None
        if self._failure is not None:
            return
        delay = self.timeout
        if self._reply_waiter is not None or self._drain_waiter is not None:
            delay = self._waiting_since + self.timeout - self._loop.time()
            if delay <= 0:
                self._fail(f"TimeoutError: no progress from the server in {self.timeout:g}s")
                return
        self._watchdog = self._loop.call_later(delay, self._watch)

    # -- what the sender calls ---------------------------------------------------------------

    @property
    def open(self) -> bool:
        return (
            self._failure is None and self.transport is not None and not self.transport.is_closing()
        )

    async def reply(self) -> tuple[int, str]:
        """The next (possibly multi-line) reply."""
        while not self._replies:
            if self._failure is not None:
                raise _Lost(self._failure)
            waiter = self._loop.create_future()
            self._reply_waiter = waiter
            self._waiting_since = self._loop.time()
            try:
                await waiter
            finally:
                self._reply_waiter = None
        return self._replies.popleft()

    async def write(self, data: bytes) -> None:
        """Hand bytes to the transport; wait only if it asked us to pause (its buffer is above
        the high-water mark), which a write of one message seldom makes it do."""
        if self._failure is not None:
            raise _Lost(self._failure)
        assert self.transport is not None
        self.transport.write(data)
        while self._paused:
            if self._failure is not None:
                raise _Lost(self._failure)
            waiter = self._loop.create_future()
            self._drain_waiter = waiter
            self._waiting_since = self._loop.time()
            try:
                await waiter
            finally:
                self._drain_waiter = None

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

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """Upgrade to TLS after the relay's 220 to STARTTLS; the protocol object stays."""
        if self._replies or self._lines or self._partial:
            # Bytes after the 220 came in plaintext but would be read as if protected by TLS:
            # the STARTTLS command injection attack (CVE-2011-0411 and kin). Refuse them.
            self._fail("data from the server after its STARTTLS reply")
            raise _Lost(self._failure or "")
        assert self.transport is not None
        transport = await self._loop.start_tls(
            self.transport,
            self,
            context,
            server_hostname=server_hostname,
            ssl_handshake_timeout=self.timeout,
        )
        if transport is None:  # the loop's contract allows it, though a client never sees it
            raise _Lost("STARTTLS: the connection closed during the TLS handshake")
        self.transport = transport

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self.transport is not None:
            self.transport.close()


class PipelinedSmtpSender(PooledSender[_Connection]):
    """A pool of reused, pipelining SMTP connections; at most `connections` messages in flight."""

    def __init__(self, config: SmtpConfig) -> None:
        super().__init__(config)
        self._helo = socket.getfqdn() or "localhost"

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context()

    async def _connect(self) -> _Connection:
        cfg = self.config
        loop = asyncio.get_running_loop()
        conn = _Connection(loop, cfg.timeout)
        try:
            async with asyncio.timeout(cfg.timeout):
                await loop.create_connection(
                    lambda: conn,
                    cfg.host,
                    cfg.port,
                    ssl=self._tls_context() if cfg.tls == "tls" else None,
                    server_hostname=cfg.host if cfg.tls == "tls" else None,
                )
        except (TimeoutError, OSError) as exc:
            conn.close()
            raise ServerUnreachable(f"cannot connect to SMTP server {self.where}: {exc}") from exc
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
                    await conn.start_tls(self._tls_context(), server_hostname=cfg.host)
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
                replies = [await conn.reply(), await conn.reply(), await conn.reply()]
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
            await conn.write(envelope.wire or dot_stuffed(envelope.data))
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

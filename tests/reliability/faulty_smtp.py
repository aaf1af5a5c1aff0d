"""A real SMTP server (aiosmtpd on loopback) that injects faults and counts what it accepted.

Every reliability test talks to one of these through a production sender (SmtpSender over
aiosmtplib, or PipelinedSmtpSender, with and without PIPELINING offered), so each fault travels
the same sockets, replies and client code as it would from a real relay. Faults are
functions of the recipient and of how often that recipient was tried, so a test states them
in one line and they hold for any number of subscribers.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from newsletter.capture import free_port

# A fault answers a command with an SMTP reply ("451 4.3.0 try later"), with DROP to close the
# connection without answering, with STALL to never answer (until the client gives up and hangs
# up), or with None to let the command through.
DROP = "drop"
STALL = "stall"
Fault = Callable[[str, int], str | None]  # (recipient, attempt number at this stage) -> reply

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)", re.MULTILINE | re.IGNORECASE)


@dataclass
class FaultyHandler:
    """Accepts mail unless a fault says otherwise; counts per recipient what it accepted."""

    rcpt_fault: Fault | None = None
    data_fault: Fault | None = None
    mail_fault: Callable[[int], str | None] | None = None  # (MAIL number) -> reply
    # Called (in the server's thread) after each accepted message with the running total.
    on_accept: Callable[[int], None] | None = None
    # Offer PIPELINING in the EHLO reply (RFC 2920), as Postfix and most relays do. aiosmtpd
    # reads pipelined commands in order and answers each in turn either way; the flag decides
    # whether PipelinedSmtpSender sends MAIL, RCPT and DATA together or one at a time.
    pipelining: bool = False

    accepted: Counter[str] = field(default_factory=Counter)
    message_ids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    rcpt_attempts: Counter[str] = field(default_factory=Counter)
    data_attempts: Counter[str] = field(default_factory=Counter)
    rcpt_times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    sessions: set[int] = field(default_factory=set)
    mails: int = 0
    drops: int = 0
    stalls: int = 0
    refusals: Counter[str] = field(default_factory=Counter)  # reply code -> how many
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.accepted.values())

    def duplicates(self) -> dict[str, int]:
        with self.lock:
            return {rcpt: n for rcpt, n in self.accepted.items() if n > 1}

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self.lock:
            self.mails += 1
            self.sessions.add(id(session))
            number = self.mails
        reply = self.mail_fault(number) if self.mail_fault else None
        if reply:
            return await self._answer_fault(server, reply)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self.lock:
            self.rcpt_attempts[address] += 1
            attempt = self.rcpt_attempts[address]
            self.rcpt_times[address].append(time.monotonic())
        reply = self.rcpt_fault(address, attempt) if self.rcpt_fault else None
        if reply:
            return await self._answer_fault(server, reply)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        recipient = envelope.rcpt_tos[0]
        with self.lock:
            self.data_attempts[recipient] += 1
            attempt = self.data_attempts[recipient]
        reply = self.data_fault(recipient, attempt) if self.data_fault else None
        if reply:
            # A DROP here: the whole message arrived but is not kept, and the client sees the
            # connection die before any reply, exactly as when a relay crashes mid-transaction.
            return await self._answer_fault(server, reply)
        found = _MESSAGE_ID.search(envelope.content)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.accepted[rcpt] += 1
                self.message_ids[rcpt].add(found.group(1).decode() if found else "")
            total = sum(self.accepted.values())
        if self.on_accept is not None:
            self.on_accept(total)
        return "250 2.0.0 queued"

    async def _answer_fault(self, server: Any, reply: str) -> str:
        """Play the fault a command drew: DROP, STALL, or an SMTP refusal."""
        if reply == DROP:
            return self._drop(server)
        if reply == STALL:
            return await self._stall(server)
        return self._refuse(reply)

    def _refuse(self, reply: str) -> str:
        with self.lock:
            self.refusals[reply[:3]] += 1
        return reply

    def _drop(self, server: Any) -> str:
        with self.lock:
            self.drops += 1
        server.transport.close()
        return "421 4.4.2 connection dropped"  # never reaches the client

    async def _stall(self, server: Any) -> str:
        """Answer nothing, like a relay wedged on a slow disk or a dead filter, until the client
        times out and hangs up (aiosmtpd may cancel us then); nothing is accepted."""
        with self.lock:
            self.stalls += 1
        for _ in range(600):
            if server.transport is None or server.transport.is_closing():
                break
            await asyncio.sleep(0.05)
        if server.transport is not None:
            server.transport.close()
        return "421 4.4.2 connection dropped"  # never reaches the client


@dataclass
class Authenticator:
    """AUTH that can be switched between refusing (535) and accepting, like a relay whose
    credentials were rotated and then fixed."""

    accept: bool = False
    attempts: int = 0

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        self.attempts += 1
        ok = self.accept and isinstance(data, LoginPassword)
        return AuthResult(success=ok, handled=False)


class FaultyServer:
    """Runs a FaultyHandler on 127.0.0.1 in a background thread; use as a context manager."""

    def __init__(self, handler: FaultyHandler, authenticator: Authenticator | None = None) -> None:
        self.handler = handler
        self.port = free_port()
        extra: dict[str, Any] = {}
        if authenticator is not None:
            extra = {
                "authenticator": authenticator,
                "auth_required": True,
                "auth_require_tls": False,  # loopback test relay: no TLS to set up
            }
        self._controller = Controller(
            handler,
            hostname="127.0.0.1",
            port=self.port,
            data_size_limit=10 * 1024 * 1024,
            **extra,
        )

    def __enter__(self) -> FaultyServer:
        self._controller.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._controller.stop()

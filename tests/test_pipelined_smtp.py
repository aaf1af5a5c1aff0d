"""The pipelined client's connection layer against a scripted relay on loopback: replies cut at
any byte, several replies in one segment, 421, a malformed reply and a relay that never answers.

The relay is a real TCP server speaking SMTP from a script, because these cases are about where
the bytes fall, which aiosmtpd gives no control over; the fault suite covers the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from newsletter.send.errors import ServerUnreachable, TransientError
from newsletter.send.message import Envelope
from newsletter.send.pipelined import PipelinedSmtpSender
from newsletter.send.senders import SmtpConfig

EHLO = b"250-relay.example.org\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
Say = Callable[[bytes], Awaitable[None]]
Script = Callable[[asyncio.StreamReader, Say], Awaitable[None]]


async def run(script: Script, sends: int, *, timeout: float = 5) -> list[BaseException | None]:
    """Serve `script` per connection and send `sends` messages through one connection slot."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def say(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        try:
            await script(reader, say)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = PipelinedSmtpSender(
        SmtpConfig(host="127.0.0.1", port=port, timeout=timeout, connections=1)
    )
    results: list[BaseException | None] = []
    try:
        for i in range(sends):
            try:
                await sender.send(Envelope("a@example.org", f"r{i}@example.org", b"\r\nbody\r\n"))
                results.append(None)
            except Exception as exc:
                results.append(exc)
    finally:
        await sender.close()
        server.close()
    return results


async def greet(reader: asyncio.StreamReader, say: Say) -> None:
    """The relay's side of the greeting and EHLO, offering PIPELINING."""
    await say(b"220 relay ready\r\n")
    await reader.readline()
    await say(EHLO)


async def read_message(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n.\r\n")


def test_replies_cut_at_every_byte_and_multi_line_replies_are_read_whole() -> None:
    async def dribble(say: Say, data: bytes) -> None:
        for i in range(len(data)):
            await say(data[i : i + 1])
            await asyncio.sleep(0)

    async def script(reader: asyncio.StreamReader, say: Say) -> None:
        await dribble(say, b"220 relay ready\r\n")
        await reader.readline()  # EHLO
        await dribble(say, EHLO)
        while (await reader.readline()).startswith(b"MAIL"):
            await reader.readline()  # RCPT
            await reader.readline()  # DATA
            await dribble(say, b"250 ok\r\n250-ok\r\n250 still ok\r\n354 go on\r\n")
            await read_message(reader)
            await dribble(say, b"250 queued\r\n")
        await say(b"221 bye\r\n")

    assert asyncio.run(run(script, 3)) == [None, None, None]


def test_a_421_fails_the_message_as_transient_and_the_connection_is_not_reused() -> None:
    sessions: list[int] = []

    async def script(reader: asyncio.StreamReader, say: Say) -> None:
        sessions.append(1)
        await greet(reader, say)
        while (await reader.readline()).startswith(b"MAIL"):
            await reader.readline()
            await reader.readline()
            if len(sessions) == 1:
                # All three replies in one segment, then the relay hangs up as it announced.
                await say(b"250 ok\r\n421 4.3.2 shutting down\r\n503 no valid recipients\r\n")
                return
            await say(b"250 ok\r\n250 ok\r\n354 go on\r\n")
            await read_message(reader)
            await say(b"250 queued\r\n")

    results = asyncio.run(run(script, 2))
    assert isinstance(results[0], TransientError) and results[0].stage == "rcpt"
    assert results[1] is None
    assert len(sessions) == 2


def test_a_malformed_greeting_and_a_silent_relay_are_unreachable_not_hangs() -> None:
    async def garbage(reader: asyncio.StreamReader, say: Say) -> None:
        await say(b"HTTP/1.1 400 Bad Request\r\n")
        await reader.read()

    async def silent(reader: asyncio.StreamReader, say: Say) -> None:
        await reader.read()  # until the client gives up

    [result] = asyncio.run(run(garbage, 1))
    assert isinstance(result, ServerUnreachable) and "malformed" in str(result)
    [result] = asyncio.run(asyncio.wait_for(run(silent, 1, timeout=0.3), 5))
    assert isinstance(result, ServerUnreachable) and "TimeoutError" in str(result)


@pytest.mark.parametrize("cut", [b"250 ok\r\n250 ok\r\n", b"250 ok\r\n250 ok\r\n354 go"])
def test_a_connection_lost_before_data_is_retried_once_on_a_fresh_one(cut: bytes) -> None:
    sessions: list[int] = []

    async def script(reader: asyncio.StreamReader, say: Say) -> None:
        sessions.append(1)
        await greet(reader, say)
        first = True
        while (await reader.readline()).startswith(b"MAIL"):
            await reader.readline()
            await reader.readline()
            if len(sessions) == 1 and not first:
                await say(cut)  # then hang up, before the 354 is complete
                return
            first = False
            await say(b"250 ok\r\n250 ok\r\n354 go on\r\n")
            await read_message(reader)
            await say(b"250 queued\r\n")

    # The second message meets the drop on a kept connection: resent at once on a new one.
    assert asyncio.run(run(script, 3)) == [None, None, None]
    assert len(sessions) == 2

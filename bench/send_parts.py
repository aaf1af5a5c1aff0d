"""What one message costs in each part of the send path, each part measured on its own.

    python -m bench.send_parts [--subscribers N] [--repeat R]

On the throughput bench's data set (bench.throughput.populate, SQLite), planned once, every
delivery claimed: composing each message (each distinct digest rendered once, then taken from
the cache: the splice of the personal values and the MIME bytes); sending as many messages, 500
of the composed ones in turn, with the pipelining client over 8 connections into Postfix's
smtp-sink, with the CPU time (user and system) it took; recording them sent on SQLite 250 to a
transaction, as the delivery loop does with record_every = 500. Figures are microseconds per
message, medians of R runs. They explain where a send's time goes (README, Throughput); the
ratios to the ceiling are bench.throughput's.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.throughput import DAY, Sink, populate, settings_for, sqlite_url

CONNECTIONS = 8
RECORD_BATCH = 250  # what the delivery loop writes at once with record_every = 500
POOL = 500  # composed messages kept to be sent, over and over


def cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def compose_each(app: Any, claimed: list[Any]) -> tuple[float, float, list[Any]]:
    """Seconds per message composing every delivery, twice: the first pass renders each
    distinct digest once (as a send does), the second finds them all in the cache. Only the
    first POOL messages are kept, for sending: all of them would be gigabytes."""
    compose = app.composer.compose
    timings = []
    kept: list[Any] = []
    for _ in range(2):
        kept = []
        started = time.perf_counter()
        for delivery in claimed:
            envelope = compose(delivery)
            if len(kept) < POOL:
                kept.append(envelope)
        timings.append((time.perf_counter() - started) / len(claimed))
    return timings[0], timings[1], kept


def send_all(app: Any, pool: list[Any], count: int) -> tuple[float, float, float]:
    """(wall seconds, user CPU, system CPU) per message, sending `count` messages taken in turn
    from `pool` with CONNECTIONS lanes."""
    from newsletter.send.factory import sender_from_settings

    sender = sender_from_settings(app.settings)
    left = count

    async def lane() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await sender.send(pool[left % len(pool)])

    async def run() -> None:
        await asyncio.gather(*(lane() for _ in range(CONNECTIONS)))
        await sender.close()

    user, system = cpu_seconds()
    started = time.perf_counter()
    asyncio.run(run())
    wall = time.perf_counter() - started
    user_after, system_after = cpu_seconds()
    return wall / count, (user_after - user) / count, (system_after - system) / count


def record_all(app: Any, claimed: list[Any]) -> float:
    ids = [delivery.id for delivery in claimed]
    started = time.perf_counter()
    for first in range(0, len(ids), RECORD_BATCH):
        app.store.outbox.mark_sent(ids[first : first + RECORD_BATCH])
    return (time.perf_counter() - started) / len(ids)


def one_run(subscribers: int, sink: Sink) -> dict[str, float]:
    from newsletter.root import Newsletter

    folder = Path(tempfile.mkdtemp(prefix="bench-send-parts-"))
    url = sqlite_url(folder)
    populate(url, subscribers, 0)
    app = Newsletter(settings_for(url, sink.port, "pipelined", 1, CONNECTIONS))
    try:
        app.plan(DAY, immediately=True)
        claimed = app.store.outbox.claim(subscribers, 3600)
        first, cached, pool = compose_each(app, claimed)
        wall, user, system = send_all(app, pool, len(claimed))
        record = record_all(app, claimed)
    finally:
        app.close()
    return {
        "messages": len(claimed),
        "bytes": statistics.mean(len(e.data) for e in pool),
        "compose": first,
        "compose cached": cached,
        "distinct": app.composer.cached_renderer.misses,
        "send wall": wall,
        "send user": user,
        "send system": system,
        "record": record,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.send_parts", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    sink = Sink()
    try:
        runs = [one_run(args.subscribers, sink) for _ in range(args.repeat)]
    finally:
        sink.close()
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    us = 1e6
    cpu = (median["send user"] + median["send system"]) * us
    print(
        f"N={args.subscribers}, {median['messages']:.0f} messages of {median['bytes']:.0f} B, "
        f"medians of {args.repeat} runs, per message:"
    )
    print(
        f"  compose, MIME bytes included: {median['compose'] * us:.1f} us with the first of each "
        f"of {median['distinct']:.0f} distinct digests rendered, "
        f"{median['compose cached'] * us:.1f} us from the cache alone"
    )
    print(
        f"  SMTP client into smtp-sink, {CONNECTIONS} connections: {cpu:.1f} us of CPU "
        f"({median['send user'] * us:.0f} user + {median['send system'] * us:.0f} system), "
        f"{1 / median['send wall']:,.0f} messages/s"
    )
    print(f"  marking sent on SQLite, {RECORD_BATCH} a transaction: {median['record'] * us:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())

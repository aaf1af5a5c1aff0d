"""Sender workers: drain the outbox now, or keep draining as deliveries become due."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from newsletter.root import Newsletter
from newsletter.send.engine import DrainReport

log = logging.getLogger(__name__)


@dataclass
class WorkerTotals:
    sent: int = 0
    cycles: int = 0
    stopped: str | None = None


async def run_worker(
    newsletter: Newsletter, *, burst: bool, stop: asyncio.Event | None = None
) -> WorkerTotals:
    """Send what is due; with `burst`, return when nothing is due, else poll until `stop`.

    Several workers may run against PostgreSQL (claims skip each other's locked rows and expired
    leases are reclaimed); on SQLite a second one is refused.
    """
    totals = WorkerTotals()
    stop = stop or asyncio.Event()
    while not stop.is_set():
        report: DrainReport = await newsletter.drain()
        totals.sent += report.sent
        totals.cycles += 1
        if report.sent or report.failed or report.skipped:
            log.info(
                "worker cycle: sent %d, failed %d, skipped %d",
                report.sent,
                sum(report.failed.values()),
                sum(report.skipped.values()),
            )
        if report.stopped:
            totals.stopped = report.stopped
            log.error("worker paused: %s", report.stopped)
            if burst:
                break
        elif burst:
            break
        with contextlib.suppress(TimeoutError):  # the poll interval passed: look again
            await asyncio.wait_for(stop.wait(), timeout=newsletter.settings.worker_poll_seconds)
    return totals

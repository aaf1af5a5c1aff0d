"""The daily schedule: fetch and plan each day once, catching up once after downtime.

APScheduler fires the job; the database decides whether it does anything. A day's run row and
the per-subscriber unique key make a second scheduler, a restart or a manual `send` at the same
moment harmless: whoever comes second finds the day planned.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, date, datetime, time, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from starlette.concurrency import run_in_threadpool

from newsletter.due_times import listing_day
from newsletter.errors import NewsletterError
from newsletter.root import Newsletter

log = logging.getLogger(__name__)


def daily_run(newsletter: Newsletter, day: date) -> bool:
    """Fetch `day` (refreshing a partial list) and plan it, unless it is already planned.

    A failed fetch is logged and, when an earlier fetch stored the day, planning goes on with
    what is there; with nothing stored the run fails loudly for the operator to see.
    """
    if newsletter.store.outbox.run_planned(day):
        log.info("%s already planned; nothing to do", day)
        return False
    if newsletter.store.papers.known_empty(day):
        log.info("%s listed no papers (weekends do); nothing to plan", day)
        return False
    try:
        fetched = newsletter.fetch(day)
        log.info(
            "%s: fetched %d papers, the day lists %d", day, fetched.stored, fetched.listing.total
        )
    except NewsletterError as exc:
        if not newsletter.store.papers.day_papers(day):
            log.error("daily run for %s failed: %s", day, exc)
            raise
        log.warning("fetch for %s failed, planning the stored list: %s", day, exc)
    else:
        if fetched.listing.total == 0:
            log.info("%s listed no papers (weekends do); nothing to plan", day)
            return False
    report = newsletter.plan(day)
    log.info("%s planned: %d queued, %d skipped", day, report.queued, sum(report.skipped.values()))
    return True


def missed_run(newsletter: Newsletter, now: datetime) -> date | None:
    """The day whose scheduled run passed within the grace window without being planned."""
    settings = newsletter.settings
    hour, minute = map(int, settings.schedule_time.split(":"))
    today = now.astimezone(UTC).date()
    scheduled = datetime.combine(today, time(hour, minute), tzinfo=UTC)
    if scheduled > now:
        scheduled -= timedelta(days=1)
    if now - scheduled > timedelta(hours=settings.catchup_grace_hours):
        return None
    day = listing_day(scheduled, settings.digest_lag_days)
    return None if newsletter.store.outbox.run_planned(day) else day


def build_scheduler(newsletter: Newsletter) -> AsyncIOScheduler:
    settings = newsletter.settings
    hour, minute = map(int, settings.schedule_time.split(":"))

    async def job() -> None:
        day = listing_day(datetime.now(UTC), settings.digest_lag_days)
        # A failure is already logged; the next scheduled run or a manual `send` retries.
        with contextlib.suppress(NewsletterError):
            await run_in_threadpool(daily_run, newsletter, day)

    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_job(
        job,
        CronTrigger(hour=hour, minute=minute, timezone=UTC),
        id="daily-digest",
        coalesce=True,
        max_instances=1,
        misfire_grace_time=int(settings.catchup_grace_hours * 3600),
    )
    return scheduler


async def catch_up(newsletter: Newsletter) -> date | None:
    """Run a missed day once at start-up (the scheduler's memory does not survive a restart)."""
    day = await run_in_threadpool(missed_run, newsletter, datetime.now(UTC))
    if day is None:
        return None
    log.info("catching up the missed run for %s", day)
    try:
        await run_in_threadpool(daily_run, newsletter, day)
    except NewsletterError:
        return None
    return day

"""The commands that plan and send a day and say how it went."""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from newsletter.errors import NewsletterError
from newsletter.logs import configure_logging
from newsletter.states import DeliveryStatus, SkipReason

# Every command but the one that runs needs none of the heavy modules (pydantic, SQLAlchemy,
# Jinja, MJML, uvicorn): they are imported where they are used, so `--help`, `--version` and
# the quick commands cron runs start in a fraction of a second.
if TYPE_CHECKING:
    import asyncio

    from newsletter.root import Newsletter, PlanReport
    from newsletter.send.engine import DrainReport

from newsletter.cli.common import (
    date_option,
    email_argument,
    load_settings,
    now_option,
    with_newsletter,
)

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


@click.command()
@date_option
@click.option("--dry-run", is_flag=True, help="Show what would be sent; write and send nothing.")
@now_option
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=None,
    help="Processes to send with (default: the setting send_processes).",
)
@with_newsletter
def send(app: Newsletter, day: date, dry_run: bool, now: bool, processes: int | None) -> None:
    """Plan and deliver a day's digests, then print a summary."""
    if dry_run:
        # No fetch here: that would store the day. plan() says to run `fetch` first.
        _print_plan(app.plan(day, dry_run=True), dry_run=True)
        return
    if app.listed_nothing(day):
        click.echo(f"{day}: the day listed no papers (weekends do); nothing to send")
        return
    import asyncio

    report = asyncio.run(
        app.send(
            day,
            progress=_progress if sys.stderr.isatty() else None,
            now=now,
            processes=processes,
        )
    )
    if sys.stderr.isatty():
        click.echo("", err=True)
    _print_plan(report.plan)
    _print_drain(report.drain)
    _print_scheduled(app, day, now)
    if report.drain.stopped:
        raise NewsletterError(f"run paused: {report.drain.stopped}")


def _print_scheduled(app: Newsletter, day: date, now: bool) -> None:
    waiting = app.store.reports.day_summary(day).by_status.get(DeliveryStatus.QUEUED, 0)
    if waiting and now:
        click.echo(f"due now: {waiting} (`newsletter worker` or `newsletter run` sends them)")
    elif waiting:
        click.echo(
            f"scheduled for later: {waiting} (due at each subscriber's local delivery hour; "
            "`newsletter worker` or `newsletter run` sends them, or use --now)"
        )


@click.command()
@date_option
@now_option
@with_newsletter
def plan(app: Newsletter, day: date, now: bool) -> None:
    """Create a day's deliveries without sending them (a worker sends them when due)."""
    if app.listed_nothing(day):
        click.echo(f"{day}: the day listed no papers (weekends do); nothing to plan")
        return
    _print_plan(app.plan(day, immediately=now))
    _print_scheduled(app, day, now)


@click.command()
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    help="SMTP connections in parallel (default: NEWSLETTER_SMTP_CONNECTIONS).",
)
@click.option("--burst", is_flag=True, help="Exit once nothing is due instead of waiting.")
def worker(concurrency: int | None, burst: bool) -> None:
    """Send deliveries as they become due. Run several against PostgreSQL to scale out."""
    from newsletter.worker import run_worker

    overrides = {"smtp_connections": concurrency} if concurrency else {}
    settings = load_settings(**overrides)
    configure_logging(settings.log_format)
    from newsletter.root import Newsletter

    app = Newsletter(settings)
    try:
        import asyncio

        totals = asyncio.run(_until_signal(lambda stop: run_worker(app, burst=burst, stop=stop)))
    finally:
        app.close()
    click.echo(f"worker done: sent {totals.sent}")
    if totals.stopped:
        raise NewsletterError(f"run paused: {totals.stopped}")


async def _until_signal(main: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run `main` until it returns or SIGINT/SIGTERM asks it to stop after the current batch."""
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return await main(stop)


def _progress(report: DrainReport) -> None:
    click.echo(
        f"\rsent {report.sent}, retrying {report.retrying}, failed {sum(report.failed.values())}",
        nl=False,
        err=True,
    )


def _print_plan(plan: PlanReport, dry_run: bool = False) -> None:
    verb = "would queue" if dry_run else "queued"
    click.echo(
        f"{plan.day}: {verb} {plan.queued} digests"
        + (f", {plan.already_planned} already planned earlier" if plan.already_planned else "")
    )
    for reason, count in sorted(plan.skipped.items()):
        click.echo(f"  skipped ({reason}): {count}")


def _print_drain(drain: DrainReport) -> None:
    click.echo(f"sent: {drain.sent} in {drain.seconds:.1f}s")
    for reason, count in sorted(drain.skipped.items()):
        click.echo(f"skipped at send time ({reason}): {count}")
    for reason, count in sorted(drain.failed.items()):
        click.echo(f"failed ({reason}): {count}")
    if drain.retrying:
        click.echo(f"retries scheduled: {drain.retrying}")
    if drain.suppressed:
        click.echo(f"addresses suppressed after hard bounces: {drain.suppressed}")
    if drain.taken_over:
        click.echo(f"taken over from a sender that is gone (a crash): {drain.taken_over}")
    if drain.leased_elsewhere:
        click.echo(
            f"still leased by another running sender: {drain.leased_elsewhere} "
            f"(it sends them, or they are due again by {_utc(drain.leased_until)})"
        )


def _utc(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "-"


@click.command()
@click.argument("email")
@date_option
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the HTML here (default: stdout); the text part goes beside it.",
)
@with_newsletter
def preview(app: Newsletter, email: str, day: date, output: Path | None) -> None:
    """Write the digest a subscriber gets for a day."""
    address = email_argument(email)
    reason = app.why_no_digest(address, day)
    if reason is not None:
        planned = any(d.digest_date == day for d in app.store.reports.deliveries_for(address))
        verb = "was planned" if planned else "would be planned"
        click.echo(
            f"no digest for {address} on {day}: {reason.explanation} ({reason}); "
            f"none {verb}, so no mail goes out"
        )
        return
    rendered = app.preview(address, day)
    if output is None:
        click.echo(rendered.html)
        return
    output.write_text(rendered.html, encoding="utf-8")
    output.with_suffix(".txt").write_text(rendered.text, encoding="utf-8")
    click.echo(f"{rendered.subject}\nwrote {output} and {output.with_suffix('.txt')}")


@click.command()
@date_option
@with_newsletter
def status(app: Newsletter, day: date) -> None:
    """A day's run at a glance: planned, sent, retrying, failed, skipped by reason."""
    summary = app.store.reports.day_summary(day)
    total = sum(summary.by_status.values())
    click.echo(f"{day}: {total} deliveries planned, {summary.papers_sent} papers sent")
    for state in (
        DeliveryStatus.SENT,
        DeliveryStatus.QUEUED,
        DeliveryStatus.SENDING,
        DeliveryStatus.RETRY,
        DeliveryStatus.FAILED,
        DeliveryStatus.SKIPPED,
    ):
        if summary.by_status.get(state):
            click.echo(f"  {state}: {summary.by_status[state]}")
    if summary.by_status.get(DeliveryStatus.SENDING):
        leases = app.store.outbox.leases()
        if leases.held:
            click.echo(
                f"    held by a running sender: {leases.held}, "
                f"until {_utc(leases.held_until)} at the latest"
            )
        if leases.orphaned:
            click.echo(
                f"    left by a sender that is gone: {leases.orphaned} "
                "(the next `send` or `worker` takes them over at once)"
            )
    for reason, count in sorted(summary.skipped_by_reason.items()):
        click.echo(f"  skipped ({reason}): {count}")
    for reason, count in sorted(summary.failed_by_reason.items()):
        click.echo(f"  failed ({reason}): {count}")


@click.command()
@date_option
@click.option("--skipped", is_flag=True, help="Also list who was skipped by decision, and why.")
@with_newsletter
def failures(app: Newsletter, day: date, skipped: bool) -> None:
    """Who did not get a day's digest, and why: failures, then skips counted by reason."""
    summary = app.store.reports.day_summary(day)
    if not sum(summary.by_status.values()):
        click.echo(f"{day}: no digest was planned for this day")
        return
    rows = app.store.reports.undelivered(day)
    # A skip (nothing matched, paused, ...) is a decision, not a failure: counted, and listed
    # on request, apart from the failures.
    failed = [r for r in rows if r.status != DeliveryStatus.SKIPPED]
    if not failed:
        sent = summary.by_status.get(DeliveryStatus.SENT, 0)
        click.echo(f"{day}: no failures; {sent} digests sent")
    for row in failed:
        detail = f" — {row.detail}" if row.detail else ""
        click.echo(
            f"{row.email}\t{row.status}\t{row.reason or '-'}\tattempts={row.attempts}{detail}"
        )
    for reason, count in sorted(summary.skipped_by_reason.items()):
        click.echo(f"skipped ({reason}): {count} — {_skip_words(reason)}")
    if skipped:
        for row in rows:
            if row.status == DeliveryStatus.SKIPPED:
                click.echo(f"{row.email}\tskipped\t{row.reason or '-'}")


def _skip_words(reason: str) -> str:
    known = {r.value: r for r in SkipReason}
    return known[reason].explanation if reason in known else reason

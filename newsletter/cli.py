"""The `newsletter` command. Every operator-facing failure is one line on stderr, exit code 1."""

from __future__ import annotations

import csv
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, date, datetime
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from newsletter import __version__
from newsletter.addresses import InvalidAddress, normalise_email
from newsletter.errors import ConfigError, NewsletterError, StoreUnavailable
from newsletter.logs import configure_logging
from newsletter.schedule import listing_day
from newsletter.states import DeliveryStatus, SkipReason

# Every command but the one that runs needs none of the heavy modules (pydantic, SQLAlchemy,
# Jinja, MJML, uvicorn): they are imported where they are used, so `--help`, `--version` and
# the quick commands cron runs start in a fraction of a second.
if TYPE_CHECKING:
    import asyncio

    from newsletter.config import Settings
    from newsletter.pipeline import Newsletter, PlanReport
    from newsletter.relevance.state import ReaderWords
    from newsletter.send.engine import DrainReport

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def parse_day(_ctx: click.Context, _param: click.Parameter, value: str | None) -> date:
    if value is None:
        # The same day the daily schedule would mail now, so a manual run matches it.
        return listing_day(datetime.now(UTC), load_settings().digest_lag_days)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date in YYYY-MM-DD form") from None


date_option = click.option(
    "--date",
    "day",
    callback=parse_day,
    metavar="YYYY-MM-DD",
    help="The list's date (default: today minus NEWSLETTER_DIGEST_LAG_DAYS, UTC).",
)


def load_settings(**overrides: object) -> Settings:
    from newsletter.config import load_settings

    return load_settings(**overrides)


def newsletter_app(demo: bool = False) -> Newsletter:
    from sqlalchemy.exc import ArgumentError

    from newsletter.pipeline import Newsletter

    settings = load_settings()
    try:
        return Newsletter(settings, demo=demo)
    except (OSError, ImportError, ArgumentError) as exc:
        # A database URL naming an impossible folder, a missing driver or plain garbage.
        raise StoreUnavailable(f"cannot open database {_url_label(settings)}: {exc}") from exc


def _url_label(settings: Settings) -> str:
    from sqlalchemy.exc import ArgumentError

    from newsletter.store.engine import redacted

    try:
        return redacted(settings.database_url)
    except ArgumentError:
        return "NEWSLETTER_DATABASE_URL"


def with_newsletter(func: F) -> F:
    """Open the configured newsletter for a command and close it afterwards."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        app = newsletter_app()
        try:
            return func(app, *args, **kwargs)
        finally:
            app.close()

    return wrapper  # type: ignore[return-value]


@click.group()
@click.version_option(__version__, prog_name="newsletter")
def cli() -> None:
    """Trending-papers newsletter: fetch, personalise and mail each day's trending papers."""


@cli.command()
@with_newsletter
def init(app: Newsletter) -> None:
    """Create or upgrade the database."""
    app.store.upgrade()
    click.echo(f"database ready: {app.settings.database_url.split('@')[-1]}")


@cli.command()
@date_option
@click.option("--source", help="hf, arxiv or a file path (default: the configured source).")
@click.option(
    "--replace",
    is_flag=True,
    help="Make these papers the day's whole list (default: add them to what the day lists).",
)
@with_newsletter
def fetch(app: Newsletter, day: date, source: str | None, replace: bool) -> None:
    """Store a day's list of trending papers (a day's list is the union of its fetches)."""
    explicit_day = day if _date_given() else None
    report = app.fetch(explicit_day, source, replace=replace)
    for problem in report.problems:
        click.echo(f"warning: {problem}", err=True)
    skipped = f", skipped {len(report.problems)} unreadable items" if report.problems else ""
    if report.empty:
        click.echo(
            f"{report.day}: {report.source} listed no papers (weekends are empty){skipped}; "
            f"recorded as fetched, the day lists {report.listing.total} papers"
        )
        return
    listing = report.listing
    click.echo(
        f"{report.day}: stored {report.stored} papers from {report.source}{skipped} "
        f"({listing.added} new to the day, {listing.already_listed} listed already); "
        f"the day now lists {listing.total} papers"
    )


def _date_given() -> bool:
    ctx = click.get_current_context()
    return ctx.get_parameter_source("day") == click.core.ParameterSource.COMMANDLINE


@cli.command()
def topics() -> None:
    """List the topic taxonomy."""
    from newsletter.topics import load_taxonomy

    taxonomy = load_taxonomy(load_settings().resolved_topics_file())
    width = max(len(t.slug) for t in taxonomy.topics)
    for topic in taxonomy.topics:
        click.echo(f"{topic.slug:<{width}}  {topic.name} — {topic.description}")


@cli.group()
def subscribers() -> None:
    """Add, list, remove, import and export subscribers."""


def _email(value: str) -> str:
    try:
        return normalise_email(value)
    except InvalidAddress as exc:
        raise NewsletterError(str(exc)) from None


@subscribers.command("add")
@click.argument("email")
@click.option("--topic", "topic_slugs", multiple=True, help="Topic slug (repeatable).")
@click.option("--keyword", "keywords", multiple=True, help="Free keyword (repeatable).")
@click.option("--about", default=None, help="What they work on, in their own words (600 chars).")
@click.option(
    "--exclude", "exclude", multiple=True, help="Never show papers with this word (repeatable)."
)
@with_newsletter
def subscribers_add(
    app: Newsletter,
    email: str,
    topic_slugs: tuple[str, ...],
    keywords: tuple[str, ...],
    about: str | None,
    exclude: tuple[str, ...],
) -> None:
    """Add (or update) a confirmed subscriber."""
    words = _reader_words(about or "", exclude) if about is not None or exclude else None
    try:
        record = app.subscriptions.add(email, topic_slugs, keywords, words)
    except InvalidAddress as exc:
        raise NewsletterError(str(exc)) from None
    shown = _interests(record.topics, record.keywords, words.about if words else "")
    click.echo(f"subscribed {record.email} ({shown})")


def _reader_words(about: str, exclude: Iterable[str]) -> ReaderWords:
    from newsletter.subscriptions import Subscriptions

    try:
        return Subscriptions.words(about, list(exclude))
    except ValueError as exc:
        raise NewsletterError(str(exc)) from None


def _interests(topic_slugs: Iterable[str], keywords: Iterable[str], about: str = "") -> str:
    parts = [*topic_slugs, *(f'"{k}"' for k in keywords)]
    if about:
        parts.append(f"about: {about[:60]}" + ("..." if len(about) > 60 else ""))
    return ", ".join(parts) if parts else "top papers"


@subscribers.command("list")
@with_newsletter
def subscribers_list(app: Newsletter) -> None:
    """List subscribers with their status and interests."""
    for s in app.subscriptions.all():
        click.echo(f"{s.email}\t{s.status}\t{_interests(s.topics, s.keywords)}")


@subscribers.command("remove")
@click.argument("email")
@with_newsletter
def subscribers_remove(app: Newsletter, email: str) -> None:
    """Delete a subscriber and their history."""
    try:
        removed = app.subscriptions.remove(email)
    except InvalidAddress as exc:
        raise NewsletterError(str(exc)) from None
    if not removed:
        raise NewsletterError(f"no subscriber {email}")
    click.echo(f"removed {email}")


@subscribers.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@with_newsletter
def subscribers_import(app: Newsletter, csv_file: Path) -> None:
    """Import subscribers from a CSV file with columns email, topics, keywords (`;`-separated),
    and optionally about (what they work on) and exclude (`;`-separated)."""
    added, problems = 0, 0
    subscriptions = app.subscriptions
    with csv_file.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "email" not in reader.fieldnames:
            raise NewsletterError(f"{csv_file}: the header row must name an 'email' column")
        own_words = "about" in reader.fieldnames or "exclude" in reader.fieldnames
        for line, row in enumerate(reader, start=2):
            try:
                words = (
                    subscriptions.words(
                        row.get("about") or "", (row.get("exclude") or "").split(";")
                    )
                    if own_words
                    else None
                )
                subscriptions.add(
                    row.get("email") or "",
                    (row.get("topics") or "").split(";"),
                    (row.get("keywords") or "").split(";"),
                    words,
                )
            except (InvalidAddress, ConfigError, ValueError) as exc:
                click.echo(f"warning: {csv_file}:{line}: skipped: {exc}", err=True)
                problems += 1
                continue
            added += 1
    click.echo(f"imported {added} subscribers" + (f", skipped {problems} rows" if problems else ""))


@subscribers.command("export")
@with_newsletter
def subscribers_export(app: Newsletter) -> None:
    """Write all subscribers as CSV (the import format, plus status) to stdout."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["email", "topics", "keywords", "about", "exclude", "status"])
    everyone = app.subscriptions.all()
    # Read in batches: one query per thousand subscribers, not one each.
    for start in range(0, len(everyone), 1000):
        batch = everyone[start : start + 1000]
        words = app.subscriptions.words_of(s.id for s in batch)
        for s in batch:
            own = words.get(s.id)
            writer.writerow(
                [
                    s.email,
                    ";".join(s.topics),
                    ";".join(s.keywords),
                    own.about if own else "",
                    ";".join(own.exclude) if own else "",
                    s.status,
                ]
            )


now_option = click.option(
    "--now", is_flag=True, help="Make the day's digests due at once, not at local delivery hours."
)


@cli.command()
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


@cli.command()
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


@cli.command()
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
    from newsletter.pipeline import Newsletter

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


@cli.command()
@click.option("--host", help="Address to listen on (default: NEWSLETTER_WEB_HOST).")
@click.option("--port", type=int, help="Port to listen on (default: NEWSLETTER_WEB_PORT).")
def run(host: str | None, port: int | None) -> None:
    """The always-on service: web app, daily scheduler and a sender in one process."""
    from newsletter.service import run_service

    settings = load_settings()
    configure_logging(settings.log_format)
    import asyncio

    asyncio.run(run_service(settings, host=host, port=port))


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


@cli.command()
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
    address = _email(email)
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


@cli.command()
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


@cli.command()
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


@cli.group()
def suppressions() -> None:
    """Addresses never mailed again (bounced, complained, unsubscribed)."""


@suppressions.command("list")
@with_newsletter
def suppressions_list(app: Newsletter) -> None:
    for row in app.store.suppressions.all():
        click.echo(
            f"{row.email}\t{row.reason}\t{row.created_at:%Y-%m-%d %H:%M}\t{row.detail or ''}"
        )


@suppressions.command("add")
@click.argument("email")
@click.option("--reason", default="manual", show_default=True)
@with_newsletter
def suppressions_add(app: Newsletter, email: str, reason: str) -> None:
    app.store.suppressions.suppress(_email(email), reason)
    click.echo(f"suppressed {email}")


@suppressions.command("remove")
@click.argument("email")
@with_newsletter
def suppressions_remove(app: Newsletter, email: str) -> None:
    if not app.store.suppressions.unsuppress(_email(email)):
        raise NewsletterError(f"{email} is not suppressed")
    click.echo(f"{email} may be mailed again")


@cli.command()
@click.option("--host", help="Address to listen on (default: NEWSLETTER_WEB_HOST).")
@click.option("--port", type=int, help="Port to listen on (default: NEWSLETTER_WEB_PORT).")
def serve(host: str | None, port: int | None) -> None:
    """Serve the subscriber web app (subscribe, preferences, unsubscribe, archive, API)."""
    import uvicorn

    from newsletter.web import create_app

    settings = load_settings()
    app = create_app(settings)
    uvicorn.run(
        app,
        host=host or settings.web_host,
        port=port or settings.web_port,
        proxy_headers=False,
        server_header=False,
    )


@cli.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
    help="Folder for the database and captured mail (recreated).",
)
def demo(workdir: Path) -> None:
    """Run the whole pipeline offline on the bundled sample days."""
    from newsletter.demo import format_table, run_demo

    result = run_demo(workdir, echo=click.echo)
    click.echo("")
    click.echo(format_table(result))
    click.echo("")
    click.echo(f"{result.messages} messages captured; papers repeated to anyone: {result.repeats}")
    click.echo(f"mail (.eml and .html per subscriber per day): {result.workdir / 'mail'}")
    if result.repeats:
        raise NewsletterError("a paper was sent twice to one subscriber")


@cli.command()
@click.argument(
    "mailbox", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--stdin", "from_stdin", is_flag=True, help="Read one message or an mbox from stdin (MTA pipe)."
)
@with_newsletter
def bounces(app: Newsletter, mailbox: Path | None, from_stdin: bool) -> None:
    """Apply bounce reports (RFC 3464 DSNs) from an mbox file or one .eml message.

    Hard bounces (5.1.x, 5.2.1) are recorded and suppress the address after
    hard_bounce_limit of them; delays and soft failures are counted, not applied.
    """
    from newsletter.bounces import apply_bounces, split_mailbox

    if (mailbox is None) != from_stdin:
        raise NewsletterError("give one mailbox file (mbox or .eml), or --stdin")
    data = sys.stdin.buffer.read() if mailbox is None else mailbox.read_bytes()
    source = "stdin" if mailbox is None else str(mailbox)
    report = apply_bounces(
        app.store, split_mailbox(data), app.settings.hard_bounce_limit, source=source
    )
    for problem in report.problems:
        click.echo(f"warning: skipped {problem}", err=True)
    click.echo(
        f"{report.messages} messages, {report.reports} delivery reports: "
        f"{len(report.hard)} hard bounces recorded, {report.suppressed} addresses suppressed"
    )
    for kind, count in sorted(report.not_applied.items()):
        click.echo(f"  not applied ({kind}): {count}")
    if report.messages and not report.reports:
        raise NewsletterError(f"{source}: no message was a readable delivery status notification")


def main() -> None:
    # Every failure the CLI can report it reports itself, as one line; library log records
    # (such as the delivery loop's "run paused") would only repeat it.
    logging.getLogger("newsletter").addHandler(logging.NullHandler())
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except NewsletterError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:  # an unwritable --output or --workdir, say
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

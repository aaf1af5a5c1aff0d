"""The commands about who gets mail: subscribers, suppressions, bounce reports."""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from newsletter.addresses import InvalidAddress
from newsletter.errors import ConfigError, NewsletterError

# Every command but the one that runs needs none of the heavy modules (pydantic, SQLAlchemy,
# Jinja, MJML, uvicorn): they are imported where they are used, so `--help`, `--version` and
# the quick commands cron runs start in a fraction of a second.
if TYPE_CHECKING:
    from newsletter.relevance.state import ReaderWords
    from newsletter.root import Newsletter

from newsletter.cli.common import email_argument, with_newsletter

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


@click.group()
def subscribers() -> None:
    """Add, list, remove, import and export subscribers."""


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


@click.group()
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
    app.store.suppressions.suppress(email_argument(email), reason)
    click.echo(f"suppressed {email}")


@suppressions.command("remove")
@click.argument("email")
@with_newsletter
def suppressions_remove(app: Newsletter, email: str) -> None:
    if not app.store.suppressions.unsuppress(email_argument(email)):
        raise NewsletterError(f"{email} is not suppressed")
    click.echo(f"{email} may be mailed again")


@click.command()
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

"""The `newsletter` command. Every operator-facing failure is one line on stderr, exit code 1."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from newsletter import __version__
from newsletter.errors import NewsletterError
from newsletter.logs import configure_logging

# Every command but the one that runs needs none of the heavy modules (pydantic, SQLAlchemy,
# Jinja, MJML, uvicorn): they are imported where they are used, so `--help`, `--version` and
# the quick commands cron runs start in a fraction of a second.
if TYPE_CHECKING:
    from newsletter.root import Newsletter

from newsletter.cli.audience import bounces, subscribers, suppressions
from newsletter.cli.common import (
    date_option,
    load_settings,
    with_newsletter,
)
from newsletter.cli.delivery import failures, plan, preview, send, status, worker

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


@click.group()
@click.version_option(__version__, prog_name="newsletter")
def cli() -> None:
    """Trending-papers newsletter: fetch, personalise and mail each day's trending papers."""


for command in (subscribers, suppressions, bounces, send, plan, worker, preview, status, failures):
    cli.add_command(command)


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

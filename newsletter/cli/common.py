"""What every command shares: the configured newsletter opened and closed around it, and the
--date option."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import click

from newsletter.addresses import InvalidAddress, normalise_email
from newsletter.due_times import listing_day
from newsletter.errors import NewsletterError, StoreUnavailable

# Every command but the one that runs needs none of the heavy modules (pydantic, SQLAlchemy,
# Jinja, MJML, uvicorn): they are imported where they are used, so `--help`, `--version` and
# the quick commands cron runs start in a fraction of a second.
if TYPE_CHECKING:
    from newsletter.config import Settings
    from newsletter.root import Newsletter


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

    from newsletter.root import Newsletter

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


def email_argument(value: str) -> str:
    try:
        return normalise_email(value)
    except InvalidAddress as exc:
        raise NewsletterError(str(exc)) from None


now_option = click.option(
    "--now", is_flag=True, help="Make the day's digests due at once, not at local delivery hours."
)

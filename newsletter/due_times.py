"""When a digest is due: the subscriber's local delivery hour, and weekly weekdays.

Pure functions over dates and zone names; the planner stores the result as a UTC instant.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def valid_timezone(name: str) -> bool:
    return zone(name) is not None


@lru_cache(maxsize=1)
def timezone_names() -> list[str]:
    return sorted(available_timezones())


def due_at(
    day: date, timezone: str | None, hour: int | None, default_timezone: str, default_hour: int
) -> datetime:
    """The UTC instant (naive) at which `day`'s digest is due for this subscriber.

    A local hour that does not exist (skipped by a DST change) resolves the way zoneinfo does,
    to the offset before the change, so it still lands on that morning.
    """
    tz = zone(timezone or default_timezone) or zone(default_timezone) or UTC
    local = datetime.combine(day, time(hour if hour is not None else default_hour), tzinfo=tz)
    return local.astimezone(UTC).replace(tzinfo=None)


def weekly_due(day: date, weekday: int | None, default_weekday: int) -> bool:
    return day.weekday() == (weekday if weekday is not None else default_weekday)


def listing_day(now: datetime, lag_days: int) -> date:
    """The list a run at `now` mails: `lag_days` before today (UTC)."""
    return now.astimezone(UTC).date() - timedelta(days=lag_days)

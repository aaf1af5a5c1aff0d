"""Local delivery time: digests become due at the subscriber's hour, across DST changes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta

import pytest

from newsletter.due_times import due_at, weekly_due
from newsletter.papers import Paper
from newsletter.root import Newsletter


@pytest.mark.parametrize(
    ("day", "zone", "expected_utc"),
    [
        # Berlin springs forward on 29 March 2026: 08:00 local moves from 07:00 to 06:00 UTC.
        (date(2026, 3, 28), "Europe/Berlin", datetime(2026, 3, 28, 7)),
        (date(2026, 3, 29), "Europe/Berlin", datetime(2026, 3, 29, 6)),
        # New York falls back on 1 November 2026: 08:00 local moves from 12:00 to 13:00 UTC.
        (date(2026, 10, 31), "America/New_York", datetime(2026, 10, 31, 12)),
        (date(2026, 11, 1), "America/New_York", datetime(2026, 11, 1, 13)),
        # East of UTC the local morning is the previous UTC evening.
        (date(2026, 6, 1), "Asia/Tokyo", datetime(2026, 5, 31, 23)),
    ],
)
def test_due_at_follows_local_time_across_dst(day: date, zone: str, expected_utc: datetime) -> None:
    assert due_at(day, zone, 8, "UTC", 8) == expected_utc


def test_an_hour_skipped_by_dst_still_lands_that_morning() -> None:
    # 02:00 does not exist in Berlin on 29 March 2026.
    assert due_at(date(2026, 3, 29), "Europe/Berlin", 2, "UTC", 8).date() == date(2026, 3, 29)


def test_defaults_apply_and_unknown_zones_fall_back() -> None:
    assert due_at(date(2026, 1, 5), None, None, "UTC", 9) == datetime(2026, 1, 5, 9)
    assert due_at(date(2026, 1, 5), "Mars/Olympus", 7, "UTC", 9) == datetime(2026, 1, 5, 7)


def test_weekly_due_uses_the_subscribers_weekday_or_the_default() -> None:
    monday, thursday = date(2026, 3, 2), date(2026, 3, 5)
    assert weekly_due(monday, None, 0) and not weekly_due(thursday, None, 0)
    assert weekly_due(thursday, 3, 0) and not weekly_due(monday, 3, 0)


def test_a_digest_is_not_sent_before_its_local_hour(
    make_newsletter: Callable[..., Newsletter],
) -> None:
    app = make_newsletter()
    tomorrow = date.today() + timedelta(days=1)
    past = date.today() - timedelta(days=3)
    paper = Paper(id="2611.00001", title="A compiler", abstract="Compilers.", upvotes=3)
    for day in (past, tomorrow):
        app.store.papers.store_day(day, [paper])
    early = app.store.subscribers.upsert("early@example.org", [], [])
    app.store.subscribers.update_preferences(
        early.id,
        topics=[],
        keywords=[],
        frequency="daily",
        paused=False,
        schedule=("Pacific/Kiritimati", 6, None),
    )
    app.plan(tomorrow)
    assert app.store.outbox.claim(10, 60) == [], "tomorrow's digest was sendable today"
    app.store.subscribers.upsert("late@example.org", [], [])
    app.plan(past)
    claimed = app.store.outbox.claim(10, 60)
    assert [c.subscriber.email for c in claimed] == ["early@example.org", "late@example.org"][1:]

"""Weekly subscribers: one digest a week, on the weekly weekday, with the week's best unseen
papers on their interests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date, timedelta

from newsletter.capture import CaptureServer
from newsletter.papers import Paper
from newsletter.root import Newsletter

MONDAY = date(2026, 3, 2)


def papers_for(day: date) -> list[Paper]:
    """Two compiler papers a day; the Wednesday one is the week's most upvoted."""
    return [
        Paper(
            id=f"2603.{day.day:02d}{n:03d}",
            title=f"Compiler paper {n} of {day}",
            abstract="About compilers.",
            upvotes=100 if day.weekday() == 2 and n == 1 else n,
        )
        for n in (1, 2)
    ]


def test_weekly_subscriber_gets_one_digest_a_week_with_the_weeks_best(
    make_newsletter: Callable[..., Newsletter], smtp_server: CaptureServer
) -> None:
    app = make_newsletter(smtp_port=smtp_server.port, weekly_weekday=0, max_papers=3)
    weekly = app.store.subscribers.upsert("weekly@example.org", ["compilers"], [])
    app.store.subscribers.update_preferences(
        weekly.id, topics=["compilers"], keywords=[], frequency="weekly", paused=False
    )
    app.store.subscribers.upsert("daily@example.org", ["compilers"], [])

    for offset in range(15):  # Monday to the second Monday after
        day = MONDAY + timedelta(days=offset)
        app.store.papers.store_day(day, papers_for(day))
        asyncio.run(app.send(day))

    to_weekly = [m for m in smtp_server.messages if m.recipients == ["weekly@example.org"]]
    to_daily = [m for m in smtp_server.messages if m.recipients == ["daily@example.org"]]
    assert len(to_daily) == 15
    # Mondays only: the first Monday (its own day), then one for each full week.
    assert len(to_weekly) == 3
    dates = [m.parsed()["Message-ID"][1:9] for m in to_weekly]
    assert dates == ["20260302", "20260309", "20260316"]
    second = to_weekly[1].parsed().get_body(preferencelist=("plain",)).get_content()
    wednesday_best = papers_for(date(2026, 3, 4))[0]
    assert wednesday_best.title in second
    # Nothing in a weekly digest repeats an earlier one.
    seen: set[str] = set()
    for _, status, _, ids in app.store.reports.deliveries_for("weekly@example.org"):
        assert status == "sent" and not seen & set(ids)
        seen |= set(ids)

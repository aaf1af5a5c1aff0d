"""A day's list over several fetches: the union of its sources, empty days that stay quiet, and
what `fetch`, `send`, `preview` and `failures` say about them."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest

from newsletter.capture import CaptureServer
from newsletter.root import Newsletter
from newsletter.scheduler import daily_run
from newsletter.sources import huggingface
from tests.cli_env import environment
from tests.fixtures import shapes
from tests.local_http import LocalServer, Reply

DAY = date(2026, 8, 21)
LISTED, PUBLISHED = "2026-08-21", "2026-08-19"
SATURDAY = date(2026, 8, 22)


def hf_file(tmp_path: Path, name: str, items: list[dict[str, object]]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def hf_day(tmp_path: Path) -> Path:
    return hf_file(
        tmp_path,
        "hf.json",
        [
            shapes.item_2026("2608.80001", listed=LISTED, published=PUBLISHED, upvotes=40),
            shapes.item_2026("2608.80002", listed=LISTED, published=PUBLISHED, upvotes=7),
        ],
    )


def rss_day(tmp_path: Path) -> Path:
    """The same day's arXiv feed: one paper HF listed too, two it did not."""
    path = tmp_path / "cs.LG.rss"
    path.write_text(
        shapes.rss_feed(
            [
                ("2608.80002", "A paper on quantized compilers", "We study compilers."),
                ("2608.80003", "Sparse attention at scale", "We study attention."),
                ("2608.80004", "Robot learning from play", "We study robots."),
            ],
            channel_date="Fri, 21 Aug 2026 00:00:00 -0400",
        ),
        encoding="utf-8",
    )
    return path


def listed(app: Newsletter, day: date = DAY) -> list[str]:
    return app.store.papers.day_paper_ids(day)


def test_a_second_source_adds_to_the_day_instead_of_replacing_it(
    make_newsletter: Callable[..., Newsletter], tmp_path: Path
) -> None:
    app = make_newsletter()
    first = app.fetch(None, str(hf_day(tmp_path)))
    second = app.fetch(None, str(rss_day(tmp_path)))

    assert first.day == second.day == DAY  # from submittedOnDailyAt, then the feed's pubDate
    assert (first.listing.added, first.listing.total) == (2, 2)
    assert (second.listing.added, second.listing.already_listed, second.listing.total) == (2, 1, 4)
    # Same paper from two sources is one entry, in the place it was first listed; the arXiv
    # copy has no upvotes and does not take the HF count away.
    assert listed(app) == ["2608.80001", "2608.80002", "2608.80003", "2608.80004"]
    assert app.store.papers.by_id(["2608.80002"])["2608.80002"].upvotes == 7


def test_replace_makes_a_fetch_the_whole_list(
    make_newsletter: Callable[..., Newsletter], tmp_path: Path
) -> None:
    app = make_newsletter()
    app.fetch(None, str(hf_day(tmp_path)))
    report = app.fetch(None, str(rss_day(tmp_path)), replace=True)

    assert report.listing.total == 3
    assert listed(app) == ["2608.80002", "2608.80003", "2608.80004"]


def test_an_empty_day_is_recorded_and_not_fetched_again(
    make_newsletter: Callable[..., Newsletter], server: LocalServer
) -> None:
    server.handler = lambda path, query: Reply(body=b"[]", content_type="application/json")
    app = make_newsletter(source="hf", hf_api_url=f"{server.url}/api/daily_papers")

    assert app.listed_nothing(SATURDAY)
    assert app.listed_nothing(SATURDAY)
    assert len(server.requests) == 1  # the second answer came from the store
    assert app.store.papers.known_empty(SATURDAY)
    assert not app.store.papers.known_empty(DAY)  # never fetched: not known to be empty


def test_the_daily_run_on_an_empty_day_logs_info_not_an_error(
    make_newsletter: Callable[..., Newsletter],
    server: LocalServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.handler = lambda path, query: Reply(body=b"[]", content_type="application/json")
    app = make_newsletter(source="hf", hf_api_url=f"{server.url}/api/daily_papers")

    with caplog.at_level(logging.INFO, logger="newsletter"):
        assert daily_run(app, SATURDAY) is False
        assert daily_run(app, SATURDAY) is False  # the next catch-up asks nobody
    assert len(server.requests) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("listed no papers" in r.getMessage() for r in caplog.records)


def test_a_feed_of_only_unreadable_items_is_still_an_error(
    make_newsletter: Callable[..., Newsletter], tmp_path: Path
) -> None:
    app = make_newsletter()
    broken = hf_file(tmp_path, "broken.json", [{"paper": {"title": "no id"}}, 17])
    with pytest.raises(Exception, match=r"all 2 items were unreadable"):
        app.fetch(DAY, str(broken))
    assert not app.store.papers.known_empty(DAY)


# -- the CLI ------------------------------------------------------------------------------------


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "newsletter.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_says_what_the_day_holds_and_weekends_exit_zero(
    tmp_path: Path, smtp_server: CaptureServer
) -> None:
    env = environment(tmp_path, smtp_server.port)
    assert cli(env, "init").returncode == 0
    hf, rss = hf_day(tmp_path), rss_day(tmp_path)

    first = cli(env, "fetch", "--source", str(hf))
    assert first.stdout.strip() == (
        f"{DAY}: stored 2 papers from {hf} (2 new to the day, 0 listed already); "
        "the day now lists 2 papers"
    )
    second = cli(env, "fetch", "--source", str(rss))
    assert "(2 new to the day, 1 listed already); the day now lists 4 papers" in second.stdout
    replaced = cli(env, "fetch", "--replace", "--source", str(hf))
    assert replaced.stdout.strip().endswith("the day now lists 2 papers")

    weekend = hf_file(tmp_path, "saturday.json", [])
    empty = cli(env, "fetch", "--date", str(SATURDAY), "--source", str(weekend))
    assert empty.returncode == 0, empty.stderr
    assert f"{SATURDAY}: {weekend} listed no papers" in empty.stdout
    send = cli(env, "send", "--now", "--date", str(SATURDAY))
    assert send.returncode == 0, send.stderr
    assert (
        send.stdout.strip()
        == f"{SATURDAY}: the day listed no papers (weekends do); nothing to send"
    )
    assert send.stderr == ""
    assert not smtp_server.messages


def test_preview_and_failures_say_what_happened(tmp_path: Path, smtp_server: CaptureServer) -> None:
    env = environment(tmp_path, smtp_server.port)
    assert cli(env, "init").returncode == 0
    cli(env, "fetch", "--source", str(hf_day(tmp_path)))
    nothing = cli(env, "failures", "--date", str(DAY))
    assert nothing.stdout.strip() == f"{DAY}: no digest was planned for this day"

    add = ("subscribers", "add")
    assert cli(env, *add, "astro@example.org", "--keyword", "exoplanets").returncode == 0
    assert cli(env, *add, "compilers@example.org", "--keyword", "compiler").returncode == 0

    before = cli(env, "preview", "astro@example.org", "--date", str(DAY))
    assert before.returncode == 0
    assert before.stdout.strip() == (
        f"no digest for astro@example.org on {DAY}: nothing listed that day matched their "
        "topics or keywords (no_matching_papers); none would be planned, so no mail goes out"
    )
    sent = cli(env, "send", "--now", "--date", str(DAY))
    assert sent.returncode == 0, sent.stderr
    after = cli(env, "preview", "astro@example.org", "--date", str(DAY))
    assert "none was planned, so no mail goes out" in after.stdout

    failures = cli(env, "failures", "--date", str(DAY)).stdout.splitlines()
    assert failures == [
        f"{DAY}: no failures; 1 digests sent",
        "skipped (no_matching_papers): 1 — nothing listed that day matched their topics or "
        "keywords",
    ]
    listed_too = cli(env, "failures", "--skipped", "--date", str(DAY)).stdout.splitlines()
    assert listed_too[-1] == "astro@example.org\tskipped\tno_matching_papers"


def test_a_weeks_papers_come_in_the_order_the_days_listed_them(
    make_newsletter: Callable[..., Newsletter],
) -> None:
    app = make_newsletter()
    papers = app.store.papers
    monday = [
        shapes.item_2026(f"2608.8010{i}", listed="2026-08-17", published="2026-08-14")
        for i in (3, 1, 2)
    ]
    tuesday = [
        shapes.item_2026(f"2608.8020{i}", listed="2026-08-18", published="2026-08-17")
        for i in (2, 1)
    ]
    papers.store_day(date(2026, 8, 18), huggingface.parse_items(tuesday, "tue").papers)
    papers.store_day(date(2026, 8, 17), huggingface.parse_items(monday, "mon").papers)
    # Tuesday lists one of Monday's papers again: it keeps Monday's place.
    papers.store_day(date(2026, 8, 18), huggingface.parse_items(monday[:1], "tue").papers)

    week = papers.listed_between(date(2026, 8, 17), date(2026, 8, 23))
    assert [p.id for p in week] == [
        "2608.80103",
        "2608.80101",
        "2608.80102",
        "2608.80202",
        "2608.80201",
    ]

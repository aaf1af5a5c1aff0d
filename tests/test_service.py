"""The always-on service: the daily run happens once, a missed run is caught up once, and
`newsletter run` serves the web app while its scheduler and worker deliver."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import httpx

from newsletter.capture import CaptureServer, free_port
from newsletter.root import Newsletter
from newsletter.scheduler import daily_run, listing_day, missed_run
from tests.conftest import SAMPLE_DATA
from tests.reliability.conftest import cli_env, newsletter_bin

SAMPLE = str(SAMPLE_DATA / "2026-02-11.json")


def test_the_daily_run_plans_a_day_once(make_newsletter: Callable[..., Newsletter]) -> None:
    app = make_newsletter(source=SAMPLE)
    app.store.subscribers.upsert("reader@example.org", [], [])
    day = date(2026, 2, 11)
    assert daily_run(app, day) is True
    assert daily_run(app, day) is False  # a second scheduler, a restart: nothing more
    assert sum(app.store.reports.day_summary(day).by_status.values()) == 1


def test_a_missed_run_is_caught_up_once_within_the_grace_window(
    make_newsletter: Callable[..., Newsletter],
) -> None:
    now = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
    app = make_newsletter(
        source=SAMPLE, schedule_time="06:30", catchup_grace_hours=6, digest_lag_days=1
    )
    assert missed_run(app, now) == date(2026, 3, 9)
    daily_run(app, date(2026, 3, 9))
    assert missed_run(app, now) is None, "caught up twice"
    late = make_newsletter(source=SAMPLE, schedule_time="06:30", catchup_grace_hours=1)
    assert missed_run(late, now) is None, "caught up outside the grace window"


def test_listing_day_lags_the_utc_date() -> None:
    assert listing_day(datetime(2026, 3, 10, 0, 30, tzinfo=UTC), 1) == date(2026, 3, 9)


def test_run_serves_the_app_and_delivers_what_its_scheduler_planned(
    make_newsletter: Callable[..., Newsletter], smtp_server: CaptureServer
) -> None:
    port = free_port()
    now = datetime.now(UTC)
    app = make_newsletter(smtp_port=smtp_server.port, base_url=f"http://127.0.0.1:{port}")
    app.store.subscribers.upsert("reader@example.org", [], [])
    # The scheduled time passed an hour ago without a run: start-up catches it up.
    env = cli_env(
        app.settings,
        source=SAMPLE,
        digest_lag_days=0,
        default_delivery_hour=0,
        schedule_time=(now - timedelta(hours=1)).strftime("%H:%M"),
        catchup_grace_hours=6,
        worker_poll_seconds=0.2,
        web_port=port,
        log_format="json",
        metrics_token="scrape-me",
    )
    service = subprocess.Popen(
        [newsletter_bin(), "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not smtp_server.messages and time.monotonic() < deadline:
            time.sleep(0.1)
        assert smtp_server.messages, "the caught-up run delivered nothing"
        assert smtp_server.messages[0].recipients == ["reader@example.org"]
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{base}/metrics").status_code == 401
        metrics = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer scrape-me"}).text
        assert 'newsletter_deliveries{status="sent",reason=""} 1' in metrics
        assert 'newsletter_queue_depth{due="now"} 0' in metrics
    finally:
        os.kill(service.pid, signal.SIGTERM)
        _, stderr = service.communicate(timeout=30)
    assert service.returncode == 0, stderr
    assert '"message": "catching up the missed run for' in stderr  # JSON log lines

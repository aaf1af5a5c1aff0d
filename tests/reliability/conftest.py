"""Fixtures for the fault-injection suite: a newsletter with one stored day and many subscribers,
and `figure`, which prints each test's headline numbers where plain `pytest` (and CI) shows them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest

from newsletter.config import Settings
from newsletter.pipeline import Newsletter
from tests.conftest import FIXTURES, SAMPLE_DATA

DAY = date(2026, 2, 11)
NEXT_DAY = date(2026, 2, 12)
_FIGURES = pytest.StashKey[list[str]]()


def reader(i: int) -> str:
    return f"reader{i:05d}@example.org"


@pytest.fixture
def figure(
    capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> Callable[[str], None]:
    """Show a figure now (capture is bypassed) and again in the end-of-run summary."""

    def show(text: str) -> None:
        line = f"{request.node.name}: {text}"
        with capsys.disabled():
            print(f"\n  [figure] {line}", flush=True)
        request.config.stash.setdefault(_FIGURES, []).append(line)

    return show


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(_FIGURES, [])
    if lines:
        terminalreporter.section("reliability figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def newsletter_with(
    make_newsletter: Callable[..., Newsletter],
) -> Iterator[Callable[..., Newsletter]]:
    """A newsletter whose sample day is stored and that has `subscribers` readers, each
    wanting the top papers (so every one of them is planned a digest)."""

    def make(
        subscribers: int, *, days: tuple[date, ...] = (DAY,), **settings: object
    ) -> Newsletter:
        app = make_newsletter(**settings)
        for day in days:
            app.fetch(day, str(SAMPLE_DATA / f"{day}.json"))
        app.store.add_subscribers([reader(i) for i in range(subscribers)])
        return app

    yield make


def cli_env(settings: Settings, **extra: object) -> dict[str, str]:
    """The environment that makes a `newsletter` subprocess use the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    values: dict[str, object] = {
        "NEWSLETTER_CONFIG": FIXTURES / "empty.toml",
        "NEWSLETTER_DATABASE_URL": settings.database_url,
        "NEWSLETTER_SECRET_KEY": settings.secret_key.get_secret_value(),
        "NEWSLETTER_BASE_URL": settings.base_url,
        "NEWSLETTER_FROM": settings.from_address,
        "NEWSLETTER_SMTP_HOST": settings.smtp_host,
        "NEWSLETTER_SMTP_PORT": settings.smtp_port,
        "NEWSLETTER_SMTP_CONNECTIONS": settings.smtp_connections,
        "NEWSLETTER_RETRY_BASE_SECONDS": settings.retry_base_seconds,
        "NEWSLETTER_RETRY_WAIT_SECONDS": settings.retry_wait_seconds,
        "NEWSLETTER_LEASE_SECONDS": settings.lease_seconds,
        "NEWSLETTER_MAX_ATTEMPTS": settings.max_attempts,
    }
    values.update({f"NEWSLETTER_{k.upper()}": v for k, v in extra.items()})
    env.update({k: str(v) for k, v in values.items()})
    return env


def newsletter_bin() -> str:
    """The installed `newsletter` script next to the running interpreter."""
    import sys

    candidate = Path(sys.executable).with_name("newsletter")
    return str(candidate) if candidate.exists() else "newsletter"

"""Fixtures for the fault-injection suite: a newsletter with one stored day and many subscribers,
`smtp_client`, which runs a test once per SMTP client (and relay) the sender can be set to, and
`figure`, which prints each test's headline numbers where plain `pytest` (and CI) shows them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from newsletter.config import Settings
from newsletter.root import Newsletter
from tests.conftest import FIXTURES, SAMPLE_DATA
from tests.loaders import add_subscribers
from tests.reliability.faulty_smtp import Authenticator, FaultyHandler, FaultyServer

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


@dataclass(frozen=True)
class SmtpClient:
    """One way of talking SMTP that a fault must be survived by: the `smtp_client` setting,
    and whether the test relay offers PIPELINING to it."""

    setting: str
    pipelining: bool

    def relay(
        self, handler: FaultyHandler, authenticator: Authenticator | None = None
    ) -> FaultyServer:
        """A FaultyServer for `handler`, offering PIPELINING or not as this case needs."""
        handler.pipelining = self.pipelining
        return FaultyServer(handler, authenticator)


AIOSMTPLIB = pytest.param(SmtpClient("aiosmtplib", pipelining=True), id="aiosmtplib")
PIPELINED = pytest.param(SmtpClient("pipelined", pipelining=True), id="pipelined")
# The pipelined client against a relay without PIPELINING: its one-command-at-a-time fallback.
PIPELINED_FALLBACK = pytest.param(
    SmtpClient("pipelined", pipelining=False), id="pipelined-no-PIPELINING"
)
# For the slow tests (a kill -9, a locked database) that only need each client once.
BOTH_CLIENTS = [AIOSMTPLIB, PIPELINED]


@pytest.fixture(params=[AIOSMTPLIB, PIPELINED, PIPELINED_FALLBACK])
def smtp_client(request: pytest.FixtureRequest) -> SmtpClient:
    """Runs the test once per client; a module narrows the list with
    `@pytest.mark.parametrize("smtp_client", BOTH_CLIENTS, indirect=True)`."""
    # Not an isinstance check: pytest loads this file as a conftest and the test modules
    # import it again as tests.reliability.conftest, so the class exists twice.
    client: SmtpClient = request.param
    return client


@pytest.fixture
def newsletter_with(
    make_newsletter: Callable[..., Newsletter], request: pytest.FixtureRequest
) -> Iterator[Callable[..., Newsletter]]:
    """A newsletter whose sample day is stored and that has `subscribers` readers, each
    wanting the top papers (so every one of them is planned a digest).

    In a test that uses `smtp_client`, the newsletter sends with that client."""
    client: SmtpClient | None = None
    if "smtp_client" in request.fixturenames:
        client = request.getfixturevalue("smtp_client")

    def make(
        subscribers: int, *, days: tuple[date, ...] = (DAY,), **settings: object
    ) -> Newsletter:
        if client is not None:
            settings.setdefault("smtp_client", client.setting)
        app = make_newsletter(**settings)
        for day in days:
            app.fetch(day, str(SAMPLE_DATA / f"{day}.json"))
        add_subscribers(app.store, [reader(i) for i in range(subscribers)])
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
        "NEWSLETTER_SEND_PROCESSES": settings.send_processes,
        "NEWSLETTER_SMTP_CLIENT": settings.smtp_client,
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

"""Shared fixtures: real SQLite files, the machine's PostgreSQL when configured, and a real SMTP
server (aiosmtpd) on loopback."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from newsletter.capture import CaptureServer
from newsletter.config import Settings, load_settings
from newsletter.root import Newsletter

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SAMPLE_DATA = ROOT / "newsletter" / "sample_data"
POSTGRES_ENV = "NEWSLETTER_TEST_POSTGRES_URL"
TEST_SECRET = "test-secret-" + "x" * 32

# The loopback HTTP server fixture (`server`) for tests of the sources' network code.
pytest_plugins = ["tests.local_http"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings from the developer's shell or working directory must not leak into tests."""
    for name in list(os.environ):
        if name.startswith("NEWSLETTER_") and not name.startswith("NEWSLETTER_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(FIXTURES / "empty.toml"))


@pytest.fixture
def smtp_server() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(
            f"PostgreSQL tests need {POSTGRES_ENV} (e.g. postgresql://postgres@127.0.0.1/test)"
        )
    from sqlalchemy import create_engine, text

    from newsletter.store.engine import normalise_url

    name = f"newsletter_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalise_url(base), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on a real SQLite file and on the machine's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'newsletter.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": f"sqlite:///{tmp_path / 'newsletter.db'}",
            "secret_key": TEST_SECRET,
            "base_url": "https://papers.example.org",
            "from_address": "Trending Papers <digest@papers.example.org>",
            "smtp_host": "127.0.0.1",
            "smtp_port": 1,
            # One process unless a test asks for more: the default follows the machine's cores.
            "send_processes": 1,
            "retry_base_seconds": 0.05,
            "retry_wait_seconds": 5,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
def make_newsletter(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Newsletter]]:
    """A Newsletter on an initialised database; closed after the test."""
    opened: list[Newsletter] = []

    def make(**overrides: Any) -> Newsletter:
        app = Newsletter(make_settings(**overrides))
        app.store.upgrade()
        opened.append(app)
        return app

    yield make
    for app in opened:
        app.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI every test must run: a skip there means a missing service, not a passing test."""
    if not os.environ.get("NEWSLETTER_TEST_NO_SKIPS"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(
            f"NEWSLETTER_TEST_NO_SKIPS is set and {len(skipped)} tests were skipped: failing",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

"""The environment a test runs the `newsletter` command in: its own SQLite file and SMTP port,
and nothing from the developer's shell."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import FIXTURES, TEST_SECRET

BASE_URL = "https://papers.example.org"


def environment(tmp: Path, smtp_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_CONFIG=str(FIXTURES / "empty.toml"),
        NEWSLETTER_DATABASE_URL=f"sqlite:///{tmp / 'newsletter.db'}",
        NEWSLETTER_SECRET_KEY=TEST_SECRET,
        NEWSLETTER_SMTP_HOST="127.0.0.1",
        NEWSLETTER_SMTP_PORT=str(smtp_port),
        NEWSLETTER_BASE_URL=BASE_URL,
        NEWSLETTER_FROM="Trending Papers <digest@papers.example.org>",
        NEWSLETTER_RETRY_BASE_SECONDS="0.05",
        NEWSLETTER_RETRY_WAIT_SECONDS="5",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra)
    return env

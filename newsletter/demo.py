"""`newsletter demo`: the whole pipeline offline on the bundled sample days.

A fresh SQLite file, the sample days, a handful of subscribers with different interests, an
embedded SMTP server that captures the mail, three days sent in order, and a table showing who got
how many papers each day with no paper repeated.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from newsletter.capture import CaptureHandler, CaptureServer
from newsletter.config import DEMO_SECRET_KEY, load_settings
from newsletter.errors import NewsletterError
from newsletter.relevance.state import ReaderWords
from newsletter.root import Newsletter, SendReport
from newsletter.states import DeliveryStatus

SAMPLE_DATA = Path(__file__).resolve().parent / "sample_data"

DEMO_SUBSCRIBERS: list[tuple[str, list[str], list[str]]] = [
    ("ada@example.org", ["compilers", "code-generation"], []),
    ("grace@example.org", ["quantization-compression", "llm-inference"], []),
    ("alan@example.org", ["diffusion-flows"], ["rectified flow"]),
    ("barbara@example.org", [], []),  # no interests: the day's top papers
    ("edsger@example.org", [], ["database", "query"]),
]
# A reader who only says, in their own words, what they work on: chosen by meaning.
DEMO_READER = (
    "marie@example.org",
    "I keep large models training and serving on many GPUs: memory offloading, overlapping "
    "communication with compute, surviving failed machines.",
)


def sample_days() -> list[tuple[date, Path]]:
    files = sorted(SAMPLE_DATA.glob("*.json"))
    if not files:
        raise NewsletterError(f"no sample data in {SAMPLE_DATA}")
    return [(date.fromisoformat(f.stem), f) for f in files]


@dataclass
class DemoResult:
    workdir: Path
    days: list[date]
    reports: list[SendReport]
    table: dict[str, dict[date, str]]
    repeats: int
    messages: int


def run_demo(workdir: Path, echo: Callable[[str], None] = print) -> DemoResult:
    workdir = workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    mail_dir = workdir / "mail"
    mail_dir.mkdir(parents=True)
    handler = CaptureHandler(folder=mail_dir)
    with CaptureServer(handler) as server:
        settings = load_settings(
            database_url=f"sqlite:///{workdir / 'newsletter.db'}",
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_tls="none",
            smtp_user=None,
            base_url="http://localhost:8000",
            secret_key=DEMO_SECRET_KEY,
            from_address="Trending Papers <papers@localhost.localdomain>",
            retry_wait_seconds=5,
        )
        newsletter = Newsletter(settings, demo=True)
        try:
            newsletter.store.upgrade()
            echo(f"database   {workdir / 'newsletter.db'}")
            echo(f"smtp       capture server on 127.0.0.1:{server.port}")
            for email, topics, keywords in DEMO_SUBSCRIBERS:
                newsletter.subscriptions.add(email, topics, keywords)
            reader, about = DEMO_READER
            newsletter.subscriptions.add(reader, [], [], ReaderWords(about=about))
            days = sample_days()
            reports = []
            for day, path in days:
                fetched = newsletter.fetch(day, str(path))
                report = asyncio.run(newsletter.send(day))
                reports.append(report)
                echo(
                    f"{day}  {fetched.stored} papers listed, {report.drain.sent} digests sent, "
                    f"{sum(report.plan.skipped.values())} skipped"
                )
            table, repeats = _history(newsletter, [d for d, _ in days])
        finally:
            newsletter.close()
    return DemoResult(workdir, [d for d, _ in days], reports, table, repeats, len(handler.messages))


def _history(newsletter: Newsletter, days: list[date]) -> tuple[dict[str, dict[date, str]], int]:
    """Papers per subscriber per day, and how many papers anyone got twice (must be 0)."""
    table: dict[str, dict[date, str]] = {}
    repeats = 0
    for subscriber in newsletter.store.subscribers.all():
        seen: set[str] = set()
        row: dict[date, str] = {}
        for delivery in newsletter.store.reports.deliveries_for(subscriber.email):
            sent = delivery.status == DeliveryStatus.SENT
            papers = delivery.paper_ids
            row[delivery.digest_date] = (
                str(len(papers)) if sent else f"- ({delivery.reason or delivery.status})"
            )
            repeats += len(seen & set(papers)) if sent else 0
            seen.update(papers if sent else [])
        table[subscriber.email] = row
    return table, repeats


def format_table(result: DemoResult) -> str:
    width = max(len(email) for email in result.table) + 2
    header = "subscriber".ljust(width) + "".join(f"{d.isoformat():<26}" for d in result.days)
    lines = [header, "-" * len(header.rstrip())]
    for email, row in result.table.items():
        cells = "".join(f"{row.get(d, '-'):<26}" for d in result.days)
        lines.append(email.ljust(width) + cells)
    return "\n".join(lines)

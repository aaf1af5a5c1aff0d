"""The daily pipeline end to end: sample days through a real SMTP server, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import date
from typing import Any

from newsletter.capture import CaptureHandler, CaptureServer
from newsletter.root import Newsletter
from newsletter.send.senders import MemorySender
from tests.conftest import SAMPLE_DATA
from tests.loaders import bulk_add_subscribers

DAYS = [date(2026, 2, 11), date(2026, 2, 12), date(2026, 2, 13)]


def paper_ids_in(message_text: str) -> set[str]:
    import re

    return set(re.findall(r"https://huggingface\.co/papers/(\d{4}\.\d{5})", message_text))


def test_three_overlapping_days_reach_each_subscriber_once_per_paper(
    make_newsletter: Callable[..., Newsletter], smtp_server: CaptureServer, database_url: str
) -> None:
    app = make_newsletter(database_url=database_url, smtp_port=smtp_server.port)
    app.store.subscribers.upsert("ada@example.org", ["compilers"], [])
    app.store.subscribers.upsert("top@example.org", [], [])
    app.store.subscribers.upsert("db@example.org", [], ["query"])

    received: dict[str, list[set[str]]] = defaultdict(list)
    for day in DAYS:
        app.fetch(day, str(SAMPLE_DATA / f"{day}.json"))
        before = len(smtp_server.messages)
        report = asyncio.run(app.send(day))
        assert report.drain.stopped is None
        for message in smtp_server.messages[before:]:
            body = message.parsed().get_body(preferencelist=("plain",))
            assert body is not None
            received[message.recipients[0]].append(paper_ids_in(body.get_content()))

    for email, digests in received.items():
        all_ids = [pid for digest in digests for pid in digest]
        assert len(all_ids) == len(set(all_ids)), f"{email} got a paper twice"
    assert len(received["top@example.org"]) == 3
    assert all(len(d) == 10 for d in received["top@example.org"][:2])
    # "query" matches one paper on the first day and, by its word form "queries", one on the
    # second; that one is the third day's only match again, so that day is a recorded skip.
    assert received["db@example.org"] == [{"2502.03896"}, {"2510.09593"}]
    summary = app.store.reports.day_summary(DAYS[2])
    # Skipped that day: db, and ada, whose compiler papers of the third day were all sent before.
    assert len(received["ada@example.org"]) == 2
    assert summary.skipped_by_reason == {"nothing_new": 2}

    # Re-running a day sends nothing new.
    before = len(smtp_server.messages)
    again = asyncio.run(app.send(DAYS[2]))
    assert again.plan.queued == 0 and again.drain.sent == 0
    assert len(smtp_server.messages) == before


def test_concurrent_fetches_of_overlapping_days_store_every_paper_once(
    make_newsletter: Callable[..., Newsletter], database_url: str
) -> None:
    import threading

    app = make_newsletter(database_url=database_url)
    other = Newsletter(app.settings)  # a second process's worth of connections
    errors: list[BaseException] = []

    def fetch(newsletter: Newsletter, day: date) -> None:
        try:
            newsletter.fetch(day, str(SAMPLE_DATA / f"{day}.json"))
        except BaseException as exc:  # collected: a thread's failure must fail the test
            errors.append(exc)

    threads = [
        threading.Thread(target=fetch, args=(a, d)) for a, d in ((app, DAYS[0]), (other, DAYS[1]))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.close()
    assert errors == []
    first, second = app.store.papers.day_papers(DAYS[0]), app.store.papers.day_papers(DAYS[1])
    assert len(first) == 25 and len(second) == 25
    assert len({p.id for p in first} & {p.id for p in second}) == 10


class PeerRecordingHandler(CaptureHandler):
    """Also notes which client connection (peer address) each message came over."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: list[object] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.peers.append(session.peer)
        return await super().handle_DATA(server, session, envelope)


def test_send_in_three_processes_delivers_every_digest_exactly_once(
    make_newsletter: Callable[..., Newsletter], database_url: str
) -> None:
    handler = PeerRecordingHandler()
    with CaptureServer(handler) as server:
        app = make_newsletter(
            database_url=database_url, smtp_port=server.port, smtp_connections=2, batch_size=200
        )
        topics = [[], ["compilers"], ["agents"], ["reasoning", "llm-inference"]]
        bulk_add_subscribers(
            app.store,
            ((f"reader{i}@example.org", topics[i % len(topics)], []) for i in range(1500)),
        )
        day = DAYS[2]
        app.fetch(day, str(SAMPLE_DATA / f"{day}.json"))
        report = asyncio.run(app.send(day, now=True, processes=3))

    assert report.drain.stopped is None and not report.drain.failed
    assert report.plan.queued > 1000
    assert report.drain.sent == report.plan.queued == len(server.messages)
    recipients = [m.recipients[0] for m in server.messages]
    assert len(set(recipients)) == len(recipients), "a subscriber got the digest twice"
    # Each process keeps its own 2 connections: more than 2 means others sent too.
    assert len(set(handler.peers)) > 2
    assert app.store.reports.day_summary(day).by_status["sent"] == report.plan.queued


def test_a_drain_waits_for_the_deliveries_of_a_plan_still_running(
    make_newsletter: Callable[..., Newsletter], database_url: str
) -> None:
    app = make_newsletter(database_url=database_url)
    bulk_add_subscribers(app.store, ((f"reader{i}@example.org", [], []) for i in range(50)))
    day = DAYS[0]
    app.fetch(day, str(SAMPLE_DATA / f"{day}.json"))
    sender = MemorySender()
    # Nothing is planned yet: without a planner to wait for, a drain ends at once.
    assert asyncio.run(app.drain(MemorySender())).sent == 0

    async def plan_later_while_draining() -> int:
        planned = asyncio.Event()

        async def plan() -> None:
            await asyncio.sleep(0.3)
            await asyncio.to_thread(app.plan, day, immediately=True)
            planned.set()

        planner = asyncio.create_task(plan())
        report = await app.drain(sender, planning=lambda: not planned.is_set())
        await planner
        return report.sent

    assert asyncio.run(plan_later_while_draining()) == 50
    assert len({e.recipient for e in sender.outbox}) == 50

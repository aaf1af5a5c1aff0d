"""Scale-out on PostgreSQL: many workers claim with FOR UPDATE SKIP LOCKED and leases; a day is
planned once however many planners race; a dead worker's claims go to the others at once, a
live one's never. On SQLite a second sender is refused."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from newsletter.capture import CaptureHandler, CaptureServer
from newsletter.errors import SenderBusy
from newsletter.root import Newsletter
from newsletter.store import Store
from tests.conftest import SAMPLE_DATA
from tests.loaders import add_subscribers
from tests.reliability.conftest import cli_env, newsletter_bin, reader

DAY = date(2026, 2, 11)


class StallingHandler(CaptureHandler):
    """Accepts mail, but holds every DATA while `stall` is set (a relay that hangs)."""

    def __init__(self) -> None:
        super().__init__()
        self.stall = threading.Event()
        self.stalled = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.stall.is_set():
            self.stalled += 1
            while self.stall.is_set():
                await asyncio.sleep(0.05)
            return "451 4.3.0 try again"  # never accepted while stalled
        return await super().handle_DATA(server, session, envelope)


def per_recipient(server: CaptureServer) -> Counter[str]:
    return Counter(m.recipients[0] for m in server.messages)


def planned_newsletter(
    make_newsletter: Callable[..., Newsletter],
    url: str,
    port: int,
    subscribers: int,
    **settings: Any,
) -> Newsletter:
    app = make_newsletter(database_url=url, smtp_port=port, **settings)
    app.fetch(DAY, str(SAMPLE_DATA / f"{DAY}.json"))
    add_subscribers(app.store, [reader(i) for i in range(subscribers)])
    app.plan(DAY)
    return app


def test_four_workers_drain_4000_deliveries_with_none_lost_or_repeated(
    make_newsletter: Callable[..., Newsletter], postgres_url: str, smtp_server: CaptureServer
) -> None:
    app = planned_newsletter(
        make_newsletter, postgres_url, smtp_server.port, 4000, batch_size=100, smtp_connections=4
    )
    env = cli_env(app.settings)
    started = time.monotonic()
    workers = [
        subprocess.Popen(
            [newsletter_bin(), "worker", "--burst"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [w.communicate(timeout=240) for w in workers]
    elapsed = time.monotonic() - started
    assert all(w.returncode == 0 for w in workers), outputs
    counts = per_recipient(smtp_server)
    sent_by = [int(out.rsplit("sent ", 1)[1]) for out, _ in outputs]
    print(
        f"\n  [figure] 4 workers, 4000 deliveries in {elapsed:.1f}s; per worker {sent_by}; "
        f"lost {4000 - len(counts)}, duplicated {sum(c - 1 for c in counts.values())}"
    )
    assert len(counts) == 4000, "some subscribers got nothing"
    assert max(counts.values()) == 1, "someone got the digest twice"
    assert sum(1 for n in sent_by if n > 0) >= 2, "the workers did not share the work"
    assert app.store.reports.day_summary(DAY).by_status == {"sent": 4000}


def test_racing_planners_create_one_run(
    make_newsletter: Callable[..., Newsletter], postgres_url: str, smtp_server: CaptureServer
) -> None:
    app = planned_newsletter(make_newsletter, postgres_url, smtp_server.port, 0)
    add_subscribers(app.store, [reader(i) for i in range(500)])
    env = cli_env(app.settings)
    planners = [
        subprocess.Popen(
            [newsletter_bin(), "plan", "--date", str(DAY), "--now"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in planners]
    assert all(p.returncode == 0 for p in planners), outputs
    summary = app.store.reports.day_summary(DAY)
    assert sum(summary.by_status.values()) == 500, "a subscriber was planned twice or not at all"
    queued = [int(out.split("queue")[1].split()[1]) for out, _ in outputs]
    assert sum(queued) == 500, queued  # each planned subscriber counted by exactly one planner


def test_a_live_senders_leases_are_never_taken_and_a_gone_ones_are_taken_at_once(
    make_newsletter: Callable[..., Newsletter], postgres_url: str, smtp_server: CaptureServer
) -> None:
    app = planned_newsletter(make_newsletter, postgres_url, smtp_server.port, 30)
    first, second = Store(postgres_url), Store(postgres_url)  # two sending processes' stores
    try:
        held = {d.id for d in first.outbox.claim(10, 300)}
        taken = {d.id for d in second.outbox.claim(100, 300)}
        assert len(held) == 10 and len(taken) == 20 and not held & taken
        leases = app.store.outbox.leases()
        assert (leases.held, leases.orphaned) == (30, 0)
        assert second.outbox.leases_held()[0] == 10  # first's, not its own
        assert second.outbox.claim(100, 300) == []  # alive: its leases are left to it

        first.close()  # the process ends: its lock goes with its connection

        assert app.store.outbox.leases().orphaned == 10
        again = second.outbox.claim(100, 300)
        assert {d.id for d in again} == held
        assert all(d.attempts == 2 for d in again)
        assert second.outbox.leases_held() == (0, None)
    finally:
        first.close()
        second.close()


def test_a_killed_workers_claims_are_sent_by_another_at_once(
    make_newsletter: Callable[..., Newsletter], postgres_url: str
) -> None:
    handler = StallingHandler()
    with CaptureServer(handler) as server:
        app = planned_newsletter(
            make_newsletter,
            postgres_url,
            server.port,
            300,
            batch_size=50,
            lease_seconds=300,  # far longer than the test may take: taken over, not waited for
            retry_wait_seconds=1,
            smtp_connections=4,
        )
        env = cli_env(app.settings)
        handler.stall.set()
        doomed = subprocess.Popen(
            [newsletter_bin(), "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while handler.stalled < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        held = app.store.reports.day_summary(DAY).by_status.get("sending", 0)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait()
        handler.stall.clear()
        assert held > 0, "the first worker never held a lease"
        started = time.monotonic()
        rescuer = subprocess.run(
            [newsletter_bin(), "worker", "--burst"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        rescue_seconds = time.monotonic() - started
        assert rescuer.returncode == 0, rescuer.stderr
        counts = per_recipient(server)
    print(
        f"\n  [figure] worker killed holding {held} leases; the other took them over and sent "
        f"{len(counts)}/300 in {rescue_seconds:.1f}s, duplicates "
        f"{sum(c - 1 for c in counts.values())}"
    )
    assert len(counts) == 300
    assert max(counts.values()) == 1


def test_sqlite_allows_one_sender_at_a_time(make_newsletter: Callable[..., Newsletter]) -> None:
    app = make_newsletter()
    with app.store.outbox.exclusive_sender():
        with pytest.raises(SenderBusy, match="one at a time"), app.store.outbox.exclusive_sender():
            pass
        second = subprocess.run(
            [newsletter_bin(), "worker", "--burst"],
            env=cli_env(app.settings),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert second.returncode == 1
    assert "another sender is already running" in second.stderr
    assert "Traceback" not in second.stderr
    with app.store.outbox.exclusive_sender():  # released: free again
        pass


def test_a_claim_takes_no_more_than_its_limit(
    make_newsletter: Callable[..., Newsletter], postgres_url: str, smtp_server: CaptureServer
) -> None:
    # A claim bigger than its limit outlives its lease math and starves the other workers (one
    # worker once took a whole day while a second sat idle).
    app = planned_newsletter(make_newsletter, postgres_url, smtp_server.port, 300)
    sizes = [len(app.store.outbox.claim(20, 300)) for _ in range(5)]
    assert sizes == [20] * 5
    assert app.store.reports.day_summary(DAY).by_status == {"sending": 100, "queued": 200}

"""The database failing under a running send: a SQLite file locked by another process's
transaction, and every PostgreSQL connection of the sender killed by the server.

Either way no subscriber may be lost and nothing may be marked sent that the relay did not
accept; the run should ride through (SQLite's busy timeout, reconnecting with pool_pre_ping and
the delivery loop trying a failed store call again).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import create_engine, text

from newsletter.root import Newsletter
from newsletter.states import DeliveryStatus
from newsletter.store.engine import normalise_url
from tests.reliability.conftest import BOTH_CLIENTS, DAY, SmtpClient
from tests.reliability.faulty_smtp import FaultyHandler

SUBSCRIBERS = 600
LOCK_SECONDS = 3.0
# Each SMTP client once: the fallback without PIPELINING adds nothing to what this proves.
pytestmark = pytest.mark.parametrize("smtp_client", BOTH_CLIENTS, indirect=True)


def test_sqlite_file_locked_mid_run_is_waited_out(
    smtp_client: SmtpClient,
    newsletter_with: Callable[..., Newsletter],
    figure: Callable[[str], None],
    tmp_path: object,
) -> None:
    lock_at = SUBSCRIBERS // 3
    locker: dict[str, threading.Thread] = {}
    held = threading.Event()

    def hold_exclusive_lock(path: str) -> None:
        connection = sqlite3.connect(path, isolation_level=None, timeout=30)
        connection.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(LOCK_SECONDS)
        connection.execute("COMMIT")
        connection.close()

    def lock_database(total: int) -> None:
        if total == lock_at:
            locker["thread"] = threading.Thread(target=hold_exclusive_lock, args=(path,))
            locker["thread"].start()

    handler = FaultyHandler(on_accept=lock_database)
    with smtp_client.relay(handler) as server:
        app = newsletter_with(SUBSCRIBERS, smtp_port=server.port)
        path = app.settings.database_url.removeprefix("sqlite:///")
        started = time.monotonic()
        report = asyncio.run(app.send(DAY)).drain
        seconds = time.monotonic() - started
        locker["thread"].join()

    summary = app.store.reports.day_summary(DAY)
    planned = summary.by_status[DeliveryStatus.SENT] + summary.by_status[DeliveryStatus.QUEUED]
    figure(
        f"SQLite file locked (BEGIN EXCLUSIVE) for {LOCK_SECONDS:.0f}s at {lock_at}/{planned}: "
        f"lost {planned - len(handler.accepted)}, duplicates {len(handler.duplicates())}, "
        f"run {seconds:.1f}s, stopped: {report.stopped}"
    )
    assert held.is_set()
    assert report.stopped is None
    assert summary.by_status[DeliveryStatus.SENT] == len(handler.accepted) == planned
    assert not handler.duplicates()


STORM_SECONDS = 1.5


@pytest.mark.postgres
def test_postgresql_connections_killed_mid_run_lose_nobody(
    smtp_client: SmtpClient,
    newsletter_with: Callable[..., Newsletter],
    figure: Callable[[str], None],
    postgres_url: str,
) -> None:
    storm_at = SUBSCRIBERS // 3
    admin = create_engine(normalise_url(postgres_url), isolation_level="AUTOCOMMIT")
    database = postgres_url.rsplit("/", 1)[1]
    killed: list[int] = []
    storm: dict[str, threading.Thread] = {}

    def terminate_sender_connections() -> None:
        # For a while, kill every connection to the test database but our own, every 20 ms:
        # idle pooled ones (pool_pre_ping's case) and ones in the middle of a query or commit
        # (the delivery loop's retry's case).
        deadline = time.monotonic() + STORM_SECONDS
        with admin.connect() as conn:
            while time.monotonic() < deadline:
                killed.extend(
                    conn.scalars(
                        # MATERIALIZED: the planner must not try pg_terminate_backend on our
                        # own pid before the filter that excludes it.
                        text(
                            "WITH targets AS MATERIALIZED (SELECT pid FROM pg_stat_activity "
                            "WHERE datname = :db AND pid <> pg_backend_pid()) "
                            "SELECT pid FROM targets WHERE pg_terminate_backend(pid)"
                        ),
                        {"db": database},
                    )
                )
                time.sleep(0.02)

    def start_storm(total: int) -> None:
        if total == storm_at:
            storm["thread"] = threading.Thread(target=terminate_sender_connections)
            storm["thread"].start()

    handler = FaultyHandler(on_accept=start_storm)
    try:
        with smtp_client.relay(handler) as server:
            app = newsletter_with(SUBSCRIBERS, smtp_port=server.port, database_url=postgres_url)
            report = asyncio.run(app.send(DAY)).drain
            storm["thread"].join()
    finally:
        admin.dispose()

    summary = app.store.reports.day_summary(DAY)
    planned = sum(summary.by_status.values()) - summary.by_status[DeliveryStatus.SKIPPED]
    duplicates = handler.duplicates()
    figure(
        f"PostgreSQL: {len(killed)} sender connections terminated over {STORM_SECONDS}s from "
        f"{storm_at}/{planned}: lost {planned - len(handler.accepted)}, "
        f"duplicates {len(duplicates)}, store calls retried {report.store_retries}, "
        f"stopped: {report.stopped}"
    )
    assert killed
    assert report.stopped is None
    assert summary.by_status[DeliveryStatus.SENT] == len(handler.accepted) == planned
    assert not duplicates

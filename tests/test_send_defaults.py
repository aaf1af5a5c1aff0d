"""The shipped sending defaults: chosen from the machine unless set, and a relay that allows
fewer connections than configured is sent to over the ones it accepts instead of failing."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from sqlalchemy import text

from newsletter.capture import CaptureHandler, free_port
from newsletter.config import DEFAULT_SMTP_CONNECTIONS, MAX_DEFAULT_PROCESSES, load_settings
from newsletter.root import Newsletter
from tests.conftest import SAMPLE_DATA
from tests.loaders import bulk_add_subscribers

DAY = date(2026, 2, 13)


def test_defaults_follow_the_usable_cores() -> None:
    settings = load_settings()
    cores = len(os.sched_getaffinity(0))
    assert settings.send_processes == min(cores, MAX_DEFAULT_PROCESSES)
    assert settings.smtp_connections == DEFAULT_SMTP_CONNECTIONS


def test_an_explicit_setting_wins_over_the_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "newsletter.toml"
    config.write_text("send_processes = 3\nsmtp_connections = 5\n")
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(config))
    assert (load_settings().send_processes, load_settings().smtp_connections) == (3, 5)
    monkeypatch.setenv("NEWSLETTER_SEND_PROCESSES", "1")
    assert load_settings().send_processes == 1
    assert load_settings(send_processes=7).send_processes == 7


class LimitedSMTP(SMTP):
    """Answers 421 to every connection beyond `limit` open at once, as Postfix does past
    smtpd_client_connection_count_limit, and hangs up."""

    def __init__(self, handler: Any, relay: LimitedRelay, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.relay = relay
        self.counted = False

    def connection_made(self, transport: Any) -> None:
        relay = self.relay
        with relay.lock:
            if relay.open >= relay.limit:
                relay.refused += 1
                transport.write(b"421 4.7.0 Error: too many connections from 127.0.0.1\r\n")
                transport.close()
                return
            relay.open += 1
            relay.most = max(relay.most, relay.open)
            self.counted = True
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if not self.counted:
            return
        with self.relay.lock:
            self.relay.open -= 1
        super().connection_lost(error)


class LimitedRelay(Controller):
    def __init__(self, limit: int) -> None:
        self.limit, self.open, self.most, self.refused = limit, 0, 0, 0
        self.lock = threading.Lock()
        self.capture = CaptureHandler()
        self.port = free_port()
        super().__init__(self.capture, hostname="127.0.0.1", port=self.port)

    def factory(self) -> SMTP:
        return LimitedSMTP(self.handler, self, **self.SMTP_kwargs)


@pytest.mark.parametrize("client", ["pipelined", "aiosmtplib"])
def test_a_relay_that_refuses_extra_connections_gets_every_digest_over_the_rest(
    make_newsletter: Callable[..., Newsletter], client: str
) -> None:
    relay = LimitedRelay(limit=2)
    relay.start()
    try:
        app = make_newsletter(
            smtp_port=relay.port, smtp_client=client, smtp_connections=8, send_processes=1
        )
        bulk_add_subscribers(app.store, ((f"reader{i}@example.org", [], []) for i in range(120)))
        app.fetch(DAY, str(SAMPLE_DATA / f"{DAY}.json"))
        report = asyncio.run(app.send(DAY, now=True))
        with app.store.engine.connect() as conn:
            attempts = conn.execute(text("SELECT max(attempts) FROM deliveries")).scalar()
    finally:
        relay.stop()

    assert report.drain.stopped is None and not report.drain.failed
    assert attempts == 1, "a refused connection cost a delivery an attempt"
    assert report.drain.sent == report.plan.queued == 120 == len(relay.capture.messages)
    assert relay.refused >= 1, "the relay was never asked for more than it allows"
    assert relay.most <= 2

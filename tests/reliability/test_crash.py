"""kill -9 of the sending process a third of the way through, then a plain re-run at once.

The sender is a real `newsletter send` subprocess; the SMTP server in this process kills it the
moment it has accepted a third of the messages, so the crash lands mid-batch with messages on
the wire. Invariant 2: nobody is lost, and the only duplicates are messages the relay accepted
but the dead process never recorded, each re-sent with its original Message-ID. And the re-run
finishes the day at once: the dead sender's leases (5 minutes long here) are taken over, not
waited for (on SQLite the re-run holds the sender lock, so no other sender lives; on PostgreSQL
the dead sender's advisory lock died with its connection).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from newsletter.root import Newsletter
from newsletter.states import DeliveryStatus
from tests.reliability.conftest import BOTH_CLIENTS, DAY, SmtpClient, cli_env, newsletter_bin
from tests.reliability.faulty_smtp import FaultyHandler

SUBSCRIBERS = 3000
# Each SMTP client once: the fallback without PIPELINING adds nothing to what this proves.
pytestmark = pytest.mark.parametrize("smtp_client", BOTH_CLIENTS, indirect=True)


def settle(handler: FaultyHandler) -> None:
    """Wait until the server has finished the messages that were fully on the wire when the
    sender died: they count as accepted-but-unrecorded, so they must be counted now."""
    last = -1
    while handler.total != last:
        last = handler.total
        time.sleep(0.3)


def test_kill_9_mid_run_loses_nobody_and_resends_only_what_was_in_flight(
    smtp_client: SmtpClient,
    newsletter_with: Callable[..., Newsletter],
    figure: Callable[[str], None],
    database_url: str,
) -> None:
    kill_at = SUBSCRIBERS // 3
    child: dict[str, subprocess.Popen[bytes]] = {}
    killed = threading.Event()

    def kill_child(total: int) -> None:
        if total == kill_at and "run" in child:
            os.kill(child["run"].pid, signal.SIGKILL)
            killed.set()

    handler = FaultyHandler(on_accept=kill_child)
    with smtp_client.relay(handler) as server:
        app = newsletter_with(
            SUBSCRIBERS,
            database_url=database_url,
            smtp_port=server.port,
            lease_seconds=300,
            # A re-run that left the leases to expire would end at once without them.
            retry_wait_seconds=1,
        )
        # Claims of 400 put the kill mid-batch, with claimed deliveries not yet sent.
        env = cli_env(app.settings, batch_size=400)
        command = [newsletter_bin(), "send", "--date", DAY.isoformat()]

        child["run"] = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        _, stderr = child["run"].communicate(timeout=60)
        assert killed.is_set(), f"the sender ended before it could be killed: {stderr!r}"
        assert child["run"].returncode == -signal.SIGKILL
        settle(handler)

        # What the dead process left behind: accepted at the relay but not recorded as sent.
        states = app.store.reports.delivery_states(DAY)
        planned = {email for email, (status, _) in states.items() if status != "skipped"}
        recorded = sum(1 for status, _ in states.values() if status == DeliveryStatus.SENT)
        leased = sum(1 for status, _ in states.values() if status == DeliveryStatus.SENDING)
        accepted_at_crash = handler.total
        in_flight = accepted_at_crash - recorded
        assert leased > 0, "the crash should leave claimed deliveries behind"
        status = subprocess.run(
            [newsletter_bin(), "status", "--date", DAY.isoformat()],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert f"left by a sender that is gone: {leased}" in status.stdout, status.stdout

        started = time.monotonic()
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=90)
        rerun_seconds = time.monotonic() - started
        assert rerun.returncode == 0, rerun.stderr
        assert f"taken over from a sender that is gone (a crash): {leased}" in rerun.stdout
        assert "still leased" not in rerun.stdout

    received = set(handler.accepted)
    duplicates = handler.duplicates()
    lost = planned - received
    figure(
        f"{app.store.dialect}: kill -9 at {accepted_at_crash}/{len(planned)}: lost {len(lost)}, "
        f"duplicates {len(duplicates)} (all same Message-ID: "
        f"{all(len(handler.message_ids[r]) == 1 for r in duplicates)}), "
        f"in flight {in_flight}, leases left {leased} (taken over at once), "
        f"re-run {rerun_seconds:.1f}s"
    )
    assert not lost
    assert received == planned  # and nobody outside the plan
    assert sum(n - 1 for n in duplicates.values()) <= in_flight
    for recipient in duplicates:
        assert len(handler.message_ids[recipient]) == 1, f"{recipient} got two Message-IDs"
    final = app.store.reports.day_summary(DAY)
    assert final.by_status[DeliveryStatus.SENT] == len(planned)
    assert set(final.by_status) <= {DeliveryStatus.SENT, DeliveryStatus.SKIPPED}

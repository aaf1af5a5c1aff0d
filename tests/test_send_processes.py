"""A `send` in several processes: the helpers end with the first process, a helper that dies
is reported rather than ending the run in a traceback, and the rate limit is shared."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from newsletter.capture import CaptureHandler, CaptureServer
from newsletter.config import load_settings
from newsletter.root import Newsletter
from newsletter.send.factory import sender_from_settings
from tests.conftest import FIXTURES, SAMPLE_DATA, TEST_SECRET
from tests.loaders import bulk_add_subscribers

DAY = "2026-02-12"


class SlowHandler(CaptureHandler):
    """Accepts every message after a pause, so that a run lasts long enough to be cut."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0.02)
        return await super().handle_DATA(server, session, envelope)


def helpers_of(pid: int) -> set[int]:
    """The send's helper processes: its spawned children, not multiprocessing's tracker."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid and b"spawn_main" in command:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_send(tmp_path: Path, port: int, subscribers: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "NEWSLETTER_CONFIG": str(FIXTURES / "empty.toml"),
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path / 'n.db'}",
        "NEWSLETTER_SECRET_KEY": TEST_SECRET,
        "NEWSLETTER_BASE_URL": "https://papers.example.org",
        "NEWSLETTER_SMTP_PORT": str(port),
        "NEWSLETTER_SMTP_CONNECTIONS": "2",
        "NEWSLETTER_LEASE_SECONDS": "5",
    }
    app = Newsletter(
        load_settings(database_url=env["NEWSLETTER_DATABASE_URL"], secret_key=TEST_SECRET)
    )
    app.store.upgrade()
    bulk_add_subscribers(app.store, ((f"r{i}@example.org", [], []) for i in range(subscribers)))
    app.fetch(date.fromisoformat(DAY), str(SAMPLE_DATA / f"{DAY}.json"))
    app.close()
    script = Path(sys.executable).with_name("newsletter")
    command = [str(script), "send", "--date", DAY, "--now"]
    return subprocess.Popen(
        [*command, "--processes", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_the_helpers_end_when_the_first_process_is_killed(tmp_path: Path) -> None:
    handler = SlowHandler()
    with CaptureServer(handler) as server:
        send = start_send(tmp_path, server.port, 400)
        try:
            assert wait_for(lambda: len(handler.messages) >= 40, 60), "nothing was sent"
            helpers = {pid for pid in helpers_of(send.pid) if alive(pid)}
            assert helpers, "no helper process was running"
            send.send_signal(signal.SIGKILL)
            send.wait(10)
            # The kernel ends them (PR_SET_PDEATHSIG); before, an orphan kept sending.
            assert wait_for(lambda: not any(alive(pid) for pid in helpers), 10)
        finally:
            if send.poll() is None:
                send.kill()
            send.communicate(timeout=10)
        sent_when_killed = len(handler.messages)
        time.sleep(0.5)
        assert len(handler.messages) == sent_when_killed  # nobody is sending any more


def test_a_helper_that_dies_is_reported_and_the_rest_is_still_sent(tmp_path: Path) -> None:
    handler = SlowHandler()
    with CaptureServer(handler) as server:
        send = start_send(tmp_path, server.port, 300)
        try:
            assert wait_for(lambda: len(handler.messages) >= 40, 60), "nothing was sent"
            [helper] = [pid for pid in helpers_of(send.pid) if alive(pid)]
            os.kill(helper, signal.SIGKILL)
            out, err = send.communicate(timeout=120)
        finally:
            if send.poll() is None:
                send.kill()
    # One line saying what happened, after the summary; no traceback.
    assert send.returncode == 1
    assert "sent:" in out
    assert "a sending process failed" in err and "Traceback" not in err
    # The first process sent the rest, the dead helper's claims once their lease expired.
    assert {m.recipients[0] for m in handler.messages} == {f"r{i}@example.org" for i in range(300)}


def test_each_process_gets_its_share_of_the_rate_limit(
    make_newsletter: Callable[..., Newsletter],
) -> None:
    app = make_newsletter(smtp_rate_limit=30.0)
    assert sender_from_settings(app.settings).config.rate_limit == 30.0  # type: ignore[attr-defined]
    assert sender_from_settings(app.settings, 3).config.rate_limit == 10.0  # type: ignore[attr-defined]
    plain = make_newsletter().settings
    assert sender_from_settings(plain, 2).config.rate_limit == 0.0  # type: ignore[attr-defined]

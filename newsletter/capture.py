"""An SMTP server that keeps what it receives: the demo's mail catcher and the tests' relay.

It is a real SMTP server (aiosmtpd) on loopback, so what it captures went through the same
client, connections and protocol as mail to a production relay.
"""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class CapturedMessage:
    sender: str
    recipients: list[str]
    data: bytes

    def parsed(self) -> email.message.EmailMessage:
        message = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        return message


@dataclass
class CaptureHandler:
    """Stores every accepted message; with `folder`, also writes each as .eml and .html."""

    folder: Path | None = None
    messages: list[CapturedMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        captured = CapturedMessage(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
        with self.lock:
            self.messages.append(captured)
        if self.folder is not None:
            self._write(captured)
        return "250 Message accepted for delivery"

    def _write(self, captured: CapturedMessage) -> None:
        message = captured.parsed()
        # Message-IDs start with the digest date (YYYYMMDD), which names the folder.
        stamp = str(message.get("Message-ID", "<unknown.")).strip("<").split(".", 1)[0]
        folder = self.folder / stamp if self.folder else Path(stamp)
        folder.mkdir(parents=True, exist_ok=True)
        name = captured.recipients[0].replace("@", "_at_")
        (folder / f"{name}.eml").write_bytes(captured.data)
        html = message.get_body(preferencelist=("html",))
        if html is not None:
            (folder / f"{name}.html").write_text(html.get_content(), encoding="utf-8")


class CaptureServer:
    """Runs aiosmtpd on 127.0.0.1 in a background thread; use as a context manager."""

    def __init__(self, handler: Any | None = None, port: int | None = None) -> None:
        self.handler = handler or CaptureHandler()
        self.port = port or free_port()
        self._controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, data_size_limit=10 * 1024 * 1024
        )

    @property
    def messages(self) -> list[CapturedMessage]:
        return list(self.handler.messages)

    def __enter__(self) -> CaptureServer:
        self._controller.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._controller.stop()

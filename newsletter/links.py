"""Signed links and Message-IDs, all built from the configured base URL.

Links are never built from a request's Host header: a forged Host must not reach a mail. Tokens
are HMACs under the secret key, so nobody can unsubscribe or read someone else's digest by
guessing ids.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import date


class Links:
    def __init__(self, base_url: str, secret_key: str, message_domain: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = secret_key.encode()
        # Keyed once and copied per use: a sender signs links for every message, and copying
        # the keyed state costs about half of keying it again.
        self._keyed = hmac.new(self._key, digestmod=hashlib.sha256)
        self.message_domain = message_domain

    def _mac(self, message: str) -> bytes:
        mac = self._keyed.copy()
        mac.update(message.encode())
        return mac.digest()

    def token(self, purpose: str, value: str) -> str:
        return base64.urlsafe_b64encode(self._mac(f"{purpose}:{value}")[:18]).decode()

    def verify(self, purpose: str, value: str, token: str) -> bool:
        return hmac.compare_digest(self.token(purpose, value), token)

    def confirmation_token(self, subscriber_id: int, issued_at: int) -> str:
        signed = f"{subscriber_id}.{issued_at}"
        return f"{signed}.{self.token('confirm', signed)}"

    def confirmation(self, subscriber_id: int, issued_at: int) -> str:
        return f"{self.base_url}/confirm/{self.confirmation_token(subscriber_id, issued_at)}"

    def check_confirmation(self, token: str, now: int, max_age: int) -> int | None:
        """The subscriber id a confirmation token was issued for, if genuine and not expired."""
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            return None
        subscriber_id, issued_at = int(parts[0]), int(parts[1])
        if not 0 <= now - issued_at <= max_age:
            return None
        if not self.verify("confirm", f"{subscriber_id}.{issued_at}", parts[2]):
            return None
        return subscriber_id

    def unsubscribe(self, subscriber_id: int) -> str:
        token = self.token("unsubscribe", str(subscriber_id))
        return f"{self.base_url}/unsubscribe/{subscriber_id}/{token}"

    def preferences(self, subscriber_id: int) -> str:
        token = self.token("preferences", str(subscriber_id))
        return f"{self.base_url}/preferences/{subscriber_id}/{token}"

    def view(self, subscriber_id: int, day: date) -> str:
        token = self.token("view", f"{subscriber_id}/{day.isoformat()}")
        return f"{self.base_url}/digest/{day.isoformat()}/{subscriber_id}/{token}"

    def archive(self, day: date | None = None) -> str:
        return f"{self.base_url}/archive" + (f"/{day.isoformat()}" if day else "")

    def home(self) -> str:
        return f"{self.base_url}/"

    def message_id(self, subscriber_id: int, day: date) -> str:
        """Unique per (subscriber, digest), the same on every retry, unguessable without the key."""
        token = self._mac(f"message-id:{subscriber_id}/{day.isoformat()}").hex()[:32]
        return f"<{day:%Y%m%d}.{token}@{self.message_domain}>"

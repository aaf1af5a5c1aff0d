"""Signed links and Message-IDs, all built from the configured base URL.

Links are never built from a request's Host header: a forged Host must not reach a mail. Tokens
are HMACs under the secret key, so nobody can unsubscribe or read someone else's digest by
guessing ids.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import date

# ASCII digits only and of bounded length: str.isdigit() accepts other scripts' digits, and
# int() refuses strings of more than 4,300 digits, which made both a server error.
# Subscriber ids are 32-bit integers in both databases: a larger one names nobody, and asking
# PostgreSQL for it would be an error rather than "not found".
MAX_SUBSCRIBER_ID = 2**31 - 1
_CONFIRMATION = re.compile(r"([0-9]{1,10})\.([0-9]{1,12})\.([A-Za-z0-9_=-]{1,64})", re.ASCII)


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

    def token(self, purpose: str, value: str, salt: str) -> str:
        """A link's signature. `salt` is the subscriber row's own random value: a new row gets a
        new one and a deleted row takes its salt with it, so a token made for one row can
        never be valid for another, whatever ids they had."""
        return base64.urlsafe_b64encode(self._mac(f"{purpose}:{salt}:{value}")[:18]).decode()

    def verify(self, purpose: str, value: str, salt: str, token: str) -> bool:
        return hmac.compare_digest(self.token(purpose, value, salt), token)

    def verify_unsalted(self, purpose: str, value: str, token: str) -> bool:
        """A link signed the way links were before each row had a salt (see migration 0005);
        accepted only where the row says so."""
        unsalted = base64.urlsafe_b64encode(self._mac(f"{purpose}:{value}")[:18]).decode()
        return hmac.compare_digest(unsalted, token)

    def confirmation_token(self, subscriber_id: int, salt: str, issued_at: int) -> str:
        signed = f"{subscriber_id}.{issued_at}"
        return f"{signed}.{self.token('confirm', signed, salt)}"

    def confirmation(self, subscriber_id: int, salt: str, issued_at: int) -> str:
        token = self.confirmation_token(subscriber_id, salt, issued_at)
        return f"{self.base_url}/confirm/{token}"

    def confirmation_claim(self, token: str, now: int, max_age: int) -> ConfirmationClaim | None:
        """Who a confirmation token says it is for, if well formed and not expired; the
        signature is checked against that row's salt by `ConfirmationClaim.genuine`."""
        match = _CONFIRMATION.fullmatch(token)
        if match is None:
            return None
        subscriber_id, issued_at = int(match[1]), int(match[2])
        if subscriber_id > MAX_SUBSCRIBER_ID or not 0 <= now - issued_at <= max_age:
            return None
        return ConfirmationClaim(self, subscriber_id, issued_at, match[3])

    def unsubscribe_token(self, subscriber_id: int, salt: str) -> str:
        return self.token("unsubscribe", str(subscriber_id), salt)

    def unsubscribe(self, subscriber_id: int, salt: str) -> str:
        token = self.unsubscribe_token(subscriber_id, salt)
        return f"{self.base_url}/unsubscribe/{subscriber_id}/{token}"

    def resubscribe(self, subscriber_id: int, salt: str) -> str:
        token = self.unsubscribe_token(subscriber_id, salt)
        return f"{self.base_url}/resubscribe/{subscriber_id}/{token}"

    def preferences(self, subscriber_id: int, salt: str) -> str:
        token = self.token("preferences", str(subscriber_id), salt)
        return f"{self.base_url}/preferences/{subscriber_id}/{token}"

    def view_token(self, subscriber_id: int, salt: str, day: date) -> str:
        return self.token("view", f"{subscriber_id}/{day.isoformat()}", salt)

    def view(self, subscriber_id: int, salt: str, day: date) -> str:
        token = self.view_token(subscriber_id, salt, day)
        return f"{self.base_url}/digest/{day.isoformat()}/{subscriber_id}/{token}"

    def feedback_base(self, subscriber_id: int, salt: str) -> str:
        """The subscriber's "more / less like this" links without their last segments
        (`/more/{arxiv id}` or `/less/{arxiv id}`; an old-style id has a slash of its own).

        One signature covers every paper: it says who gives the feedback, and a paper named in
        the URL is checked to be a stored one. So a digest signs one value per subscriber,
        however many papers it holds, and the shared digest fills it in like the other
        personal links."""
        token = self.feedback_token(subscriber_id, salt)
        return f"{self.base_url}/feedback/{subscriber_id}/{token}"

    def feedback_token(self, subscriber_id: int, salt: str) -> str:
        return self.token("feedback", str(subscriber_id), salt)

    def feedback(self, subscriber_id: int, salt: str, paper_id: str, liked: bool) -> str:
        kind = "more" if liked else "less"
        return f"{self.feedback_base(subscriber_id, salt)}/{kind}/{paper_id}"

    def archive(self, day: date | None = None) -> str:
        return f"{self.base_url}/archive" + (f"/{day.isoformat()}" if day else "")

    def home(self) -> str:
        return f"{self.base_url}/"

    def message_id(self, subscriber_id: int, day: date) -> str:
        """Unique per (subscriber, digest), the same on every retry, unguessable without the key."""
        token = self._mac(f"message-id:{subscriber_id}/{day.isoformat()}").hex()[:32]
        return f"<{day:%Y%m%d}.{token}@{self.message_domain}>"


@dataclass(frozen=True)
class ConfirmationClaim:
    """A well-formed, unexpired confirmation token, not yet known to be genuine."""

    links: Links
    subscriber_id: int
    issued_at: int
    signature: str

    def genuine(self, salt: str) -> bool:
        signed = f"{self.subscriber_id}.{self.issued_at}"
        return self.links.verify("confirm", signed, salt, self.signature)

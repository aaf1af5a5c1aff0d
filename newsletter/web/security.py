"""Request-level protections: CSRF tokens, per-IP rate limits, client addresses, headers."""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque

from starlette.requests import Request
from starlette.responses import Response

CSRF_COOKIE = "nl_csrf"
CSRF_FIELD = "csrf_token"


def csrf_token(request: Request) -> str:
    """The visitor's CSRF token: the cookie's value, or a new one to set on the response."""
    current = request.cookies.get(CSRF_COOKIE, "")
    return current if len(current) == 43 else secrets.token_urlsafe(32)


def set_csrf_cookie(response: Response, token: str, secure: bool) -> None:
    response.set_cookie(
        CSRF_COOKIE, token, httponly=True, samesite="lax", secure=secure, max_age=86400
    )


def csrf_valid(request: Request, submitted: object) -> bool:
    """Double-submit check: the form field must equal the cookie, which other sites can neither
    read nor set."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and isinstance(submitted, str) and secrets.compare_digest(cookie, submitted)


class SlidingWindowLimiter:
    """At most `limit` events per key in the last `window` seconds, in this process's memory.

    Enough for one web process; behind several, each enforces its own share.
    """

    def __init__(self, limit: int, window: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if len(self._events) >= self.max_keys:
                self._expire(now)
            events = self._events.setdefault(key, deque())
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            return True

    def _expire(self, now: float) -> None:
        for key in [k for k, v in self._events.items() if not v or v[-1] <= now - self.window]:
            del self._events[key]


def client_ip(request: Request, trusted_proxy_hops: int) -> str:
    """The visitor's address; X-Forwarded-For only counts for proxies the operator declared."""
    if trusted_proxy_hops:
        forwarded = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",")]
        forwarded = [h for h in forwarded if h]
        if len(forwarded) >= trusted_proxy_hops:
            return forwarded[-trusted_proxy_hops]
    return request.client.host if request.client else "unknown"


SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

"""The one clock every stored time uses."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Naive UTC: both databases store timestamps without a zone, always in UTC."""
    return datetime.now(UTC).replace(tzinfo=None)

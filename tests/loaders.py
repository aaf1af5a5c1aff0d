"""Adding many subscribers at once, for load, fault and scale-out tests (the bench's loader)."""

from __future__ import annotations

from collections.abc import Sequence

from bench.loaders import bulk_add_subscribers
from newsletter.store import Store

__all__ = ["add_subscribers", "bulk_add_subscribers"]


def add_subscribers(
    store: Store, emails: Sequence[str], topics: Sequence[str] = (), keywords: Sequence[str] = ()
) -> int:
    """Add many confirmed subscribers with the same interests; addresses already present are
    left as they are. Returns how many were added."""
    return bulk_add_subscribers(store, ((email, topics, keywords) for email in emails))

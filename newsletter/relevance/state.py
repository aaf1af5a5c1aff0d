"""The relevance values that cross between the store and its consumers (the planner, the
subscription service, the web pages): what a reader wrote, their stored profile, their feedback.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from newsletter.relevance.profile import Profile


@dataclass(frozen=True)
class ReaderWords:
    """What a reader wrote: "what do you work on?" and "never show me papers about ..."."""

    about: str = ""
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class StoredProfile:
    """A reader's stored relevance state. `profile` is None when it was never computed or by
    another model; `current` is false when feedback changed since (the anchor, parts and terms
    still hold, only the vector must move). Whether it was computed from the reader's present
    words is for the caller to tell from `words_key`."""

    subscriber_id: int
    words: ReaderWords
    feedback_count: int
    words_key: str | None
    profile: Profile | None
    current: bool


@dataclass(frozen=True)
class FeedbackRecord:
    paper_id: str
    liked: bool
    at: datetime

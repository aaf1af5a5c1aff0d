"""The relevance values that cross between the store and its consumers (the planner, the
subscription service, the web pages): what a reader wrote, their stored profile, their feedback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from newsletter.relevance.profile import ABOUT_LIMIT, Profile
from newsletter.topics import clean_keywords


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


def reader_words(about: str, exclude: Sequence[str]) -> ReaderWords:
    """What a reader wrote, cleaned: whitespace folded, exclude-words as keywords are. Text over
    the limit is refused rather than cut, so nothing the reader wrote is silently lost."""
    text = " ".join(about.split())
    if len(text) > ABOUT_LIMIT:
        raise ValueError(
            f"'what do you work on' is {len(text)} characters; at most {ABOUT_LIMIT}, please"
        )
    if any(ch in text for ch in "\x00\x1b"):
        raise ValueError("'what do you work on' contains control characters")
    return ReaderWords(text, tuple(clean_keywords(exclude)))

"""Every action on a subscription, whoever asks: the pages, the JSON API and the CLI.

One service owns each action so that a rule added here holds on every path; callers check
their own kind of authorisation (a signed link, a CSRF token, shell access) and then come here.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Protocol

from newsletter.addresses import normalise_email
from newsletter.config import Settings
from newsletter.due_times import valid_timezone
from newsletter.links import MAX_SUBSCRIBER_ID, Links
from newsletter.papers import Paper
from newsletter.records import SubscriberRecord
from newsletter.relevance.state import FeedbackRecord, ReaderWords, reader_words
from newsletter.states import Cadence, SubscriberStatus
from newsletter.topics import Taxonomy, clean_keywords


class SubscriberStore(Protocol):
    """The subscriber queries the service runs (store.subscribers)."""

    def upsert(
        self,
        email: str,
        topics: Sequence[str],
        keywords: Sequence[str],
        status: SubscriberStatus = ...,
    ) -> SubscriberRecord: ...

    def by_email(self, email: str) -> SubscriberRecord | None: ...

    def by_id(self, subscriber_id: int) -> SubscriberRecord | None: ...

    def takes_unsalted_unsubscribe(self, subscriber_id: int) -> bool: ...

    def all(self) -> list[SubscriberRecord]: ...

    def delete(self, email: str) -> bool: ...

    def delete_by_id(self, subscriber_id: int) -> bool: ...

    def sign_up(
        self, email: str, topics: Sequence[str], keywords: Sequence[str], cooldown_seconds: int
    ) -> tuple[SubscriberRecord, bool]: ...

    def release_confirmation(self, subscriber_id: int) -> None: ...

    def confirm(self, subscriber_id: int) -> SubscriberRecord | None: ...

    def update_preferences(
        self,
        subscriber_id: int,
        *,
        topics: Sequence[str],
        keywords: Sequence[str],
        frequency: str,
        paused: bool,
        schedule: tuple[str | None, int | None, int | None] | None = None,
    ) -> SubscriberRecord | None: ...

    def unsubscribe(self, subscriber_id: int) -> SubscriberRecord | None: ...

    def resubscribe(self, subscriber_id: int) -> SubscriberRecord | None: ...

    def export(self, subscriber_id: int) -> dict[str, Any] | None: ...


class SuppressionLookup(Protocol):
    """The one suppression query a sign-up needs (store.suppressions)."""

    def suppressed(self, emails: Iterable[str]) -> set[str]: ...


class ReaderWordsStore(Protocol):
    """What a reader wrote and the feedback they gave (store.relevance)."""

    def set_words(self, subscriber_id: int, words: ReaderWords) -> None: ...

    def words(self, subscriber_ids: Iterable[int]) -> dict[int, ReaderWords]: ...

    def record_feedback(self, subscriber_id: int, paper_id: str, liked: bool) -> None: ...

    def undo_feedback(self, subscriber_id: int, paper_id: str) -> bool: ...

    def feedback(self, subscriber_id: int) -> list[FeedbackRecord]: ...


class PaperLookup(Protocol):
    """Feedback names papers by id; the titles are what the preferences page shows."""

    def by_id(self, ids: Iterable[str]) -> dict[str, Paper]: ...


@dataclass(frozen=True)
class FeedbackItem:
    """One "more / less like this", as the preferences page lists it."""

    paper_id: str
    title: str
    liked: bool
    at: datetime


@dataclass(frozen=True)
class SubscriptionSettings:
    confirm_cooldown_seconds: int  # at most one confirmation mail per address per cooldown
    confirm_max_age_seconds: int  # how long a confirmation link works

    @classmethod
    def from_settings(cls, settings: Settings) -> SubscriptionSettings:
        return cls(settings.confirm_cooldown_seconds, settings.confirm_max_age_seconds)


class MailKind(StrEnum):
    CONFIRMATION = "confirmation"  # a new or returning address: confirm to start
    PREFERENCES = "preferences"  # already subscribed: where the settings are


@dataclass(frozen=True)
class SignUpMail:
    """Which mail a sign-up sends; the web layer writes and sends it."""

    kind: MailKind
    to: str
    url: str


@dataclass(frozen=True)
class SignUpRequest:
    """A sign-up whose address and topics are valid."""

    email: str
    topics: list[str]
    keywords: list[str]
    words: ReaderWords | None = None  # "what do you work on?" and exclude-words, if given


@dataclass(frozen=True)
class SignUp:
    """What a sign-up led to. The visitor sees the same answer whatever it was."""

    subscriber_id: int
    mail: SignUpMail | None


@dataclass(frozen=True)
class Schedule:
    """When a subscriber wants their digest; None in a field means the operator's default."""

    timezone: str | None
    hour: int | None
    weekday: int | None

    @classmethod
    def parse(cls, timezone: object, hour: object, weekday: object) -> Schedule:
        """From form or JSON values; ValueError says which one is wrong."""
        zone = str(timezone).strip() if timezone not in (None, "") else None
        if zone is not None and not valid_timezone(zone):
            raise ValueError(f"unknown time zone {zone[:64]!r}")
        return cls(zone, _bounded(hour, 0, 23, "delivery hour"), _bounded(weekday, 0, 6, "weekday"))


def split_keywords(raw: str | Sequence[str] | None) -> list[str]:
    """Keywords from a comma-separated form field or a JSON list."""
    if raw is None:
        return []
    parts = raw.split(",") if isinstance(raw, str) else list(raw)
    return clean_keywords(parts)


def parse_cadence(value: object) -> Cadence:
    try:
        return Cadence(str(value))
    except ValueError:
        choices = ", ".join(c.value for c in Cadence)
        raise ValueError(f"frequency must be one of {choices}") from None


class Subscriptions:
    def __init__(
        self,
        subscribers: SubscriberStore,
        suppressions: SuppressionLookup,
        links: Links,
        taxonomy: Taxonomy,
        settings: SubscriptionSettings,
        *,
        relevance: ReaderWordsStore,
        papers: PaperLookup,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.subscribers = subscribers
        self.relevance = relevance
        self.papers = papers
        self.suppressions = suppressions
        self.links = links
        self.taxonomy = taxonomy
        self.settings = settings
        self._clock = clock

    # -- a visitor, from a form, the API or a mail link --------------------------------------

    def sign_up_request(
        self,
        raw_email: str,
        topics: Sequence[str],
        keywords: Sequence[str],
        about: str = "",
        exclude: Sequence[str] = (),
    ) -> SignUpRequest:
        """A sign-up checked for what was typed: InvalidAddress, ConfigError (unknown topic)
        and ValueError (own words too long) are never about whether the address is known, so
        they may be shown. The rest of the sign-up (`sign_up`) runs after the visitor has
        their answer."""
        return SignUpRequest(
            normalise_email(raw_email),
            self.taxonomy.validate_slugs(topics),
            clean_keywords(keywords),
            self.words(about, exclude) if about.strip() or exclude else None,
        )

    @staticmethod
    def words(about: str, exclude: Sequence[str]) -> ReaderWords:
        """What a reader wrote, checked: ValueError says what is wrong (too long, control
        characters). The one rule for every path: form, API, CLI, import."""
        return reader_words(about, exclude)

    def sign_up(self, request: SignUpRequest) -> SignUp:
        """Record a sign-up and decide which mail, if any, goes out."""
        email = request.email
        record, may_mail = self.subscribers.sign_up(
            email, request.topics, request.keywords, self.settings.confirm_cooldown_seconds
        )
        if record.status == SubscriberStatus.PENDING:
            # Like the topics: a pending address takes what this sign-up wrote, an active
            # one keeps its own (a stranger must not change them).
            self._set_words(record.id, request.words)
        # Asked on every branch, so that no branch is quicker than another.
        suppressed = bool(self.suppressions.suppressed([email]))
        if not may_mail or suppressed:
            return SignUp(record.id, None)
        if record.status == SubscriberStatus.PENDING:
            url = self.links.confirmation(record.id, record.token_salt, int(self._clock()))
            return SignUp(record.id, SignUpMail(MailKind.CONFIRMATION, email, url))
        if record.status in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED):
            # Already subscribed: remind the owner where their settings are, tell the visitor
            # nothing different.
            url = self.links.preferences(record.id, record.token_salt)
            return SignUp(record.id, SignUpMail(MailKind.PREFERENCES, email, url))
        return SignUp(record.id, None)

    def mail_failed(self, subscriber_id: int) -> None:
        """A confirmation that never left must not hold the cooldown against the next try."""
        self.subscribers.release_confirmation(subscriber_id)

    def confirmation_valid(self, token: str) -> bool:
        return self._confirmed(token) is not None

    def confirm(self, token: str) -> SubscriberRecord | None:
        """The subscriber, active now if they were pending; None for a bad or expired token."""
        record = self._confirmed(token)
        return self.subscribers.confirm(record.id) if record is not None else None

    def signed(self, purpose: str, subscriber_id: int, token: str) -> SubscriberRecord | None:
        """The subscriber a preferences or unsubscribe link belongs to, if the link is genuine."""
        record = self._existing(subscriber_id)
        if record is None:
            return None
        if self.links.verify(purpose, str(subscriber_id), record.token_salt, token):
            return record
        # Readers can leave from any mail they have, also one sent before links were salted.
        if (
            purpose == "unsubscribe"
            and self.links.verify_unsalted(purpose, str(subscriber_id), token)
            and self.subscribers.takes_unsalted_unsubscribe(subscriber_id)
        ):
            return record
        return None

    def viewer(self, subscriber_id: int, day: date, token: str) -> SubscriberRecord | None:
        """The subscriber a "view in browser" link for `day` belongs to, if it is genuine."""
        record = self._existing(subscriber_id)
        if record is None or not hmac.compare_digest(
            self.links.view_token(subscriber_id, record.token_salt, day), token
        ):
            return None
        return record

    def save_preferences(
        self,
        subscriber_id: int,
        topics: Sequence[str],
        keywords: Sequence[str],
        frequency: Cadence | str,
        paused: bool,
        schedule: Schedule | None = None,
        words: ReaderWords | None = None,
    ) -> SubscriberRecord | None:
        """ValueError (frequency) and ConfigError (topic) say what was wrong with the input.
        `words` None leaves what the reader wrote as it was."""
        cadence = parse_cadence(frequency)
        slugs = self.taxonomy.validate_slugs(topics)
        record = self.subscribers.update_preferences(
            subscriber_id,
            topics=slugs,
            keywords=clean_keywords(keywords),
            frequency=cadence,
            paused=paused,
            schedule=(schedule.timezone, schedule.hour, schedule.weekday) if schedule else None,
        )
        if record is not None and words is not None:
            self._set_words(record.id, words)
        return record

    def words_of(self, subscriber_ids: Iterable[int]) -> dict[int, ReaderWords]:
        """What each subscriber wrote; those who wrote nothing are left out."""
        return self.relevance.words(subscriber_ids)

    # -- feedback, from the links in every digest and the preferences page -------------------

    def give_feedback(self, subscriber_id: int, paper_id: str, liked: bool) -> Paper | None:
        """Record "more like this" (liked) or "less like this"; the last signal on a paper
        wins. The profile moves (Rocchio, newsletter.relevance.profile.with_feedback) the next
        time it is needed, so giving feedback never waits for the model. None when no such
        paper is stored."""
        paper = self.papers.by_id([paper_id]).get(paper_id)
        if paper is not None:
            self.relevance.record_feedback(subscriber_id, paper.id, liked)
        return paper

    def undo_feedback(self, subscriber_id: int, paper_id: str) -> bool:
        return self.relevance.undo_feedback(subscriber_id, paper_id)

    def feedback(self, subscriber_id: int) -> list[FeedbackItem]:
        """The reader's signals, newest first, with the papers' titles."""
        records = self.relevance.feedback(subscriber_id)
        papers = self.papers.by_id(r.paper_id for r in records) if records else {}
        return [
            FeedbackItem(r.paper_id, papers[r.paper_id].title, r.liked, r.at)
            for r in records
            if r.paper_id in papers
        ]

    def unsubscribe(self, subscriber_id: int) -> SubscriberRecord | None:
        return self.subscribers.unsubscribe(subscriber_id)

    def resubscribe(self, subscriber_id: int) -> SubscriberRecord | None:
        return self.subscribers.resubscribe(subscriber_id)

    def export(self, subscriber_id: int) -> dict[str, Any] | None:
        """Everything stored about the subscriber, for "export my data"."""
        data = self.subscribers.export(subscriber_id)
        if data is None:
            return None
        words = self.relevance.words([subscriber_id]).get(subscriber_id, ReaderWords())
        data["about"] = words.about
        data["exclude"] = list(words.exclude)
        data["feedback"] = [
            {"paper": r.paper_id, "more_like_this": r.liked, "at": r.at.isoformat()}
            for r in self.relevance.feedback(subscriber_id)
        ]
        return data

    def delete(self, subscriber_id: int) -> bool:
        """The subscriber and their delivery history, gone."""
        return self.subscribers.delete_by_id(subscriber_id)

    # -- the operator, from the CLI -----------------------------------------------------------

    def add(
        self,
        raw_email: str,
        topics: Sequence[str],
        keywords: Sequence[str],
        words: ReaderWords | None = None,
    ) -> SubscriberRecord:
        """Add (or update) a confirmed subscriber; InvalidAddress or ConfigError on bad input.
        `words` (checked by `words`) None leaves what they wrote as it was."""
        email = normalise_email(raw_email)
        slugs = self.taxonomy.validate_slugs(topics)
        record = self.subscribers.upsert(email, slugs, clean_keywords(keywords))
        if words is not None:
            self._set_words(record.id, words)
        return record

    def remove(self, raw_email: str) -> bool:
        """Delete by address; False if there was no such subscriber."""
        return self.subscribers.delete(normalise_email(raw_email))

    def all(self) -> list[SubscriberRecord]:
        return self.subscribers.all()

    def _set_words(self, subscriber_id: int, words: ReaderWords | None) -> None:
        if words is None:
            if not self.relevance.words([subscriber_id]):
                return  # nothing written before, nothing to clear: no row for nothing
            words = ReaderWords()
        self.relevance.set_words(subscriber_id, words)

    def _existing(self, subscriber_id: int) -> SubscriberRecord | None:
        if not 0 < subscriber_id <= MAX_SUBSCRIBER_ID:
            return None
        return self.subscribers.by_id(subscriber_id)

    def _confirmed(self, token: str) -> SubscriberRecord | None:
        """The subscriber a genuine, unexpired confirmation token was made for."""
        claim = self.links.confirmation_claim(
            token, int(self._clock()), self.settings.confirm_max_age_seconds
        )
        record = self._existing(claim.subscriber_id) if claim is not None else None
        if claim is None or record is None or not claim.genuine(record.token_salt):
            return None
        return record


def _bounded(value: object, low: int, high: int, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(str(value))
    except ValueError:
        raise ValueError(f"{name} must be a whole number") from None
    if not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}")
    return number

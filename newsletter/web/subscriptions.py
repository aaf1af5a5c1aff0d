"""What a visitor can do to a subscription, shared by the HTML pages and the JSON API."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from newsletter.addresses import normalise_email
from newsletter.pipeline import Newsletter
from newsletter.schedule import valid_timezone
from newsletter.send.message import Envelope
from newsletter.store import SubscriberRecord
from newsletter.topics import clean_keywords
from newsletter.web.mailer import confirmation_message, preferences_message

FREQUENCIES = ("daily", "weekly")


@dataclass(frozen=True)
class SignUp:
    """What a sign-up led to. The visitor sees the same answer whatever it was."""

    mail: Envelope | None
    subscriber_id: int | None


def split_keywords(raw: str | Sequence[str] | None) -> list[str]:
    if raw is None:
        return []
    parts = raw.split(",") if isinstance(raw, str) else list(raw)
    return clean_keywords(parts)


class Subscriptions:
    def __init__(self, newsletter: Newsletter) -> None:
        self.newsletter = newsletter
        self.settings = newsletter.settings
        self.store = newsletter.store
        self.links = newsletter.links

    def sign_up(self, raw_email: str, topics: Sequence[str], keywords: list[str]) -> SignUp:
        """Record a sign-up and decide which mail, if any, goes out.

        InvalidAddress and ConfigError (unknown topic) are about what was typed, never about
        whether the address is known, so they may be shown.
        """
        email = normalise_email(raw_email)
        slugs = self.newsletter.taxonomy.validate_slugs(topics)
        record, may_mail = self.store.sign_up(
            email, slugs, keywords, self.settings.confirm_cooldown_seconds
        )
        if not may_mail or self.store.suppressed([email]):
            return SignUp(None, record.id)
        if record.status == "pending":
            url = self.links.confirmation(record.id, int(time.time()))
            return SignUp(confirmation_message(self.settings, email, url), record.id)
        if record.status in ("active", "paused"):
            # Already subscribed: remind the owner where their settings are, tell the visitor
            # nothing different.
            url = self.links.preferences(record.id)
            return SignUp(preferences_message(self.settings, email, url), record.id)
        return SignUp(None, record.id)

    def mail_failed(self, subscriber_id: int) -> None:
        """A confirmation that never left must not hold the cooldown against the next try."""
        self.store.release_confirmation(subscriber_id)

    def confirm(self, token: str) -> SubscriberRecord | None:
        subscriber_id = self.links.check_confirmation(
            token, int(time.time()), self.settings.confirm_max_age_seconds
        )
        return self.store.confirm(subscriber_id) if subscriber_id is not None else None

    def confirmation_valid(self, token: str) -> bool:
        return (
            self.links.check_confirmation(
                token, int(time.time()), self.settings.confirm_max_age_seconds
            )
            is not None
        )

    def signed(self, purpose: str, subscriber_id: int, token: str) -> SubscriberRecord | None:
        """The subscriber a preferences or unsubscribe link belongs to, if the link is genuine."""
        if not self.links.verify(purpose, str(subscriber_id), token):
            return None
        return self.store.subscriber_by_id(subscriber_id)

    def save_preferences(
        self,
        subscriber_id: int,
        topics: Sequence[str],
        keywords: list[str],
        frequency: str,
        paused: bool,
        schedule: Schedule | None = None,
    ) -> SubscriberRecord | None:
        if frequency not in FREQUENCIES:
            raise ValueError(f"frequency must be one of {', '.join(FREQUENCIES)}")
        slugs = self.newsletter.taxonomy.validate_slugs(topics)
        return self.store.update_preferences(
            subscriber_id,
            topics=slugs,
            keywords=keywords,
            frequency=frequency,
            paused=paused,
            schedule=(schedule.timezone, schedule.hour, schedule.weekday) if schedule else None,
        )


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

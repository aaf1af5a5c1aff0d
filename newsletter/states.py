"""The states a subscriber and a delivery can be in, and why a delivery was skipped.

They are values (stored as strings) so that every skip is counted and reported, never a silent
`continue`.
"""

from enum import StrEnum


class SubscriberStatus(StrEnum):
    PENDING = "pending"  # signed up, not confirmed yet
    ACTIVE = "active"
    PAUSED = "paused"  # keeps the subscription, receives nothing
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"  # suppressed after hard bounces


class Cadence(StrEnum):
    """How often a subscriber gets a digest."""

    DAILY = "daily"
    WEEKLY = "weekly"


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"  # claimed with a lease; a lease that expires means the sender died
    SENT = "sent"
    RETRY = "retry"  # transient failure, due again at next_attempt_at
    FAILED = "failed"  # permanent failure, with the reason
    SKIPPED = "skipped"  # nothing to send, with the reason


class SkipReason(StrEnum):
    NO_MATCH = "no_matching_papers"  # nothing on the day matched the subscriber's interests
    NOTHING_NEW = "nothing_new"  # matches existed, but every one was sent before
    NOTHING_RELEVANT = "nothing_relevant"  # no paper of the day came close to the reader's profile
    UNSUBSCRIBED = "unsubscribed"  # left between planning and sending
    PAUSED = "paused"
    SUPPRESSED = "suppressed"  # bounced or complained address
    SUPERSEDED = "superseded"  # still undelivered when a newer digest was planned

    @property
    def explanation(self) -> str:
        """The reason in words, for an operator reading `preview` or `failures`."""
        return _SKIP_EXPLANATIONS[self]


_SKIP_EXPLANATIONS = {
    SkipReason.NO_MATCH: "nothing listed that day matched their topics or keywords",
    SkipReason.NOTHING_NEW: "every matching paper was sent to them before",
    SkipReason.NOTHING_RELEVANT: "no paper of the day came close enough to their interests",
    SkipReason.UNSUBSCRIBED: "they unsubscribed",
    SkipReason.PAUSED: "their subscription is paused",
    SkipReason.SUPPRESSED: "the address is suppressed (bounced or complained)",
    SkipReason.SUPERSEDED: "a newer digest was planned before this one went out",
}


class FailureReason(StrEnum):
    REJECTED = "recipient_rejected"  # permanent 5xx for this recipient
    RETRIES_EXHAUSTED = "retries_exhausted"
    INVALID_ADDRESS = "invalid_address"

"""The plain values that cross between the store and its consumers (planning, sending, web).

They live outside store/ so that a consumer can declare the narrow store interface it needs
in terms of these values without importing the concrete store.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from typing import NamedTuple

from newsletter.states import Cadence, DeliveryStatus, SubscriberStatus


@dataclass(frozen=True)
class SubscriberRecord:
    id: int
    email: str
    status: SubscriberStatus
    topics: tuple[str, ...]
    keywords: tuple[str, ...]
    created_at: datetime
    bounce_count: int = 0
    frequency: Cadence = Cadence.DAILY
    timezone: str | None = None
    delivery_hour: int | None = None
    weekday: int | None = None
    # The row's random salt, which every link to this subscriber is signed over (links.py).
    token_salt: str = ""


@dataclass(frozen=True)
class PlannedDelivery:
    subscriber_id: int
    status: DeliveryStatus
    reason: str | None
    message_id: str
    paper_ids: list[str]
    due_at: datetime | None = None  # naive UTC; None = at once


@dataclass(frozen=True)
class ClaimedDelivery:
    id: int
    digest_date: date
    message_id: str
    paper_ids: list[str]
    attempts: int
    subscriber: SubscriberRecord


@dataclass(frozen=True)
class PlanCandidate:
    """An active subscriber as the planner sees them for one day."""

    subscriber: SubscriberRecord
    planned: bool  # a delivery for the day exists already (a re-run, a racing planner)
    suppressed: bool  # the address is on the suppression list


@dataclass
class DaySummary:
    digest_date: date
    by_status: Counter[str]
    skipped_by_reason: Counter[str]
    failed_by_reason: Counter[str]
    papers_sent: int


@dataclass(frozen=True)
class SuppressionRecord:
    """An address never mailed again, and why."""

    email: str
    reason: str
    detail: str | None
    created_at: datetime


# The three below are tuples as well as records: callers that unpack them positionally (report
# loops, `planned[1]`) keep working while others read them by name.


class Undelivered(NamedTuple):
    """A subscriber who did not get a day's digest, and why."""

    email: str
    status: DeliveryStatus
    reason: str | None
    detail: str | None  # the last error the relay gave
    attempts: int


class DeliveryHistory(NamedTuple):
    """One day's delivery to a subscriber."""

    digest_date: date
    status: DeliveryStatus
    reason: str | None
    paper_ids: list[str]


class PlannedDigest(NamedTuple):
    """The digest planned for a subscriber on a day (for previews and the web version)."""

    status: DeliveryStatus
    paper_ids: list[str]


@dataclass(frozen=True)
class DayListing:
    """What a fetch did to a day's list."""

    added: int  # papers the day did not list before
    already_listed: int  # papers it listed already (their counts and fields refreshed)
    total: int  # papers the day lists now

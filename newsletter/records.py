"""The plain values that cross between the store and its consumers (planning, sending, web).

They live outside store/ so that a consumer can declare the narrow store interface it needs
in terms of these values without importing the concrete store.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime

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

"""Planning a day: one delivery row per due subscriber, written before any SMTP.

The planner reads the day's ranked list, asks the outbox which subscribers are candidates and
what each was already sent, chooses their papers (newsletter.selection) and writes the rows.
It declares the two narrow store interfaces it needs, so it can be read and tested alone.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from newsletter.digest import Interests, Selection, Selector, rank
from newsletter.errors import NewsletterError
from newsletter.papers import Paper
from newsletter.records import PlanCandidate, PlannedDelivery, SubscriberRecord
from newsletter.schedule import due_at, weekly_due
from newsletter.states import Cadence, DeliveryStatus, SkipReason
from newsletter.topics import Taxonomy

if TYPE_CHECKING:
    from newsletter.config import Settings


class Listings(Protocol):
    """The papers a day (or a week) listed."""

    def day_papers(self, day: date) -> list[Paper]: ...

    def listed_between(self, first: date, last: date) -> list[Paper]: ...


class PlanningOutbox(Protocol):
    """The outbox calls a planner makes."""

    def supersede_older(self, day: date) -> int: ...

    def start_run(self, day: date, paper_count: int) -> None: ...

    def finish_run(self, day: date) -> None: ...

    def plan_candidates(self, day: date, batch_size: int) -> Iterator[list[PlanCandidate]]: ...

    def already_sent(
        self, subscriber_ids: Iterable[int], paper_ids: Iterable[str]
    ) -> dict[int, set[str]]: ...

    def add_deliveries(self, day: date, planned: Sequence[PlannedDelivery]) -> set[int]: ...


class MessageIds(Protocol):
    def message_id(self, subscriber_id: int, day: date) -> str: ...


@dataclass(frozen=True)
class PlanningConfig:
    max_papers: int = 10
    batch_size: int = 2000
    weekly_weekday: int = 0
    digest_lag_days: int = 1
    default_timezone: str = "UTC"
    default_delivery_hour: int = 8

    @classmethod
    def from_settings(cls, settings: Settings) -> PlanningConfig:
        return cls(
            max_papers=settings.max_papers,
            batch_size=settings.batch_size,
            weekly_weekday=settings.weekly_weekday,
            digest_lag_days=settings.digest_lag_days,
            default_timezone=settings.default_timezone,
            default_delivery_hour=settings.default_delivery_hour,
        )


@dataclass
class PlanReport:
    day: date
    queued: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    already_planned: int = 0
    superseded: int = 0
    seconds: float = 0.0


class Planner:
    def __init__(
        self,
        config: PlanningConfig,
        listings: Listings,
        outbox: PlanningOutbox,
        taxonomy: Taxonomy,
        message_ids: MessageIds,
    ) -> None:
        self.config = config
        self.listings = listings
        self.outbox = outbox
        self.taxonomy = taxonomy
        self.message_ids = message_ids

    def day_papers(self, day: date) -> list[Paper]:
        """The day's list in rank order; an error naming the fix when nothing is stored."""
        papers = self.listings.day_papers(day)
        if not papers:
            raise NewsletterError(
                f"no papers stored for {day}; run `newsletter fetch --date {day}`"
            )
        return rank(papers)

    def week_papers(self, day: date) -> list[Paper]:
        """Every paper listed in the seven days ending `day`, ranked: the weekly digest's pool."""
        return rank(self.listings.listed_between(day - timedelta(days=6), day))

    def selection_for(
        self, subscriber: SubscriberRecord, ranked: list[Paper], already_sent: set[str]
    ) -> Selection:
        """What `subscriber` would get from `ranked`, for a preview (nothing is recorded)."""
        return Selector(ranked, self.taxonomy, self.config.max_papers)(
            Interests.of(subscriber), already_sent
        )

    def plan(self, day: date, *, dry_run: bool = False, immediately: bool = False) -> PlanReport:
        """Write one delivery per due subscriber for `day`, before any SMTP.

        Daily subscribers are due every day and choose from the day's list; weekly ones on their
        weekday, choosing from the week's lists. Each delivery becomes sendable at the
        subscriber's local delivery hour. Safe to repeat and to run concurrently: subscribers
        already planned for the day are left alone, and the database's unique key settles races.
        """
        started = time.monotonic()
        config = self.config
        daily = self.day_papers(day)
        weekly: list[Paper] | None = None  # the week's pool, read once if anyone needs it
        choose_daily = Selector(daily, self.taxonomy, config.max_papers)
        choose_weekly: Selector | None = None
        report = PlanReport(day)
        if not dry_run:
            report.superseded = self.outbox.supersede_older(day)
            self.outbox.start_run(day, len(daily))
        for batch in self.outbox.plan_candidates(day, config.batch_size):
            due = [c for c in batch if self._due(c.subscriber, day)]
            report.already_planned += sum(c.planned for c in due)
            todo = [c for c in due if not c.planned]
            if weekly is None and any(c.subscriber.frequency == Cadence.WEEKLY for c in todo):
                weekly = self.week_papers(day)
                choose_weekly = Selector(weekly, self.taxonomy, config.max_papers)
            candidates = {p.id for p in [*daily, *(weekly or [])]}
            sent = self.outbox.already_sent([c.subscriber.id for c in todo], list(candidates))
            planned = []
            for candidate in todo:
                subscriber = candidate.subscriber
                choose = (
                    choose_weekly
                    if subscriber.frequency == Cadence.WEEKLY and choose_weekly
                    else choose_daily
                )
                if candidate.suppressed:
                    selection = Selection((), SkipReason.SUPPRESSED)
                else:
                    selection = choose(Interests.of(subscriber), sent.get(subscriber.id, ()))
                planned.append(
                    PlannedDelivery(
                        subscriber_id=subscriber.id,
                        status=DeliveryStatus.QUEUED if selection.picks else DeliveryStatus.SKIPPED,
                        reason=selection.skip_reason,
                        message_id=self.message_ids.message_id(subscriber.id, day),
                        paper_ids=selection.paper_ids,
                        due_at=None if immediately else self._due_at(subscriber, day),
                    )
                )
            # Count only the rows this call created: a racing planner counts the rest.
            created = (
                {p.subscriber_id for p in planned}
                if dry_run
                else self.outbox.add_deliveries(day, planned)
            )
            report.already_planned += len(planned) - len(created)
            for delivery in planned:
                if delivery.subscriber_id not in created:
                    continue
                if delivery.reason is None:
                    report.queued += 1
                else:
                    report.skipped[delivery.reason] += 1
        if not dry_run:
            self.outbox.finish_run(day)
        report.seconds = time.monotonic() - started
        return report

    def _due(self, subscriber: SubscriberRecord, day: date) -> bool:
        return subscriber.frequency != Cadence.WEEKLY or weekly_due(
            day, subscriber.weekday, self.config.weekly_weekday
        )

    def _due_at(self, subscriber: SubscriberRecord, day: date) -> datetime:
        config = self.config
        return due_at(
            day + timedelta(days=config.digest_lag_days),
            subscriber.timezone,
            subscriber.delivery_hour,
            config.default_timezone,
            config.default_delivery_hour,
        )

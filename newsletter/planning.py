"""Planning a day: one delivery row per due subscriber, written before any SMTP.

The planner reads the day's ranked list, asks the outbox which subscribers are candidates and
what each was already sent, chooses their papers and writes the rows. Keyword-only readers with
no feedback are chosen for literally (newsletter.selection); readers who wrote what they work on or
gave feedback are chosen for by meaning, a batch at a time (newsletter.relevance.scoring), with
the reason for each paper kept beside their delivery. It declares the narrow interfaces it
needs, so it can be read and tested alone.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from newsletter.due_times import due_at, weekly_due
from newsletter.errors import NewsletterError
from newsletter.papers import Paper
from newsletter.records import PlanCandidate, PlannedDelivery, SubscriberRecord
from newsletter.relevance.scoring import THRESHOLD, Choices, Day, Reader, select_many
from newsletter.selection import Interests, Pick, Selection, Selector, rank
from newsletter.states import Cadence, DeliveryStatus, SkipReason
from newsletter.topics import Taxonomy, keyword_pattern, matching_text

if TYPE_CHECKING:
    from newsletter.config import Settings
    from newsletter.profiles import ReaderSetup


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


class ReaderProfiles(Protocol):
    """Relevance state kept current (newsletter.profiles.Profiles)."""

    def day(self, papers: Sequence[Paper]) -> Day: ...

    def readers(self, subscribers: Sequence[SubscriberRecord]) -> Mapping[int, ReaderSetup]: ...


class ReasonLog(Protocol):
    def save_reasons(self, day: date, reasons: Mapping[int, Sequence[str]]) -> None: ...


@dataclass(frozen=True)
class PlanningConfig:
    max_papers: int = 10
    batch_size: int = 2000
    weekly_weekday: int = 0
    digest_lag_days: int = 1
    default_timezone: str = "UTC"
    default_delivery_hour: int = 8
    relevance_threshold: float = THRESHOLD

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
        profiles: ReaderProfiles | None = None,
        reasons: ReasonLog | None = None,
    ) -> None:
        self.config = config
        self.listings = listings
        self.outbox = outbox
        self.taxonomy = taxonomy
        self.message_ids = message_ids
        self.profiles = profiles
        self.reasons = reasons

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
        """What `subscriber` would get from `ranked`, for a preview (nothing is recorded);
        each pick of a reader chosen for by meaning is labelled with its reason."""
        cap = self.config.max_papers
        setup = self.profiles.readers([subscriber]).get(subscriber.id) if self.profiles else None
        if setup is None:
            return Selector(ranked, self.taxonomy, cap)(Interests.of(subscriber), already_sent)
        if setup.profile is None:
            everything = Selector(ranked, self.taxonomy, len(ranked))
            return excluding(everything(Interests.of(subscriber), already_sent), setup, cap)
        assert self.profiles is not None
        choices = self._choose(self.profiles.day(ranked), [(subscriber, setup, already_sent)])
        return as_selection(choices[0])

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
        days: dict[Cadence, Day] = {}  # vectors and BM25 of a pool, made once if anyone needs them
        for batch in self.outbox.plan_candidates(day, config.batch_size):
            due = [c for c in batch if self._due(c.subscriber, day)]
            report.already_planned += sum(c.planned for c in due)
            todo = [c for c in due if not c.planned]
            if weekly is None and any(c.subscriber.frequency == Cadence.WEEKLY for c in todo):
                weekly = self.week_papers(day)
                choose_weekly = Selector(weekly, self.taxonomy, config.max_papers)
            candidates = {p.id for p in [*daily, *(weekly or [])]}
            sent = self.outbox.already_sent([c.subscriber.id for c in todo], list(candidates))
            setups = (
                self.profiles.readers([c.subscriber for c in todo if not c.suppressed])
                if self.profiles
                else {}
            )
            chosen = self._choose_by_meaning(todo, setups, sent, daily, weekly or [], days)
            reasons: dict[int, list[str]] = {}
            planned = []
            for candidate in todo:
                subscriber = candidate.subscriber
                weekly_reader = subscriber.frequency == Cadence.WEEKLY and choose_weekly
                choose = choose_weekly if weekly_reader and choose_weekly else choose_daily
                setup = setups.get(subscriber.id)
                choices = chosen.get(subscriber.id)
                if candidate.suppressed:
                    selection = Selection((), SkipReason.SUPPRESSED)
                elif choices is not None:
                    # Only the ids and reasons are written: no Pick is built per paper.
                    if choices.papers:
                        reasons[subscriber.id] = list(choices.reasons)
                    planned.append(self._delivery(subscriber, day, choices, immediately))
                    continue
                elif setup is not None:  # exclude-words only: literal matching, minus those
                    pool = weekly if weekly_reader and weekly is not None else daily
                    everything = Selector(pool, self.taxonomy, len(pool))
                    selection = excluding(
                        everything(Interests.of(subscriber), sent.get(subscriber.id, ())),
                        setup,
                        config.max_papers,
                    )
                else:
                    selection = choose(Interests.of(subscriber), sent.get(subscriber.id, ()))
                planned.append(self._delivery(subscriber, day, selection, immediately))
            # Reasons before their deliveries: a sender may claim a delivery the moment it is
            # written, and must find its reasons there. A racing planner chose the same papers
            # for the same reader; the first reasons written are kept.
            if reasons and not dry_run and self.reasons is not None:
                self.reasons.save_reasons(day, reasons)
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

    def _choose_by_meaning(
        self,
        todo: Sequence[PlanCandidate],
        setups: Mapping[int, ReaderSetup],
        sent: Mapping[int, set[str]],
        daily: list[Paper],
        weekly: list[Paper],
        days: dict[Cadence, Day],
    ) -> dict[int, Choices]:
        """Choices for the batch's readers with a profile, daily and weekly pools apart."""
        chosen: dict[int, Choices] = {}
        for cadence, pool in ((Cadence.DAILY, daily), (Cadence.WEEKLY, weekly)):
            readers = [
                (c.subscriber, setup, sent.get(c.subscriber.id, set()))
                for c in todo
                if not c.suppressed
                and (setup := setups.get(c.subscriber.id)) is not None
                and setup.profile is not None
                and (c.subscriber.frequency == Cadence.WEEKLY) == (cadence == Cadence.WEEKLY)
            ]
            if not readers or not pool:
                continue
            if cadence not in days:
                assert self.profiles is not None
                days[cadence] = self.profiles.day(pool)
            choices = self._choose(days[cadence], readers)
            chosen.update((s.id, c) for (s, _, _), c in zip(readers, choices, strict=True))
        return chosen

    def _choose(
        self, day: Day, readers: Sequence[tuple[SubscriberRecord, ReaderSetup, set[str]]]
    ) -> list[Choices]:
        return list(
            select_many(
                day,
                (
                    Reader(setup.profile, Interests.of(s), setup.exclude, sent)
                    for s, setup, sent in readers
                    if setup.profile is not None
                ),
                self.taxonomy,
                self.config.max_papers,
                threshold=self.config.relevance_threshold,
            )
        )

    def _delivery(
        self,
        subscriber: SubscriberRecord,
        day: date,
        selection: Selection | Choices,
        immediately: bool,
    ) -> PlannedDelivery:
        paper_ids = selection.paper_ids
        return PlannedDelivery(
            subscriber_id=subscriber.id,
            status=DeliveryStatus.QUEUED if paper_ids else DeliveryStatus.SKIPPED,
            reason=selection.skip_reason,
            message_id=self.message_ids.message_id(subscriber.id, day),
            paper_ids=paper_ids,
            due_at=None if immediately else self._due_at(subscriber, day),
        )

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


def as_selection(choices: Choices) -> Selection:
    """Choices as the planner records them, each pick labelled with why it is there."""
    picks = tuple(
        Pick(paper, (reason,) if reason else ())
        for paper, reason in zip(choices.papers, choices.reasons, strict=True)
    )
    return Selection(picks, choices.skip_reason)


def excluding(selection: Selection, setup: ReaderSetup, cap: int) -> Selection:
    """A literal selection (made uncapped) without the papers the reader excluded, capped."""
    pattern = keyword_pattern(setup.exclude)
    picks = tuple(
        pick
        for pick in selection.picks
        if pattern is None or not pattern.search(matching_text(pick.paper))
    )[:cap]
    if picks:
        return Selection(picks, None)
    if selection.picks:  # everything left was excluded
        return Selection((), SkipReason.NO_MATCH)
    return Selection((), selection.skip_reason)

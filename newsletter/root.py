"""The composition root: builds the store, links and taxonomy once and hands each component
its own config (sources, fetcher, planner, composer, senders).

The CLI, the demo, the scheduler and the web app drive the newsletter through this object; the
work itself lives in the components it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from newsletter.compose import Composer, ComposerConfig
from newsletter.config import Settings
from newsletter.errors import NewsletterError
from newsletter.fetching import Fetcher, FetchReport
from newsletter.links import Links
from newsletter.planning import Planner, PlanningConfig, PlanReport
from newsletter.profiles import Profiles
from newsletter.records import SubscriberRecord
from newsletter.relevance.embedding import default_embedder
from newsletter.render import RenderedDigest
from newsletter.selection import Selection
from newsletter.send.engine import DeliveryLoop, DeliveryPolicy, DrainReport
from newsletter.send.factory import sender_from_settings
from newsletter.send.senders import Sender
from newsletter.send_processes import still_planning, with_helpers
from newsletter.sources.registry import SourceConfig, Sources
from newsletter.states import DeliveryStatus, SkipReason
from newsletter.store import Store
from newsletter.subscriptions import Subscriptions, SubscriptionSettings
from newsletter.topics import Taxonomy, load_taxonomy

__all__ = ["FetchReport", "Newsletter", "PlanReport", "SendReport"]


@dataclass
class SendReport:
    plan: PlanReport
    drain: DrainReport


class Newsletter:
    def __init__(self, settings: Settings, *, demo: bool = False) -> None:
        if not demo:
            settings.require_real_secret()
        self.settings = settings
        self._demo = demo
        self.store = Store(settings.database_url)
        self.taxonomy: Taxonomy = load_taxonomy(settings.resolved_topics_file())
        self.links = Links(
            settings.base_url, settings.secret_key.get_secret_value(), settings.from_domain
        )
        # The model loads on its first use: processes that never embed do not pay for it.
        self.profiles = Profiles(
            self.store.relevance, self.store.papers, self.taxonomy, default_embedder()
        )
        self.fetcher = Fetcher(Sources(SourceConfig.from_settings(settings)), self.store.papers)
        self.fetcher.after_store = self.profiles.embed_stored
        self.planner = Planner(
            PlanningConfig.from_settings(settings),
            self.store.papers,
            self.store.outbox,
            self.taxonomy,
            self.links,
            self.profiles,
            self.store.relevance,
        )
        self.composer = Composer(
            ComposerConfig.from_settings(settings),
            self.store.papers,
            self.taxonomy,
            self.links,
            self.store.relevance,
        )
        self.subscriptions = Subscriptions(
            self.store.subscribers,
            self.store.suppressions,
            self.links,
            self.taxonomy,
            SubscriptionSettings.from_settings(settings),
            relevance=self.store.relevance,
            papers=self.store.papers,
        )

    def close(self) -> None:
        self.store.close()

    def fetch(
        self, day: date | None = None, source: str | None = None, *, replace: bool = False
    ) -> FetchReport:
        return self.fetcher.fetch(day, source, replace=replace)

    def listed_nothing(self, day: date) -> bool:
        """Whether `day` is an empty day (weekends are): known from an earlier fetch, else
        fetched now. A day with papers stored is not, and is not fetched again here."""
        papers = self.store.papers
        if papers.day_paper_ids(day):
            return False
        return papers.known_empty(day) or self.fetch(day).empty

    def plan(self, day: date, *, dry_run: bool = False, immediately: bool = False) -> PlanReport:
        return self.planner.plan(day, dry_run=dry_run, immediately=immediately)

    async def drain(
        self,
        sender: Sender | None = None,
        progress: Callable[[DrainReport], None] | None = None,
        *,
        planning: Callable[[], bool] | None = None,
        exclusive: bool = True,
    ) -> DrainReport:
        """Send everything due now, then return.

        While `planning()` is true a planner is still adding deliveries, and the drain waits
        for them rather than ending. `exclusive` takes the right to send on SQLite (one sender
        at a time); a `send` that drains in several processes takes it once for all of them.
        """
        sender = sender or sender_from_settings(self.settings)
        outbox = self.store.outbox
        clock = self.composer.clock
        clock.render = clock.build = 0.0
        try:
            with outbox.exclusive_sender() if exclusive else contextlib.nullcontext(0) as taken:
                loop = DeliveryLoop(
                    outbox,
                    sender,
                    self.composer.compose,
                    # Read per drain: an operator (or a test) may change settings between runs.
                    DeliveryPolicy.from_settings(self.settings),
                    progress,
                    planning,
                )
                report = await loop.run()
                report.taken_over += taken
        finally:
            await sender.close()
        report.render_seconds, report.build_seconds = clock.render, clock.build
        return report

    async def send(
        self,
        day: date,
        sender: Sender | None = None,
        progress: Callable[[DrainReport], None] | None = None,
        *,
        now: bool = False,
        processes: int | None = None,
    ) -> SendReport:
        """Plan `day` (fetching it first when it is not stored) and deliver everything due.

        With `now`, the day's digests are due at once instead of at each local delivery hour.
        With more than one process (default: the setting send_processes), the others start
        sending the outbox while this one is still planning it, then this one sends too.
        """
        if not self.store.papers.day_papers(day):
            self.fetch(day)
        helpers = (processes or self.settings.send_processes) - 1
        if helpers < 1 or sender is not None:
            plan = self.plan(day, immediately=now)
            return SendReport(plan, await self.drain(sender, progress))
        share = helpers + 1
        with self.store.outbox.exclusive_sender() as taken:
            plan, report, others = await with_helpers(
                helpers,
                _drain_in_helper,
                (self.settings, self._demo, share),
                lambda: self.plan(day, immediately=now),
                lambda: self.drain(
                    sender_from_settings(self.settings, share), progress, exclusive=False
                ),
            )
        for other in others:
            if isinstance(other, BaseException):
                # Its claims expire and are sent again by whoever runs next; the run says so
                # instead of ending in a traceback.
                report.stopped = report.stopped or f"a sending process failed: {other!r}"
            else:
                report.add(other)
        report.taken_over += taken
        # Each process saw the others' leases when it finished; now that all are done, what
        # is still leased is another sender's.
        report.leased_elsewhere, report.leased_until = self.store.outbox.leases_held()
        return SendReport(plan, report)

    def web_version(self, subscriber_id: int, day: date) -> str | None:
        """The HTML of a digest that was planned for the subscriber, for "view in browser"."""
        subscriber = self.store.subscribers.by_id(subscriber_id)
        planned = self.store.outbox.delivery_for(subscriber_id, day) if subscriber else None
        if subscriber is None or planned is None or not planned.paper_ids:
            return None
        return self.composer.render(subscriber, day, self.composer.papers(planned.paper_ids)).html

    def why_no_digest(self, email: str, day: date) -> SkipReason | None:
        """Why `email` gets (or got) no digest for `day`; None when they get one."""
        subscriber = self._subscriber(email)
        for delivery in self.store.reports.deliveries_for(email):
            if delivery.digest_date == day:
                if delivery.status == DeliveryStatus.SKIPPED and delivery.reason:
                    return SkipReason(delivery.reason)
                return None
        return self._would_select(subscriber, day).skip_reason

    def preview(self, email: str, day: date) -> RenderedDigest:
        """The digest `email` gets (or would get) for `day`, without recording anything."""
        subscriber = self._subscriber(email)
        planned = self.store.outbox.delivery_for(subscriber.id, day)
        if planned is not None and planned.paper_ids:
            papers = self.composer.papers(planned.paper_ids)
        else:
            papers = [pick.paper for pick in self._would_select(subscriber, day).picks]
        return self.composer.render(subscriber, day, papers)

    def _subscriber(self, email: str) -> SubscriberRecord:
        subscriber = self.store.subscribers.by_email(email)
        if subscriber is None:
            raise NewsletterError(f"no subscriber {email}")
        return subscriber

    def _would_select(self, subscriber: SubscriberRecord, day: date) -> Selection:
        """What planning `day` now would choose for `subscriber` (nothing is recorded)."""
        ranked = self.planner.day_papers(day)
        sent = self.store.outbox.already_sent([subscriber.id], [p.id for p in ranked])
        return self.planner.selection_for(subscriber, ranked, sent.get(subscriber.id, set()))


def _drain_in_helper(settings: Settings, demo: bool, share: int) -> DrainReport:
    """A helper process's whole life: its own newsletter, draining until planning ended."""
    app = Newsletter(settings, demo=demo)
    try:
        return asyncio.run(
            app.drain(
                sender_from_settings(settings, share), planning=still_planning, exclusive=False
            )
        )
    finally:
        app.close()

"""The daily pipeline, wired together: fetch a day's list, plan the outbox, deliver it.

The CLI, the demo and the scheduler all drive the newsletter through this one object.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from newsletter.config import Settings
from newsletter.digest import Interests, Pick, Selection, Selector, match, rank, select
from newsletter.errors import NewsletterError, SourceError
from newsletter.links import Links
from newsletter.papers import Paper
from newsletter.records import PlannedDelivery
from newsletter.render import CachedRenderer, DigestRenderer, RenderedDigest
from newsletter.schedule import due_at, weekly_due
from newsletter.send.engine import DeliveryLoop, DeliveryPolicy, DrainReport
from newsletter.send.message import (
    EncodedDigest,
    Envelope,
    build_message_from,
    quoted_printable,
)
from newsletter.send.pipelined import PipelinedSmtpSender
from newsletter.send.senders import Sender, SmtpSender, smtp_config_from
from newsletter.sources import FetchResult, arxiv, huggingface, localfile
from newsletter.states import DeliveryStatus, SkipReason
from newsletter.store import ClaimedDelivery, Store, SubscriberRecord
from newsletter.topics import Taxonomy, load_taxonomy


@dataclass
class FetchReport:
    day: date
    stored: int
    problems: list[str]


@dataclass
class PlanReport:
    day: date
    queued: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    already_planned: int = 0
    superseded: int = 0
    seconds: float = 0.0


@dataclass
class SendReport:
    plan: PlanReport
    drain: DrainReport


@dataclass
class ComposeClock:
    """CPU seconds spent composing messages, so a run can say what its time went on."""

    render: float = 0.0  # the digest for these papers and this subscriber's own values
    build: float = 0.0  # headers and MIME bytes


def interests_of(subscriber: SubscriberRecord) -> Interests:
    return Interests(tuple(subscriber.topics), tuple(subscriber.keywords))


class Newsletter:
    def __init__(self, settings: Settings, *, demo: bool = False) -> None:
        if not demo:
            settings.require_real_secret()
        self.settings = settings
        self.store = Store(settings.database_url)
        self.taxonomy: Taxonomy = load_taxonomy(settings.resolved_topics_file())
        self.links = Links(
            settings.base_url, settings.secret_key.get_secret_value(), settings.from_domain
        )
        self._renderer: DigestRenderer | None = None
        self._cached: CachedRenderer | None = None
        self._matched: dict[tuple[tuple[str, ...], Interests], list[Pick]] = {}
        self._papers: dict[str, Paper] = {}
        self._demo = demo
        self.compose_clock = ComposeClock()

    @property
    def renderer(self) -> DigestRenderer:
        if self._renderer is None:  # compiled on first use: `fetch` and `topics` never need it
            self._renderer = DigestRenderer(
                self.settings.resolved_templates_dir(),
                self.taxonomy,
                self.links,
                self.settings.newsletter_name,
            )
        return self._renderer

    @property
    def cached_renderer(self) -> CachedRenderer:
        """The renderer the send path uses: each distinct digest rendered and encoded once."""
        if self._cached is None:
            self._cached = CachedRenderer(self.renderer, self.settings.render_cache_size)
        return self._cached

    def close(self) -> None:
        self.store.close()

    # -- fetch ----------------------------------------------------------------------------

    def read_source(self, day: date | None, source: str | None = None) -> tuple[date, FetchResult]:
        s = self.settings
        name = source or s.source
        if name == "hf":
            day = day or date.today()
            return day, huggingface.fetch(day, s.hf_api_url, s.hf_page_size, s.http_timeout)
        if name == "arxiv":
            return day or date.today(), arxiv.fetch(
                s.arxiv_categories,
                mode=s.arxiv_mode,
                rss_url=s.arxiv_rss_url,
                api_url=s.arxiv_api_url,
                max_results=s.arxiv_max_results,
                interval=s.arxiv_request_interval,
                timeout=s.http_timeout,
            )
        return localfile.read_day(Path(name), day)

    def fetch(self, day: date | None = None, source: str | None = None) -> FetchReport:
        day, result = self.read_source(day, source)
        if not result.papers:
            problems = f" ({len(result.problems)} unreadable items)" if result.problems else ""
            raise SourceError(f"the source listed no papers for {day}{problems}; nothing stored")
        self.store.store_day(day, result.papers)
        return FetchReport(day, len(result.papers), result.problems)

    # -- plan -----------------------------------------------------------------------------

    def day_papers(self, day: date) -> list[Paper]:
        papers = self.store.day_papers(day)
        if not papers:
            raise NewsletterError(
                f"no papers stored for {day}; run `newsletter fetch --date {day}`"
            )
        return rank(papers)

    def selection_for(
        self, subscriber: SubscriberRecord, ranked: list[Paper], already_sent: set[str]
    ) -> Selection:
        return select(
            ranked, interests_of(subscriber), self.taxonomy, already_sent, self.settings.max_papers
        )

    def plan(self, day: date, *, dry_run: bool = False, immediately: bool = False) -> PlanReport:
        """Write one delivery per due subscriber for `day`, before any SMTP.

        Daily subscribers are due every day and choose from the day's list; weekly ones on their
        weekday, choosing from the week's lists. Each delivery becomes sendable at the
        subscriber's local delivery hour. Safe to repeat and to run concurrently: subscribers
        already planned for the day are left alone, and the database's unique key settles races.
        """
        started = time.monotonic()
        s = self.settings
        daily = self.day_papers(day)
        weekly: list[Paper] | None = None  # the week's pool, read once if anyone needs it
        choose_daily = Selector(daily, self.taxonomy, s.max_papers)
        choose_weekly: Selector | None = None
        report = PlanReport(day)
        if not dry_run:
            report.superseded = self.store.supersede_older(day)
            self.store.start_run(day, len(daily))
        for batch in self.store.plan_candidates(day, s.batch_size):
            due = [
                c
                for c in batch
                if c.subscriber.frequency != "weekly"
                or weekly_due(day, c.subscriber.weekday, s.weekly_weekday)
            ]
            report.already_planned += sum(c.planned for c in due)
            todo = [c for c in due if not c.planned]
            if weekly is None and any(c.subscriber.frequency == "weekly" for c in todo):
                weekly = self.week_papers(day)
                choose_weekly = Selector(weekly, self.taxonomy, s.max_papers)
            candidates = {p.id for p in [*daily, *(weekly or [])]}
            sent = self.store.already_sent([c.subscriber.id for c in todo], list(candidates))
            planned = []
            for candidate in todo:
                subscriber = candidate.subscriber
                choose = (
                    choose_weekly
                    if subscriber.frequency == "weekly" and choose_weekly
                    else choose_daily
                )
                if candidate.suppressed:
                    selection = Selection((), SkipReason.SUPPRESSED)
                else:
                    selection = choose(interests_of(subscriber), sent.get(subscriber.id, ()))
                planned.append(
                    PlannedDelivery(
                        subscriber_id=subscriber.id,
                        status=DeliveryStatus.QUEUED if selection.picks else DeliveryStatus.SKIPPED,
                        reason=selection.skip_reason,
                        message_id=self.links.message_id(subscriber.id, day),
                        paper_ids=selection.paper_ids,
                        due_at=None
                        if immediately
                        else due_at(
                            day + timedelta(days=s.digest_lag_days),
                            subscriber.timezone,
                            subscriber.delivery_hour,
                            s.default_timezone,
                            s.default_delivery_hour,
                        ),
                    )
                )
            # Count only the rows this call created: a racing planner counts the rest.
            created = (
                {p.subscriber_id for p in planned}
                if dry_run
                else self.store.add_deliveries(day, planned)
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
            self.store.finish_run(day)
        report.seconds = time.monotonic() - started
        return report

    def week_papers(self, day: date) -> list[Paper]:
        """Every paper listed in the seven days ending `day`, ranked: the weekly digest's pool."""
        return rank(self.store.papers_listed_between(day - timedelta(days=6), day))

    # -- render and deliver ---------------------------------------------------------------

    def papers(self, ids: list[str]) -> list[Paper]:
        missing = [i for i in ids if i not in self._papers]
        if missing:
            self._papers.update(self.store.papers_by_id(missing))
        return [self._papers[i] for i in ids if i in self._papers]

    def render(
        self, subscriber: SubscriberRecord, day: date, papers: list[Paper]
    ) -> RenderedDigest:
        interests = interests_of(subscriber)
        picks = [Pick(p, match(p, interests, self.taxonomy)) for p in papers]
        return self.renderer.render(
            subscriber_id=subscriber.id,
            email=subscriber.email,
            day=day,
            interests=interests,
            picks=picks,
        )

    def _picks(self, paper_ids: list[str], interests: Interests) -> list[Pick]:
        """The papers with the labels they match, memoised: most subscribers share both."""
        key = (tuple(paper_ids), interests)
        picks = self._matched.get(key)
        if picks is None:
            picks = [Pick(p, match(p, interests, self.taxonomy)) for p in self.papers(paper_ids)]
            if len(self._matched) >= 4096:  # bounded: memory must not grow with subscribers
                self._matched.clear()
            self._matched[key] = picks
        return picks

    def compose(self, delivery: ClaimedDelivery) -> Envelope:
        """The message for a claimed delivery; ValueError when the address cannot be used.

        Subscribers who get the same papers for the same reasons share one rendered and
        quoted-printable encoded digest; only the lines with their address and signed links
        are filled in and encoded per message. The bytes equal those of rendering and encoding
        each message on its own (tests/test_fast_path.py proves it).
        """
        started = time.perf_counter()
        subscriber = delivery.subscriber
        day = delivery.digest_date
        interests = interests_of(subscriber)
        picks = self._picks(delivery.paper_ids, interests)
        cached = self.cached_renderer
        shared = cached.template(day, interests, picks)
        if shared is None:  # the cache declined (its self-check failed): render in full
            rendered = self.renderer.render(
                subscriber_id=subscriber.id,
                email=subscriber.email,
                day=day,
                interests=interests,
                picks=picks,
            )
            subject = rendered.subject
            text_qp, html_qp = quoted_printable(rendered.text), quoted_printable(rendered.html)
            text_wire = html_wire = None
            unsubscribe_url = self.links.unsubscribe(subscriber.id)
        else:
            encoded = shared.encoded
            if not isinstance(encoded, EncodedDigest):
                encoded = shared.encoded = EncodedDigest.of(
                    shared.text, shared.html, shared.tokens.values()
                )
            html_values, text_values = cached.personal(subscriber.id, subscriber.email, day)
            # The List-Unsubscribe header carries the link the footer has (signed once).
            unsubscribe_url = text_values[cached.tokens["unsubscribe_url"]]
            subject = shared.subject
            (text_qp, text_wire), (html_qp, html_wire) = (
                encoded.text.encode(text_values),
                encoded.html.encode(html_values),
            )
        composed = time.perf_counter()
        self.compose_clock.render += composed - started
        envelope = build_message_from(
            from_address=self.settings.from_address,
            to_address=subscriber.email,
            subject=subject,
            message_id=delivery.message_id,
            list_id=self.settings.list_id,
            list_name=self.settings.newsletter_name,
            unsubscribe_url=unsubscribe_url,
            text_qp=text_qp,
            html_qp=html_qp,
            text_wire=text_wire,
            html_wire=html_wire,
        )
        self.compose_clock.build += time.perf_counter() - composed
        return envelope

    def policy(self) -> DeliveryPolicy:
        s = self.settings
        return DeliveryPolicy(
            batch_size=s.batch_size,
            lease_seconds=s.lease_seconds,
            max_attempts=s.max_attempts,
            retry_base_seconds=s.retry_base_seconds,
            retry_max_seconds=s.retry_max_seconds,
            retry_wait_seconds=s.retry_wait_seconds,
            hard_bounce_limit=s.hard_bounce_limit,
            sender_error_threshold=s.sender_error_threshold,
            unreachable_threshold=s.smtp_unreachable_threshold,
            record_every=s.record_every,
            store_retries=s.store_retries,
        )

    def smtp_sender(self, share: int = 1) -> Sender:
        """The configured SMTP sender; with `share` processes sending at once, each gets that
        share of the rate limit, which is for the whole run."""
        config = smtp_config_from(self.settings)
        config.rate_limit /= share
        if self.settings.smtp_client == "pipelined":
            return PipelinedSmtpSender(config)
        return SmtpSender(config)

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
        sender = sender or self.smtp_sender()
        clock = self.compose_clock = ComposeClock()
        try:
            with self.store.exclusive_sender() if exclusive else contextlib.nullcontext():
                report = await DeliveryLoop(
                    self.store, sender, self.compose, self.policy(), progress, planning
                ).run()
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
        sending the outbox while this one is still planning it, then this one sends too: one
        Python process is bound to one core by the GIL.
        """
        if not self.store.day_papers(day):
            self.fetch(day)
        helpers = (processes or self.settings.send_processes) - 1
        if helpers < 1 or sender is not None:
            plan = self.plan(day, immediately=now)
            return SendReport(plan, await self.drain(sender, progress))
        share = helpers + 1
        with self.store.exclusive_sender():
            context = multiprocessing.get_context("spawn")  # no inherited engine or event loop
            planned = context.Event()
            with ProcessPoolExecutor(
                helpers,
                mp_context=context,
                initializer=_start_helper,
                initargs=(planned, os.getpid()),
            ) as pool:
                loop = asyncio.get_running_loop()
                others = [
                    loop.run_in_executor(pool, _drain_in_helper, self.settings, self._demo, share)
                    for _ in range(helpers)
                ]
                try:
                    plan = self.plan(day, immediately=now)
                finally:
                    planned.set()  # also when planning failed: the helpers send what is there
                report = await self.drain(
                    self.smtp_sender(share), progress=progress, exclusive=False
                )
                for other in await asyncio.gather(*others, return_exceptions=True):
                    if isinstance(other, BaseException):
                        # Its claims expire and are sent again by whoever runs next; the
                        # run says so instead of ending in a traceback.
                        report.stopped = report.stopped or f"a sending process failed: {other!r}"
                    else:
                        report.add(other)
        return SendReport(plan, report)

    def web_version(self, subscriber_id: int, day: date) -> str | None:
        """The HTML of a digest that was planned for the subscriber, for "view in browser"."""
        subscriber = self.store.subscriber_by_id(subscriber_id)
        planned = self.store.delivery_for(subscriber_id, day) if subscriber else None
        if subscriber is None or planned is None or not planned[1]:
            return None
        return self.render(subscriber, day, self.papers(planned[1])).html

    def preview(self, email: str, day: date) -> RenderedDigest:
        """The digest `email` gets (or would get) for `day`, without recording anything."""
        subscriber = self.store.subscriber(email)
        if subscriber is None:
            raise NewsletterError(f"no subscriber {email}")
        planned = self.store.delivery_for(subscriber.id, day)
        if planned is not None and planned[1]:
            papers = self.papers(planned[1])
        else:
            ranked = self.day_papers(day)
            sent = self.store.already_sent([subscriber.id], [p.id for p in ranked])
            selection = self.selection_for(subscriber, ranked, sent.get(subscriber.id, set()))
            papers = [pick.paper for pick in selection.picks]
        return self.render(subscriber, day, papers)


# -- the helper processes of a multi-process `send` -------------------------------------------

_plan_signal: tuple[Any, int] | None = None  # (the "planned" event, the planning process id)

PR_SET_PDEATHSIG = 1  # prctl(2): a signal for this process when its parent dies


def _start_helper(planned: Any, planner: int) -> None:
    """Runs first in each helper. The kernel is asked to end the helper when the planning
    process dies (kill -9, a SIGTERM from a supervisor): an orphan would keep sending, outside
    the SQLite sender lock its parent held, and keep its parent's output open. Its claims then
    expire and are sent by the next run, as after any crash."""
    global _plan_signal
    _plan_signal = (planned, planner)
    with contextlib.suppress(OSError, AttributeError):  # Linux only; elsewhere best effort
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != planner:  # it died before the request took effect
        os._exit(1)


def _still_planning() -> bool:
    """The planner has not said it is done, and is alive (a killed planner says nothing)."""
    assert _plan_signal is not None
    planned, planner = _plan_signal
    return not planned.is_set() and os.getppid() == planner


def _drain_in_helper(settings: Settings, demo: bool, share: int) -> DrainReport:
    app = Newsletter(settings, demo=demo)
    try:
        return asyncio.run(
            app.drain(app.smtp_sender(share), planning=_still_planning, exclusive=False)
        )
    finally:
        app.close()

"""Composing messages: a claimed delivery becomes the bytes handed to the relay.

The Composer owns the renderers and their caches (compiled once per process, on first use) and
the paper cache, so the send path, "view in browser" and `preview` render the same digest.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from newsletter.links import Links
from newsletter.papers import Paper
from newsletter.records import ClaimedDelivery, SubscriberRecord
from newsletter.render import CachedRenderer, DigestRenderer, RenderedDigest
from newsletter.selection import Interests, Pick, match
from newsletter.send.message import EncodedDigest, Envelope, build_message_from, quoted_printable
from newsletter.topics import Taxonomy

if TYPE_CHECKING:
    from newsletter.config import Settings

# Memoised matches are bounded: memory must not grow with the number of subscribers.
MATCH_MEMO_LIMIT = 4096
# Reasons are read for a window of delivery ids at a time (claims come in id order), and a few
# windows are kept: one query per thousand messages, not one each.
REASON_WINDOW = 1024
REASON_WINDOWS_KEPT = 8


class PaperLookup(Protocol):
    def by_id(self, ids: Iterable[str]) -> dict[str, Paper]: ...


class ReasonLookup(Protocol):
    """Why each paper of a digest is there, as the planner stored it (store.relevance)."""

    def reasons(self, subscriber_id: int, day: date) -> list[str] | None: ...

    def reasons_of_deliveries(self, first: int, last: int) -> tuple[dict[int, list[str]], int]: ...


@dataclass(frozen=True)
class ComposerConfig:
    templates_dir: Path
    newsletter_name: str
    from_address: str
    list_id: str
    render_cache_size: int = 128

    @classmethod
    def from_settings(cls, settings: Settings) -> ComposerConfig:
        return cls(
            templates_dir=settings.resolved_templates_dir(),
            newsletter_name=settings.newsletter_name,
            from_address=settings.from_address,
            list_id=settings.list_id,
            render_cache_size=settings.render_cache_size,
        )


@dataclass
class ComposeClock:
    """CPU seconds spent composing messages, so a run can say what its time went on."""

    render: float = 0.0  # the digest for these papers and this subscriber's own values
    build: float = 0.0  # headers and MIME bytes


class Composer:
    def __init__(
        self,
        config: ComposerConfig,
        papers: PaperLookup,
        taxonomy: Taxonomy,
        links: Links,
        reasons: ReasonLookup | None = None,
    ) -> None:
        self.config = config
        self.reason_lookup = reasons
        self._reason_windows: OrderedDict[int, tuple[dict[int, list[str]], int]] = OrderedDict()
        self.paper_lookup = papers
        self.taxonomy = taxonomy
        self.links = links
        self.clock = ComposeClock()
        self._renderer: DigestRenderer | None = None
        self._cached: CachedRenderer | None = None
        self._matched: dict[tuple[tuple[str, ...], Interests], list[Pick]] = {}
        self._papers: dict[str, Paper] = {}

    @property
    def renderer(self) -> DigestRenderer:
        if self._renderer is None:  # compiled on first use: `fetch` and `topics` never need it
            self._renderer = DigestRenderer(
                self.config.templates_dir, self.taxonomy, self.links, self.config.newsletter_name
            )
        return self._renderer

    @property
    def cached_renderer(self) -> CachedRenderer:
        """The renderer the send path uses: each distinct digest rendered and encoded once."""
        if self._cached is None:
            self._cached = CachedRenderer(self.renderer, self.config.render_cache_size)
        return self._cached

    def papers(self, ids: list[str]) -> list[Paper]:
        """The papers of `ids` in that order, read once per process (digests share them)."""
        missing = [i for i in ids if i not in self._papers]
        if missing:
            self._papers.update(self.paper_lookup.by_id(missing))
        return [self._papers[i] for i in ids if i in self._papers]

    def render(
        self, subscriber: SubscriberRecord, day: date, papers: list[Paper]
    ) -> RenderedDigest:
        """The whole digest for one subscriber, rendered on its own (web version, preview)."""
        interests = Interests.of(subscriber)
        picks = [Pick(p, match(p, interests, self.taxonomy)) for p in papers]
        stored = self.reason_lookup.reasons(subscriber.id, day) if self.reason_lookup else None
        return self.renderer.render(
            subscriber_id=subscriber.id,
            salt=subscriber.token_salt,
            email=subscriber.email,
            day=day,
            interests=interests,
            picks=picks,
            reasons=aligned(stored, [p.id for p in papers], picks),
        )

    def _delivery_reasons(self, delivery: ClaimedDelivery) -> list[str] | None:
        """The stored reasons of a claimed delivery, read a window of deliveries at a time."""
        if self.reason_lookup is None:
            return None
        start = delivery.id - delivery.id % REASON_WINDOW
        window = self._reason_windows.get(start)
        if window is None or delivery.id > window[1]:  # unknown, or planned since it was read
            window = self.reason_lookup.reasons_of_deliveries(start, start + REASON_WINDOW)
            self._reason_windows[start] = window
            if len(self._reason_windows) > REASON_WINDOWS_KEPT:
                self._reason_windows.popitem(last=False)
        return window[0].get(delivery.id)

    def _picks(self, paper_ids: list[str], interests: Interests) -> list[Pick]:
        """The papers with the labels they match, memoised: most subscribers share both."""
        key = (tuple(paper_ids), interests)
        picks = self._matched.get(key)
        if picks is None:
            picks = [Pick(p, match(p, interests, self.taxonomy)) for p in self.papers(paper_ids)]
            if len(self._matched) >= MATCH_MEMO_LIMIT:
                self._matched.clear()
            self._matched[key] = picks
        return picks

    def compose(self, delivery: ClaimedDelivery) -> Envelope:
        """The message for a claimed delivery; ValueError when the address cannot be used.

        Subscribers who get the same papers for the same reasons share one rendered and
        quoted-printable encoded digest; only their address and signed links are encoded per
        message and spliced in. The message decodes to the one rendering and encoding it on
        its own gives (tests/test_fast_path.py proves it); only where soft breaks fall differs.
        """
        started = time.perf_counter()
        subscriber = delivery.subscriber
        day = delivery.digest_date
        interests = Interests.of(subscriber)
        picks = self._picks(delivery.paper_ids, interests)
        reasons = aligned(self._delivery_reasons(delivery), delivery.paper_ids, picks)
        cached = self.cached_renderer
        shared = cached.template(day, interests, picks, reasons)
        if shared is None:  # the cache declined (its self-check failed): render in full
            rendered = self.renderer.render(
                subscriber_id=subscriber.id,
                salt=subscriber.token_salt,
                email=subscriber.email,
                day=day,
                interests=interests,
                picks=picks,
                reasons=reasons,
            )
            subject = rendered.subject
            text_qp, html_qp = quoted_printable(rendered.text), quoted_printable(rendered.html)
            text_wire = html_wire = None
            unsubscribe_url = self.links.unsubscribe(subscriber.id, subscriber.token_salt)
        else:
            encoded = shared.encoded
            if not isinstance(encoded, EncodedDigest):
                encoded = shared.encoded = EncodedDigest.of(
                    shared.text, shared.html, shared.tokens.values()
                )
            html_values, text_values = cached.personal(
                subscriber.id, subscriber.token_salt, subscriber.email, day
            )
            # The List-Unsubscribe header carries the link the footer has (signed once).
            unsubscribe_url = text_values[cached.tokens["unsubscribe_url"]]
            subject = shared.subject
            (text_qp, text_wire), (html_qp, html_wire) = (
                encoded.text.encode(text_values),
                encoded.html.encode(html_values),
            )
        composed = time.perf_counter()
        self.clock.render += composed - started
        config = self.config
        envelope = build_message_from(
            from_address=config.from_address,
            to_address=subscriber.email,
            subject=subject,
            message_id=delivery.message_id,
            list_id=config.list_id,
            list_name=config.newsletter_name,
            unsubscribe_url=unsubscribe_url,
            text_qp=text_qp,
            html_qp=html_qp,
            text_wire=text_wire,
            html_wire=html_wire,
        )
        self.clock.build += time.perf_counter() - composed
        return envelope


def aligned(
    stored: Sequence[str] | None, paper_ids: Sequence[str], picks: Sequence[Pick]
) -> list[str]:
    """The stored reasons (one per planned paper id) for the picks that are rendered: a paper
    deleted since planning is left out of the picks, and its reason with it."""
    if not stored:
        return []
    by_id = dict(zip(paper_ids, stored, strict=False))
    return [by_id.get(pick.paper.id, "") for pick in picks]

"""Choosing each subscriber's papers: topic match, minus everything already sent, ranked, capped.

Pure functions over values, no I/O, so the rules are tested directly and the planner can call
them for thousands of subscribers per batch.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from newsletter.papers import Paper
from newsletter.records import SubscriberRecord
from newsletter.states import SkipReason
from newsletter.topics import Taxonomy, keywords_match, matching_text


@dataclass(frozen=True)
class Interests:
    """What a subscriber asked for. No topics and no keywords means "the day's top papers"."""

    topics: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()

    @property
    def everything(self) -> bool:
        return not self.topics and not self.keywords

    @classmethod
    def of(cls, subscriber: SubscriberRecord) -> Interests:
        return cls(tuple(subscriber.topics), tuple(subscriber.keywords))


@dataclass(frozen=True)
class Pick:
    paper: Paper
    matched: tuple[str, ...]  # topic names and keywords that selected it, for the mail


@dataclass(frozen=True)
class Selection:
    picks: tuple[Pick, ...]
    skip_reason: SkipReason | None  # set exactly when picks is empty

    @property
    def paper_ids(self) -> list[str]:
        return [pick.paper.id for pick in self.picks]


def rank_key(paper: Paper) -> tuple[int, int, int]:
    """Most upvoted first, then most discussed, then the most recently published.

    `rank` sorts stably, so papers equal on all three keep the order of the list they came in:
    the day's announcement order. That is what an arXiv-only day, where nobody voted, is
    ranked by; an arbitrary key such as the id would only pretend to an order.
    """
    recency = paper.published_on.toordinal() if paper.published_on else 0
    return (-paper.upvotes, -paper.comments, -recency)


def rank(papers: Sequence[Paper]) -> list[Paper]:
    return sorted(papers, key=rank_key)


def match(paper: Paper, interests: Interests, taxonomy: Taxonomy) -> tuple[str, ...]:
    """Labels of the interests `paper` matches; empty when it matches none."""
    text = matching_text(paper)
    labels = [
        topic.name
        for slug in interests.topics
        if (topic := taxonomy.by_slug.get(slug)) is not None and topic.matches(paper, text)
    ]
    for keyword in interests.keywords:
        if keywords_match((keyword,), text):
            labels.append(keyword)
    return tuple(labels)


def select(
    ranked_papers: Sequence[Paper],
    interests: Interests,
    taxonomy: Taxonomy,
    already_sent: Collection[str],
    cap: int,
) -> Selection:
    """Pick up to `cap` papers from `ranked_papers` (already in rank order) for one subscriber.

    Among papers the ranking holds equal (the same upvotes and comments: on an arXiv-only day,
    all of them), a paper matching more of the subscriber's interests comes first.
    """
    candidates: list[tuple[tuple[int, int, int, int], Pick]] = []
    matched_any = False
    for index, paper in enumerate(ranked_papers):
        labels = () if interests.everything else match(paper, interests, taxonomy)
        if not interests.everything and not labels:
            continue
        matched_any = True
        if paper.id in already_sent:
            continue
        order = (-paper.upvotes, -paper.comments, -len(labels), index)
        candidates.append((order, Pick(paper, labels)))
        if interests.everything and len(candidates) >= cap:
            break  # no labels to reorder by: the ranking's first `cap` are the answer
    if candidates:
        candidates.sort(key=lambda candidate: candidate[0])
        return Selection(tuple(pick for _, pick in candidates[:cap]), None)
    reason = SkipReason.NOTHING_NEW if matched_any else SkipReason.NO_MATCH
    return Selection((), reason)


class Selector:
    """`select` over one ranked list, memoised.

    A selection depends only on the interests and on which of the list's papers were already
    sent, and most subscribers share both with many others (a popular topic, nothing sent yet),
    so the planner computes each distinct case once instead of matching every paper against
    every subscriber. The memo is bounded: memory must not grow with the number of subscribers.
    """

    def __init__(
        self, ranked_papers: Sequence[Paper], taxonomy: Taxonomy, cap: int, limit: int = 4096
    ) -> None:
        self.ranked_papers = ranked_papers
        self.taxonomy = taxonomy
        self.cap = cap
        self.limit = limit
        self._ids = frozenset(paper.id for paper in ranked_papers)
        self._memo: dict[tuple[Interests, frozenset[str]], Selection] = {}

    def __call__(self, interests: Interests, already_sent: Collection[str]) -> Selection:
        key = (interests, self._ids.intersection(already_sent))
        selection = self._memo.get(key)
        if selection is None:
            selection = select(self.ranked_papers, interests, self.taxonomy, key[1], self.cap)
            if len(self._memo) >= self.limit:
                self._memo.clear()
            self._memo[key] = selection
        return selection

"""Keeping relevance state current: each paper embedded once, each reader's profile recomputed
only when their words, their feedback or the model change.

The planner asks for a day (its papers with their vectors) and for a batch of readers' profiles;
this module reads what the store kept, computes only what is missing or out of date, and stores
it again, so the model runs on new papers and changed readers, never on the whole list.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring_ascii
from typing import Protocol, cast

import numpy as np

from newsletter.clock import utcnow
from newsletter.papers import Paper
from newsletter.records import SubscriberRecord
from newsletter.relevance.embedding import ModelError, Vectors, paper_text
from newsletter.relevance.profile import (
    Embedder,
    Profile,
    Signal,
    Words,
    build_profile,
    with_feedback,
)
from newsletter.relevance.scoring import Day
from newsletter.relevance.state import FeedbackRecord, StoredProfile
from newsletter.topics import Taxonomy

log = logging.getLogger(__name__)

# json.dumps's own encoder for str (ensure_ascii), so the key is byte for byte what it wrote.
_json_string = encode_basestring_ascii

# Vectors of texts embedded in this process, so that re-fetching a day or planning it right
# after fetching does not run the model again. Bounded: a few days of papers.
TEXT_MEMO_LIMIT = 2048


class PaperEmbedder(Protocol):
    """The model, as profiles use it (MiniLM satisfies it)."""

    @property
    def model_id(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> Vectors: ...

    def embed_papers(self, papers: Sequence[Paper]) -> Vectors: ...


class RelevanceStore(Protocol):
    """What keeping profiles needs from the store (store.relevance provides it)."""

    def paper_vectors(self, paper_ids: Iterable[str], model_id: str) -> dict[str, Vectors]: ...

    def save_paper_vectors(self, model_id: str, vectors: Mapping[str, Vectors]) -> None: ...

    def profiles(
        self, subscriber_ids: Iterable[int], model_id: str
    ) -> Mapping[int, StoredProfile]: ...

    def save_profile(self, subscriber_id: int, words_key: str, profile: Profile) -> None: ...

    def feedback(self, subscriber_id: int) -> Sequence[FeedbackRecord]: ...


class PaperLookup(Protocol):
    def by_id(self, ids: Iterable[str]) -> dict[str, Paper]: ...


@dataclass(frozen=True, eq=False)
class ReaderSetup:
    """How one reader is chosen for. `profile` is None for a reader who only gave
    exclude-words: they keep literal matching, minus what they exclude."""

    profile: Profile | None
    exclude: tuple[str, ...]


def words_key(words: Words) -> str:
    """What a profile was computed from; any change to it means computing it again.

    The SHA-256 of json.dumps([about, topics, keywords]), the stored format, written out with
    json's own string encoder: planning checks every profile reader's key, and json.dumps
    builds an encoder per call, which cost more than the hash.
    """
    data = "[{}, [{}], [{}]]".format(
        _json_string(words.about),
        ", ".join(map(_json_string, words.topics)),
        ", ".join(map(_json_string, words.keywords)),
    )
    return hashlib.sha256(data.encode()).hexdigest()


class Profiles:
    def __init__(
        self,
        store: RelevanceStore,
        papers: PaperLookup,
        taxonomy: Taxonomy,
        embedder: PaperEmbedder,
    ) -> None:
        self.store = store
        self.papers = papers
        self.taxonomy = taxonomy
        self.embedder = embedder
        self._memo: dict[str, Vectors] = {}

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    def vectors(self, papers: Sequence[Paper]) -> dict[str, Vectors]:
        """Every paper's vector by this model: stored ones read, missing ones computed and
        stored (papers of another model's era are embedded again)."""
        found = self.store.paper_vectors([p.id for p in papers], self.model_id)
        missing = [p for p in papers if p.id not in found]
        if missing:
            todo = [p for p in missing if paper_text(p) not in self._memo]
            if todo:
                for paper, vector in zip(todo, self.embedder.embed_papers(todo), strict=True):
                    if len(self._memo) >= TEXT_MEMO_LIMIT:
                        self._memo.clear()
                    self._memo[paper_text(paper)] = vector
            computed = {p.id: self._memo[paper_text(p)] for p in missing}
            self.store.save_paper_vectors(self.model_id, computed)
            found.update(computed)
        return found

    def embed_stored(self, papers: Sequence[Paper]) -> None:
        """After a fetch: embed the papers that have no vector yet. A missing or broken model
        does not undo the fetch; the planner embeds what is still missing when it needs it."""
        try:
            self.vectors(papers)
        except ModelError as exc:
            log.warning("papers stored without vectors: %s", exc)

    def day(self, papers: Sequence[Paper]) -> Day:
        vectors = self.vectors(papers)
        return Day.prepare(papers, np.stack([vectors[p.id] for p in papers]))

    def readers(
        self, subscribers: Sequence[SubscriberRecord], now: datetime | None = None
    ) -> dict[int, ReaderSetup]:
        """The readers of a batch chosen for by meaning or with exclusions (the others are
        left out: keyword-only readers with no feedback keep the literal path)."""
        stored = self.store.profiles([s.id for s in subscribers], self.model_id)
        if not stored:
            return {}
        now = now or utcnow()
        setups: dict[int, ReaderSetup] = {}
        for subscriber in subscribers:
            state = stored.get(subscriber.id)
            if state is None:
                continue
            about, exclude = state.words.about, tuple(state.words.exclude)
            if not about and not state.feedback_count:
                if exclude:
                    setups[subscriber.id] = ReaderSetup(None, exclude)
                continue
            words = Words(about, tuple(subscriber.topics), tuple(subscriber.keywords))
            setups[subscriber.id] = ReaderSetup(
                self._profile(subscriber.id, words, state, now), exclude
            )
        return setups

    def _profile(
        self, subscriber_id: int, words: Words, state: StoredProfile, now: datetime
    ) -> Profile | None:
        key = words_key(words)
        profile = state.profile
        if profile is not None and state.words_key == key and state.current:
            return profile
        signals = self.signals(subscriber_id) if state.feedback_count else []
        if profile is not None and state.words_key == key:
            profile = with_feedback(profile, signals, now)  # only feedback changed
        else:
            # Embedder is a plain base class there; ours is the same shape, named structurally.
            embedder = cast(Embedder, self.embedder)
            profile = build_profile(embedder, words, self.taxonomy, signals, now)
        if profile is not None:
            self.store.save_profile(subscriber_id, key, profile)
        return profile

    def signals(self, subscriber_id: int) -> list[Signal]:
        """The reader's feedback with each paper's vector (papers since deleted are left out)."""
        records = self.store.feedback(subscriber_id)
        if not records:
            return []
        papers = self.papers.by_id(r.paper_id for r in records)
        vectors = self.vectors([papers[r.paper_id] for r in records if r.paper_id in papers])
        return [
            Signal(r.paper_id, r.liked, r.at, vectors[r.paper_id])
            for r in records
            if r.paper_id in vectors
        ]

"""A reader's profile: the vector of their own words, moved by their feedback (Rocchio).

The anchor is the vector of what the reader wrote ("what do you work on?"); a reader who wrote
nothing is anchored on their topics' names and descriptions and their keywords, so feedback works
for keyword-only readers too. Liked papers pull the profile towards them and disliked ones push it
away by a smaller share (a dislike says less about what one wants than a like), and every signal
fades with age so that a reader whose work moves on is not held to last year's clicks.
A profile is computed when the reader's words, feedback or the model change, and stored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from newsletter.relevance.embedding import Vectors, normalize
from newsletter.relevance.lexical import query_terms
from newsletter.topics import Taxonomy

ABOUT_LIMIT = 600  # characters: "a sentence or two", and the model reads 256 tokens at most
PARTS_LIMIT = 8

ANCHOR_WEIGHT = 1.0
LIKED_WEIGHT = 0.75
DISLIKED_WEIGHT = 0.25
HALF_LIFE_DAYS = 90.0


class Embedder:
    """What a profile needs from the model (MiniLM satisfies it)."""

    model_id: str

    def embed(self, texts: Sequence[str]) -> Vectors:
        raise NotImplementedError


@dataclass(frozen=True)
class Words:
    """What the reader told us: free text, taxonomy topics, keywords."""

    about: str = ""
    topics: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class Signal:
    """One "more like this" (liked) or "less like this" on a paper, with the paper's vector."""

    paper_id: str
    liked: bool
    at: datetime
    vector: Vectors


@dataclass(frozen=True, eq=False)
class Profile:
    """Everything selection needs about one reader's interest; what the store keeps per reader."""

    model_id: str
    vector: Vectors  # (dimension,), unit length: the anchor moved by feedback
    anchor: Vectors  # (dimension,): the vector of the reader's words alone (zero if none)
    terms: tuple[str, ...]  # BM25 query terms of the reader's words
    parts: tuple[str, ...]  # phrases of the reader's words, named in "close to your interest in"
    part_vectors: Vectors = field(repr=False)  # (len(parts), dimension)


def clean_about(text: str) -> str:
    return " ".join(text.split())[:ABOUT_LIMIT]


def anchor_text(words: Words, taxonomy: Taxonomy) -> str:
    if words.about.strip():
        return clean_about(words.about)
    pieces = [
        f"{topic.name}: {topic.description}"
        for slug in words.topics
        if (topic := taxonomy.by_slug.get(slug)) is not None
    ]
    pieces.extend(words.keywords)
    return ". ".join(pieces)


_SPLIT = re.compile(r"[.;:,()!?]+|\s+-+\s+")
_LEAD = re.compile(
    r"^(?:(?:and|or|also|especially|mostly|mainly|in particular|such as|like|i work on|"
    r"i study|i design|i care about|my work is on|we work on)\s+)+",
    re.IGNORECASE,
)


def parts_of(words: Words, taxonomy: Taxonomy) -> list[str]:
    """The reader's words as short phrases, each a candidate for the reason a paper is there."""
    if not words.about.strip():
        names = [t.name for s in words.topics if (t := taxonomy.by_slug.get(s)) is not None]
        return [*names, *words.keywords][:PARTS_LIMIT]
    phrases: list[str] = []
    for piece in _SPLIT.split(clean_about(words.about)):
        phrase = _LEAD.sub("", piece.strip()).strip()
        if len(phrase) >= 3 and phrase.lower() not in (p.lower() for p in phrases):
            phrases.append(phrase)
    return phrases[:PARTS_LIMIT] or [clean_about(words.about)]


def fade(age_days: float, half_life_days: float = HALF_LIFE_DAYS) -> float:
    return float(0.5 ** (max(age_days, 0.0) / half_life_days))


def rocchio(
    anchor: Vectors,
    signals: Sequence[Signal],
    now: datetime,
    anchor_weight: float = ANCHOR_WEIGHT,
    liked_weight: float = LIKED_WEIGHT,
    disliked_weight: float = DISLIKED_WEIGHT,
    half_life_days: float = HALF_LIFE_DAYS,
) -> Vectors:
    """anchor + mean of liked - a smaller share of the mean of disliked, each signal faded by age.

    Each side is a faded sum divided by at least 1, not by the sum of fades: one fresh like counts
    fully, and likes that have all grown old pull less instead of being renormalised back up.
    """
    total = anchor_weight * np.asarray(anchor, dtype=np.float32)
    for liked, weight in ((True, liked_weight), (False, -disliked_weight)):
        chosen = [s for s in signals if s.liked is liked]
        if not chosen:
            continue
        fades = np.array(
            [fade((now - s.at).total_seconds() / 86400, half_life_days) for s in chosen],
            dtype=np.float32,
        )
        vectors = np.stack([np.asarray(s.vector, dtype=np.float32) for s in chosen])
        total = total + weight * (fades @ vectors) / max(1.0, float(fades.sum()))
    return normalize(total)


def build_profile(
    embedder: Embedder,
    words: Words,
    taxonomy: Taxonomy,
    signals: Sequence[Signal] = (),
    now: datetime | None = None,
) -> Profile | None:
    """The reader's profile, or None when they gave neither words, topics, keywords nor feedback."""
    anchor = anchor_text(words, taxonomy)
    parts = parts_of(words, taxonomy) if anchor else []
    if not anchor and not signals:
        return None
    vectors = embedder.embed([anchor, *parts]) if anchor else None
    dimension = len(signals[0].vector) if vectors is None else vectors.shape[1]
    anchor_vector = vectors[0] if vectors is not None else np.zeros(dimension, dtype=np.float32)
    if now is None:
        now = max((s.at for s in signals), default=None) or datetime.now()
    return Profile(
        model_id=embedder.model_id,
        vector=rocchio(anchor_vector, signals, now),
        anchor=anchor_vector,
        terms=query_terms(anchor),
        parts=tuple(parts),
        part_vectors=(
            vectors[1:] if vectors is not None else np.zeros((0, dimension), dtype=np.float32)
        ),
    )


def with_feedback(profile: Profile, signals: Sequence[Signal], now: datetime) -> Profile:
    """The same reader after new feedback: only the vector changes, no text is embedded again.

    `signals` is all of the reader's feedback (the last signal per paper), not just the new one.
    """
    return Profile(
        model_id=profile.model_id,
        vector=rocchio(profile.anchor, signals, now),
        anchor=profile.anchor,
        terms=profile.terms,
        parts=profile.parts,
        part_vectors=profile.part_vectors,
    )

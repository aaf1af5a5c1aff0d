"""A day's selection for many readers at once: hybrid scores as matrix products, in batches.

score = cosine(profile, paper) + LEXICAL_WEIGHT x BM25(reader's words, paper) / the reader's best
BM25 of the day. Measured on the labelled set in bench/relevance_set: BM25 ranks as well as the
embedding when the reader uses the field's words, the embedding is far better when they do not,
and the sum is best overall. A paper is a candidate when the cosine reaches THRESHOLD (meaning
decides whether anything is relevant at all: BM25 over the day's best match always gives someone
the full bonus) or when it matches the reader's topics or keywords literally; exclude-words remove
it. Candidates not sent before are ranked by score, literal matches lifted by LITERAL_BONUS, ties
broken by the day's popularity order, and capped.

Memory is bounded by the batch size, never by the number of readers.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

import numpy as np
import numpy.typing as npt

from newsletter.papers import Paper
from newsletter.relevance.embedding import Vectors
from newsletter.relevance.lexical import Bm25, normalized
from newsletter.relevance.profile import Profile
from newsletter.selection import Interests, match, rank_key
from newsletter.states import SkipReason
from newsletter.topics import Taxonomy, keyword_pattern, matching_text

LEXICAL_WEIGHT = 0.3
THRESHOLD = 0.35  # dev readers: the one wanting nothing in the pool peaks at 0.32
LITERAL_BONUS = 0.10
BATCH_SIZE = 1024
# Readers whose reasons are computed together: their parts and picked papers' vectors are
# copied into one array, kept to a few MB whatever the batch size.
REASON_CHUNK = 128


@dataclass(frozen=True, eq=False)
class Day:
    """One day's papers, in popularity order, with their vectors and BM25 weights: built once."""

    papers: tuple[Paper, ...]
    vectors: Vectors  # (len(papers), dimension), row i is papers[i]
    bm25: Bm25 = field(repr=False)
    texts: tuple[str, ...] = field(repr=False)
    index: dict[str, int] = field(repr=False)
    # The literal matches and exclusions readers share, kept with the day so that a plan's
    # batches compute each once (per taxonomy: a test may bring its own).
    _memos: dict[int, _Memo] = field(default_factory=dict, init=False, repr=False, compare=False)

    def memo(self, taxonomy: Taxonomy) -> _Memo:
        found = self._memos.get(id(taxonomy))
        # A shallow copy of the day (copy.copy) shares the dict: its answers are not ours.
        if found is None or found.taxonomy is not taxonomy or found.day is not self:
            found = self._memos[id(taxonomy)] = _Memo(self, taxonomy)
        return found

    @classmethod
    def prepare(cls, papers: Sequence[Paper], vectors: Vectors) -> Day:
        if len(papers) != len(vectors):
            raise ValueError(f"{len(papers)} papers but {len(vectors)} vectors")
        order = sorted(range(len(papers)), key=lambda i: rank_key(papers[i]))
        ranked = tuple(papers[i] for i in order)
        return cls(
            papers=ranked,
            vectors=np.ascontiguousarray(np.asarray(vectors, dtype=np.float32)[order]),
            bm25=Bm25.of_papers(ranked),
            texts=tuple(matching_text(p) for p in ranked),
            index={p.id: i for i, p in enumerate(ranked)},
        )


@dataclass(frozen=True, eq=False)
class Reader:
    """What selection needs about one reader."""

    profile: Profile
    interests: Interests = field(default_factory=Interests)  # still matched literally
    exclude: tuple[str, ...] = ()  # "never show me papers about ..."
    already_sent: Collection[str] = ()


@dataclass(frozen=True)
class Choice:
    paper: Paper
    score: float
    reason: str  # why it is there, for the mail: "close to your interest in ...", "matches ..."


@dataclass(frozen=True)
class Choices:
    """One reader's picks as parallel tuples: planning reads thousands of these per batch and
    needs only the papers and reasons, so no object is built per pick unless asked for."""

    papers: tuple[Paper, ...]
    scores: tuple[float, ...]
    reasons: tuple[str, ...]
    skip_reason: SkipReason | None  # set exactly when papers is empty

    @property
    def picks(self) -> tuple[Choice, ...]:
        return tuple(map(Choice, self.papers, self.scores, self.reasons))

    @property
    def paper_ids(self) -> list[str]:
        return [paper.id for paper in self.papers]


def hybrid_scores(
    day: Day,
    vectors: npt.NDArray[np.float32],
    queries: Sequence[Sequence[str]],
    lexical_weight: float = LEXICAL_WEIGHT,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(cosine, hybrid) score matrices, readers x papers."""
    cosine = vectors @ day.vectors.T
    if not lexical_weight:
        return cosine, cosine
    return cosine, cosine + lexical_weight * normalized(day.bm25.scores_many(queries))


class _Memo:
    """Per-day answers many readers share, as rows of the day's papers: literal matches per
    interest (with the reason each match gives), exclusions per list. Bounded like Selector's."""

    def __init__(self, day: Day, taxonomy: Taxonomy, limit: int = 4096) -> None:
        self.day = day
        self.taxonomy = taxonomy
        self.limit = limit
        self.literal: dict[Interests, tuple[npt.NDArray[np.bool_], dict[int, str]]] = {}
        self.excluded: dict[tuple[str, ...], npt.NDArray[np.bool_]] = {}

    def matches(self, interests: Interests) -> tuple[npt.NDArray[np.bool_], dict[int, str]]:
        found = self.literal.get(interests)
        if found is None:
            mask = np.zeros(len(self.day.papers), dtype=bool)
            reasons: dict[int, str] = {}
            if not interests.everything:
                for i, paper in enumerate(self.day.papers):
                    labels = match(paper, interests, self.taxonomy)
                    if labels:
                        mask[i] = True
                        reasons[i] = "matches " + ", ".join(labels)
            if len(self.literal) >= self.limit:
                self.literal.clear()
            found = self.literal[interests] = (mask, reasons)
        return found

    def exclusions(self, words: tuple[str, ...]) -> npt.NDArray[np.bool_]:
        found = self.excluded.get(words)
        if found is None:
            pattern = keyword_pattern(words)
            found = np.array(
                [pattern is not None and bool(pattern.search(text)) for text in self.day.texts],
                dtype=bool,
            )
            if len(self.excluded) >= self.limit:
                self.excluded.clear()
            self.excluded[words] = found
        return found


def sent_indices(day: Day, already_sent: Collection[str]) -> list[int]:
    # A long-time reader's history is much longer than a day: walk whichever is shorter.
    if len(already_sent) <= len(day.papers):
        return [i for paper_id in already_sent if (i := day.index.get(paper_id)) is not None]
    return [i for i, paper in enumerate(day.papers) if paper.id in already_sent]


def nearest_parts(
    profiles: Sequence[Profile], picked: npt.NDArray[np.float32]
) -> npt.NDArray[np.intp]:
    """For each reader and each of their picked papers (`picked`: readers x picks x dimension),
    the index of the reader's part closest to the paper: every reason of a batch at once."""
    most = max((len(p.parts) for p in profiles), default=0)
    if not most:
        return np.zeros(picked.shape[:2], dtype=np.intp)
    parts = np.zeros((len(profiles), most, picked.shape[2]), dtype=np.float32)
    absent = np.ones((len(profiles), most), dtype=bool)
    for row, profile in enumerate(profiles):
        count = len(profile.parts)
        parts[row, :count] = profile.part_vectors
        absent[row, :count] = False
    similarity = np.matmul(parts, picked.transpose(0, 2, 1))  # readers x parts x picks
    similarity[absent] = -np.inf
    return np.asarray(similarity.argmax(axis=1), dtype=np.intp)


def meaning_reason(parts: Sequence[str] | None, nearest: int) -> str:
    """Why a paper chosen by meaning is there (None: no explanation asked for)."""
    if parts is None:
        return ""
    if not parts:
        return "close to papers you liked"
    return f"close to your interest in \u201c{parts[nearest]}\u201d"


def select_many(
    day: Day,
    readers: Iterable[Reader],
    taxonomy: Taxonomy,
    cap: int,
    threshold: float = THRESHOLD,
    lexical_weight: float = LEXICAL_WEIGHT,
    literal_bonus: float = LITERAL_BONUS,
    batch_size: int = BATCH_SIZE,
    explain: bool = True,
) -> Iterator[Choices]:
    """Each reader's picks, in the order the readers came; reads `readers` one batch at a time.

    Everything but the last step is done for the whole batch as array operations; Python runs
    per reader only to name the (at most `cap`) papers picked and why.
    """
    memo = day.memo(taxonomy)
    size = len(day.papers)
    papers = day.papers
    iterator = iter(readers)
    while batch := list(islice(iterator, batch_size)):
        if not size:
            yield from (Choices((), (), (), SkipReason.NOTHING_RELEVANT) for _ in batch)
            continue
        profiles = [r.profile for r in batch]
        vectors = np.stack([p.vector for p in profiles])
        cosine, scores = hybrid_scores(day, vectors, [p.terms for p in profiles], lexical_weight)
        found = [memo.matches(r.interests) for r in batch]
        literal = np.stack([mask for mask, _ in found])
        wanted = (cosine >= threshold) | literal
        for row, reader in enumerate(batch):
            if reader.exclude:
                wanted[row] &= ~memo.exclusions(reader.exclude)
        matched_any = np.asarray(wanted.any(axis=1), dtype=bool)
        for row, reader in enumerate(batch):
            if reader.already_sent:
                wanted[row, sent_indices(day, reader.already_sent)] = False
        ranked = np.where(wanted, scores + literal_bonus * literal, -np.inf)
        # Papers are in popularity order and the sort is stable, so equal scores keep that order.
        order = np.argsort(-ranked, axis=1, kind="stable")[:, :cap]
        counts = np.minimum(wanted.sum(axis=1), cap).tolist()
        picked_scores = np.take_along_axis(scores, order, axis=1).tolist()
        nearest: list[list[int]] = []
        for first in range(0, len(batch), REASON_CHUNK) if explain else ():
            chunk = slice(first, first + REASON_CHUNK)
            nearest.extend(nearest_parts(profiles[chunk], day.vectors[order[chunk]]).tolist())
        if not explain:
            nearest = [[0] * order.shape[1]] * len(batch)
        for row, (profile, count) in enumerate(zip(profiles, counts, strict=True)):
            if not count:
                reason = SkipReason.NOTHING_NEW if matched_any[row] else SkipReason.NOTHING_RELEVANT
                yield Choices((), (), (), reason)
                continue
            picks = order[row, :count].tolist()
            labels = found[row][1]
            parts = profile.parts if explain else None
            why = [
                labels[i] if i in labels else meaning_reason(parts, part)
                for i, part in zip(picks, nearest[row], strict=False)
            ]
            yield Choices(
                tuple([papers[i] for i in picks]),
                tuple(picked_scores[row][:count]),
                tuple(why),
                None,
            )


def select(
    day: Day,
    reader: Reader,
    taxonomy: Taxonomy,
    cap: int,
    threshold: float = THRESHOLD,
    lexical_weight: float = LEXICAL_WEIGHT,
) -> Choices:
    """One reader's picks (see select_many)."""
    return next(select_many(day, [reader], taxonomy, cap, threshold, lexical_weight))

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


@dataclass(frozen=True, eq=False)
class Day:
    """One day's papers, in popularity order, with their vectors and BM25 weights: built once."""

    papers: tuple[Paper, ...]
    vectors: Vectors  # (len(papers), dimension), row i is papers[i]
    bm25: Bm25 = field(repr=False)
    texts: tuple[str, ...] = field(repr=False)
    index: dict[str, int] = field(repr=False)

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
    picks: tuple[Choice, ...]
    skip_reason: SkipReason | None  # set exactly when picks is empty

    @property
    def paper_ids(self) -> list[str]:
        return [choice.paper.id for choice in self.picks]


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
    """Per-day answers many readers share: literal matches per interest, exclusions per list."""

    def __init__(self, day: Day, taxonomy: Taxonomy) -> None:
        self.day = day
        self.taxonomy = taxonomy
        self.literal: dict[Interests, dict[int, tuple[str, ...]]] = {}
        self.excluded: dict[tuple[str, ...], list[int]] = {}

    def matches(self, interests: Interests) -> dict[int, tuple[str, ...]]:
        found = self.literal.get(interests)
        if found is None:
            found = {}
            if not interests.everything:
                for i, paper in enumerate(self.day.papers):
                    labels = match(paper, interests, self.taxonomy)
                    if labels:
                        found[i] = labels
            if len(self.literal) >= 4096:
                self.literal.clear()
            self.literal[interests] = found
        return found

    def exclusions(self, words: tuple[str, ...]) -> list[int]:
        found = self.excluded.get(words)
        if found is None:
            pattern = keyword_pattern(words)
            found = (
                []
                if pattern is None
                else [i for i, text in enumerate(self.day.texts) if pattern.search(text)]
            )
            if len(self.excluded) >= 4096:
                self.excluded.clear()
            self.excluded[words] = found
        return found


def sent_indices(day: Day, already_sent: Collection[str]) -> list[int]:
    # A long-time reader's history is much longer than a day: walk whichever is shorter.
    if len(already_sent) <= len(day.papers):
        return [i for paper_id in already_sent if (i := day.index.get(paper_id)) is not None]
    return [i for i, paper in enumerate(day.papers) if paper.id in already_sent]


def reason_for(profile: Profile, paper_vector: Vectors) -> str:
    if not len(profile.parts):
        return "close to papers you liked"
    nearest = int(np.argmax(profile.part_vectors @ paper_vector))
    return f"close to your interest in \u201c{profile.parts[nearest]}\u201d"


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
    """Each reader's picks, in the order the readers came; reads `readers` one batch at a time."""
    memo = _Memo(day, taxonomy)
    size = len(day.papers)
    iterator = iter(readers)
    while batch := list(islice(iterator, batch_size)):
        if not size:
            yield from (Choices((), SkipReason.NOTHING_RELEVANT) for _ in batch)
            continue
        vectors = np.stack([r.profile.vector for r in batch])
        queries = [r.profile.terms for r in batch]
        cosine, scores = hybrid_scores(day, vectors, queries, lexical_weight)
        relevant = cosine >= threshold
        literal = np.zeros_like(relevant)
        labels: list[dict[int, tuple[str, ...]]] = []
        blocked_rows: list[int] = []
        blocked_columns: list[int] = []
        for row, reader in enumerate(batch):
            found = memo.matches(reader.interests)
            labels.append(found)
            if found:
                literal[row, list(found)] = True
            for i in memo.exclusions(reader.exclude) if reader.exclude else ():
                blocked_rows.append(row)
                blocked_columns.append(i)
        wanted = relevant | literal
        wanted[blocked_rows, blocked_columns] = False
        matched_any = np.asarray(wanted.any(axis=1), dtype=bool)
        for row, reader in enumerate(batch):
            if reader.already_sent:
                wanted[row, sent_indices(day, reader.already_sent)] = False
        ranked = np.where(wanted, scores + literal_bonus * literal, -np.inf)
        # Papers are in popularity order and the sort is stable, so equal scores keep that order.
        order = np.argsort(-ranked, axis=1, kind="stable")[:, :cap]
        counts = np.minimum(wanted.sum(axis=1), cap)
        for row, reader in enumerate(batch):
            count = int(counts[row])
            if not count:
                reason = SkipReason.NOTHING_NEW if matched_any[row] else SkipReason.NOTHING_RELEVANT
                yield Choices((), reason)
                continue
            picks = []
            for i in order[row, :count].tolist():
                if i in labels[row]:
                    why = "matches " + ", ".join(labels[row][i])
                elif explain:
                    why = reason_for(reader.profile, day.vectors[i])
                else:
                    why = ""
                picks.append(Choice(day.papers[i], float(scores[row, i]), why))
            yield Choices(tuple(picks), None)


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

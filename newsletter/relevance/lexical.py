"""BM25 over a day's papers: title, abstract and AI keywords.

Our own few lines rather than a package: the corpus is one day (tens of papers), and what the
planner needs is the day's term weights as one dense matrix, so thousands of readers are scored
with a matrix product instead of a query each. Terms are lower-cased words without stop words,
Snowball-stemmed (the stemmer keyword matching uses), so "compilers" meets "compiler" and
"quantized" meets "quantization".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import partial
from itertools import chain
from operator import is_not

import numpy as np
import numpy.typing as npt

from newsletter.papers import Paper
from newsletter.topics import stem

K1 = 1.5
B = 0.75

_WORD = re.compile(r"[a-z0-9]+")
# Words that carry no interest; a short list, as BM25's idf already discounts the common ones.
STOP_WORDS = frozenset(
    """
    a about above after again all also am an and any are as at be been before being below
    between both but by can could did do does doing down during each few for from further had has
    have having he her here hers him his how i if in into is it its itself just me more most my
    no nor not now of off on once only or other our ours out over own same she should so some
    such than that the their theirs them then there these they this those through to too under
    until up very was we were what when where which while who whom why will with would you your
    yours using use used via based new novel approach paper propose proposed show work
    """.split()  # noqa: SIM905
)


def terms(text: str) -> list[str]:
    """The BM25 terms of `text`, in order, repeats kept. Stemmed with keyword matching's
    memoised stemmer, so a paper's words are stemmed once per process for both (the
    pure-Python stemmer is the dearest part of preparing a day)."""
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]


def query_terms(text: str) -> tuple[str, ...]:
    """Distinct terms of a reader's words: a query counts each term once."""
    return tuple(dict.fromkeys(terms(text)))


def document_text(paper: Paper) -> str:
    return "\n".join([paper.title, paper.abstract, *paper.ai_keywords])


class Bm25:
    """The BM25 weight of every term in every paper of one corpus, as a (terms x papers) matrix."""

    def __init__(self, documents: Sequence[Sequence[str]], k1: float = K1, b: float = B) -> None:
        self.size = len(documents)
        self.vocabulary: dict[str, int] = {}
        counts = [Counter(doc) for doc in documents]
        for counter in counts:
            for term in counter:
                self.vocabulary.setdefault(term, len(self.vocabulary))
        lengths = np.array([len(doc) for doc in documents], dtype=np.float32)
        average = float(lengths.mean()) if self.size and lengths.sum() else 1.0
        tf = np.zeros((len(self.vocabulary), self.size), dtype=np.float32)
        for column, counter in enumerate(counts):
            for term, count in counter.items():
                tf[self.vocabulary[term], column] = count
        df = (tf > 0).sum(axis=1).astype(np.float32)
        # Lucene's idf: never negative, so a term in most papers of a small day still counts.
        idf = np.log1p((self.size - df + 0.5) / (df + 0.5)).astype(np.float32)
        norm = k1 * (1 - b + b * lengths / average)
        self.weights: npt.NDArray[np.float32] = (
            idf[:, None] * tf * (k1 + 1) / (tf + norm[None, :])
        ).astype(np.float32)

    @classmethod
    def of_papers(cls, papers: Sequence[Paper]) -> Bm25:
        return cls([terms(document_text(p)) for p in papers])

    def term_ids(self, query: Iterable[str]) -> list[int]:
        vocabulary = self.vocabulary
        return [i for t in query if (i := vocabulary.get(t)) is not None]

    def scores(self, query: Iterable[str]) -> npt.NDArray[np.float32]:
        """BM25 of every paper for one query (its distinct terms)."""
        ids = self.term_ids(dict.fromkeys(query))
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        return self.weights[ids].sum(axis=0)

    def scores_many(self, queries: Sequence[Sequence[str]]) -> npt.NDArray[np.float32]:
        """(queries x papers) BM25 for many readers at once: the weight rows of every query's
        terms gathered in one go and summed per query, with no readers x vocabulary matrix."""
        known = self.vocabulary.get
        present = partial(is_not, None)  # ids start at 0: only unknown terms (None) go
        ids = [dict.fromkeys(filter(present, map(known, query))) for query in queries]
        lengths = np.fromiter(map(len, ids), dtype=np.intp, count=len(ids))
        out = np.zeros((len(queries), self.size), dtype=np.float32)
        if not lengths.any():
            return out
        flat = np.fromiter(chain.from_iterable(ids), dtype=np.intp, count=int(lengths.sum()))
        starts = np.cumsum(lengths) - lengths
        hit = lengths > 0
        # reduceat sums [start, next start) per row; rows with no term are skipped, not summed.
        out[hit] = np.add.reduceat(self.weights[flat], starts[hit], axis=0)
        return out


def normalized(scores: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Each row divided by its maximum (rows with no match stay zero)."""
    top = scores.max(axis=-1, keepdims=True) if scores.size else scores
    return np.divide(scores, top, out=np.zeros_like(scores), where=top > 0)

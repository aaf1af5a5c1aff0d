"""The topic taxonomy and keyword matching.

The rule: a keyword matches case-insensitively at the start of a word of the title, abstract or
AI keywords, either as typed or by its word stem (English Snowball stemmer), with hyphens and
spaces equivalent. So "quantization" finds "quantized", "quantize" and "Quantization-Aware",
"compiler" finds "compilers" and "compiling", "reinforcement learning" finds
"reinforcement-learning", "LLM" finds "LLMs", and "art" finds "state-of-the-art" but never
"start" or "smart". Other punctuation is literal: "c++" is not "c".
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import snowballstemmer

from newsletter.errors import ConfigError
from newsletter.papers import Paper

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
KEYWORD_LIMIT = 64
KEYWORDS_PER_SUBSCRIBER = 20
# Whitespace runs and hyphens (ASCII, Unicode hyphens and dashes, minus) all separate words
# alike, so "flow matching", "flow-matching" and a hard-wrapped "flow\n  matching" are one.
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212]+")
_LETTERS = re.compile(r"[^\W\d_]+")
_STEMMER = snowballstemmer.stemmer("english")


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A lowercase word's English Snowball stem, memoised: keyword matching and BM25 share it."""
    return str(_STEMMER.stemWord(word))


def _spaced(text: str) -> str:
    return _SEPARATORS.sub(" ", text.lower()).strip()


def _stemmed(spaced: str) -> str:
    # Only letter runs are stemmed: digits and symbols ("3d", "c++", "gpt-4") stay literal.
    return _LETTERS.sub(lambda m: stem(m.group()), spaced)


@lru_cache(maxsize=8192)
def prepare(text: str) -> str:
    """The form of `text` that keyword patterns search: as typed, then stemmed, one per line.

    Memoised, so each paper's text is lowered and stemmed once however many subscribers and
    interest sets ask about it.
    """
    spaced = _spaced(text)
    return f"{spaced}\n{_stemmed(spaced)}"


@lru_cache(maxsize=65536)
def keyword_pattern(keywords: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex matching any of `keywords` at a word start of a `prepare`d text, as typed or
    stemmed; None when there are none."""
    forms: set[str] = set()
    for keyword in keywords:
        spaced = _spaced(keyword)
        if spaced:
            forms.update((spaced, _stemmed(spaced)))
    if not forms:
        return None
    # Longest first, so a phrase is preferred to its own first word.
    alternatives = "|".join(map(re.escape, sorted(forms, key=len, reverse=True)))
    return re.compile(rf"(?<!\w)(?:{alternatives})")


@lru_cache(maxsize=16384)
def keywords_match(keywords: tuple[str, ...], text: str) -> bool:
    """Whether any of `keywords` occurs at a word start of `text`, a `prepare`d text.

    Memoised: the same few hundred (interest, paper) pairs are asked about for every one of
    thousands of subscribers, and one search of an abstract costs about 0.1 ms.
    """
    pattern = keyword_pattern(keywords)
    return bool(pattern and pattern.search(text))


def matching_text(paper: Paper) -> str:
    """What keywords are matched against: the paper's title, abstract and AI keywords."""
    return prepare("\n".join([paper.title, paper.abstract, *paper.ai_keywords]))


@dataclass(frozen=True)
class Topic:
    slug: str
    name: str
    description: str
    keywords: tuple[str, ...]
    # Used to pick arXiv feeds to fetch, not to match: a category such as cs.LG holds half of
    # arXiv, so matching stays on keywords.
    arxiv_categories: tuple[str, ...] = ()

    def matches(self, paper: Paper, text: str | None = None) -> bool:
        return keywords_match(self.keywords, text if text is not None else matching_text(paper))


@dataclass(frozen=True)
class Taxonomy:
    topics: tuple[Topic, ...]
    by_slug: dict[str, Topic] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_slug", {t.slug: t for t in self.topics})

    def get(self, slug: str) -> Topic:
        try:
            return self.by_slug[slug]
        except KeyError:
            known = ", ".join(sorted(self.by_slug))
            raise ConfigError(f"unknown topic {slug!r}; known topics: {known}") from None

    def validate_slugs(self, slugs: Iterable[str]) -> list[str]:
        return [self.get(s.strip().lower()).slug for s in slugs if s.strip()]


def load_taxonomy(path: Path) -> Taxonomy:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read topics file {path}: {exc}") from exc
    entries = data.get("topic", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: topics must be [[topic]] tables")
    topics = []
    for index, raw in enumerate(entries, start=1):
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: topic #{index} is not a [[topic]] table")
        slug = str(raw.get("slug", ""))
        if not _SLUG.fullmatch(slug):
            raise ConfigError(f"{path}: topic #{index} has an invalid slug {slug!r}")
        raw_keywords = raw.get("keywords", [])
        categories = raw.get("arxiv_categories", [])
        # A bare string would iterate as single letters, each matching nearly every paper.
        if not isinstance(raw_keywords, list) or not isinstance(categories, list):
            raise ConfigError(f"{path}: topic {slug!r}: keywords and arxiv_categories are lists")
        keywords = tuple(str(k) for k in raw_keywords if str(k).strip())
        if not keywords:
            raise ConfigError(f"{path}: topic {slug!r} has no keywords")
        topics.append(
            Topic(
                slug=slug,
                name=str(raw.get("name", slug)),
                description=str(raw.get("description", "")),
                keywords=keywords,
                arxiv_categories=tuple(str(c) for c in categories),
            )
        )
    if len({t.slug for t in topics}) != len(topics):
        raise ConfigError(f"{path}: topic slugs must be unique")
    return Taxonomy(tuple(topics))


def clean_keywords(words: Sequence[str]) -> list[str]:
    """Normalise subscriber keywords: trimmed, deduplicated ignoring case, bounded.

    A keyword keeps the case it was typed in ("3D", "LLM"), since it is shown back to the
    subscriber; matching ignores case anyway. Of two spellings differing only in case, the
    first is kept.
    """
    seen: dict[str, str] = {}
    for word in words:
        cleaned = " ".join(word.split())[:KEYWORD_LIMIT]
        if cleaned and any(ch.isalnum() for ch in cleaned):
            seen.setdefault(cleaned.casefold(), cleaned)
    return list(seen.values())[:KEYWORDS_PER_SUBSCRIBER]

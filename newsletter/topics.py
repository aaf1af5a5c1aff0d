"""The topic taxonomy and keyword matching.

A keyword matches case-insensitively at the start of a word: "compiler" matches "compilers" and
"Compiler", "quantization" matches "Quantization-Aware", and "art" does not match "start".
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from newsletter.errors import ConfigError
from newsletter.papers import Paper

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
KEYWORD_LIMIT = 64
KEYWORDS_PER_SUBSCRIBER = 20


@lru_cache(maxsize=65536)
def keyword_pattern(keywords: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex matching any of `keywords` at a word start; None when there are none."""
    words = sorted({k.strip().lower() for k in keywords if k.strip()}, key=len, reverse=True)
    if not words:
        return None
    # Whitespace inside a phrase matches any whitespace run, as abstracts are hard-wrapped.
    alternatives = "|".join(r"\s+".join(map(re.escape, w.split())) for w in words)
    return re.compile(rf"(?<!\w)(?:{alternatives})", re.IGNORECASE)


@lru_cache(maxsize=16384)
def keywords_match(keywords: tuple[str, ...], text: str) -> bool:
    """Whether any of `keywords` occurs in `text` at a word start.

    Memoised: the same few hundred (interest, paper) pairs are asked about for every one of
    thousands of subscribers, and one search of an abstract costs about 0.1 ms.
    """
    pattern = keyword_pattern(keywords)
    return bool(pattern and pattern.search(text))


def matching_text(paper: Paper) -> str:
    return "\n".join([paper.title, paper.abstract, *paper.ai_keywords])


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
    """Normalise subscriber keywords: trimmed, lowercase, deduplicated, bounded."""
    seen: dict[str, None] = {}
    for word in words:
        cleaned = " ".join(word.split()).lower()[:KEYWORD_LIMIT]
        if cleaned and any(ch.isalnum() for ch in cleaned):
            seen.setdefault(cleaned, None)
    return list(seen)[:KEYWORDS_PER_SUBSCRIBER]

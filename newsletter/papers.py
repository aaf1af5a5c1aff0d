"""The normalised Paper every source produces, and the canonical paper id."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

# New-style arXiv ids (2007+): YYMM.NNNN or YYMM.NNNNN, optionally with a version suffix.
_ARXIV_ID = re.compile(r"(\d{4}\.\d{4,5})(v\d+)?")
# Old-style ids such as hep-th/9901001 still appear in cross-listings.
_OLD_ARXIV_ID = re.compile(r"([a-z][a-z\-]*(?:\.[A-Z]{2})?/\d{7})(v\d+)?")

TITLE_LIMIT = 300
ABSTRACT_LIMIT = 5000
AUTHORS_KEPT = 50
# The store keeps counts in INTEGER columns, 32-bit on PostgreSQL: a feed's absurd count (upvotes
# 10**30) is clamped to this instead of failing the whole day's write.
COUNT_MAX = 2**31 - 1


def canonical_id(raw: str) -> str | None:
    """Return the arXiv id without version, from a bare id or an arXiv abs/pdf URL, else None."""
    candidate = raw.strip()
    for marker in ("/abs/", "/pdf/", "oai:arXiv.org:", "arXiv:", "arxiv:"):
        if marker in candidate:
            candidate = candidate.split(marker, 1)[1]
    # URLs may carry a query, a fragment or a trailing slash after the id.
    candidate = candidate.split("?", 1)[0].split("#", 1)[0].rstrip("/").removesuffix(".pdf")
    for pattern in (_ARXIV_ID, _OLD_ARXIV_ID):
        match = pattern.fullmatch(candidate)
        if match:
            return match.group(1)
    return None


@dataclass
class Paper:
    """One paper as the store and the renderer see it, whatever source it came from.

    Text fields are already cleaned (one line, capped, no controls) and URLs are http(s) or None.
    """

    id: str
    title: str
    abstract: str
    authors: list[str] = field(default_factory=list)
    author_count: int = 0
    organization: str | None = None
    upvotes: int = 0
    comments: int = 0
    ai_summary: str | None = None
    ai_keywords: list[str] = field(default_factory=list)
    github_repo: str | None = None
    github_stars: int | None = None
    project_page: str | None = None
    published_on: date | None = None
    categories: list[str] = field(default_factory=list)

    @property
    def on_hugging_face(self) -> bool:
        """Whether the data shows a Hugging Face page for this paper.

        Only arXiv gives a paper categories, and only Hugging Face votes, comments and AI
        summaries: a paper with categories and none of the latter came from arXiv alone.
        """
        return not self.categories or bool(
            self.upvotes or self.comments or self.ai_summary or self.ai_keywords
        )

    @property
    def page_url(self) -> str:
        return f"https://huggingface.co/papers/{self.id}"

    @property
    def arxiv_url(self) -> str:
        return f"https://arxiv.org/abs/{self.id}"

    @property
    def pdf_url(self) -> str:
        return f"https://arxiv.org/pdf/{self.id}"

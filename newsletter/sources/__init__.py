"""Sources of a day's trending papers. Each turns its input into normalised Papers.

A source reports items it could not read as `problems` (one line each, naming the item) and keeps
every good item; only a failure to get or parse the input as a whole raises SourceError.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from newsletter.papers import Paper
from newsletter.text import one_line


def describe_http_error(exc: httpx.HTTPError | httpx.InvalidURL) -> str:
    """One line for the operator: httpx's own status-error text adds a second "more info" line."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} {exc.response.reason_phrase}"
    return one_line(str(exc)) or type(exc).__name__


@dataclass
class FetchResult:
    papers: list[Paper] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def extend(self, other: FetchResult) -> None:
        self.papers.extend(other.papers)
        self.problems.extend(other.problems)

    def deduplicated(self) -> FetchResult:
        """The same paper listed twice (two pages, two categories) is kept once, first wins."""
        seen: dict[str, Paper] = {}
        for paper in self.papers:
            seen.setdefault(paper.id, paper)
        return FetchResult(list(seen.values()), self.problems)

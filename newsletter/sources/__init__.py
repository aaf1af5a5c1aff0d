"""Sources of a day's trending papers. Each turns its input into normalised Papers.

A source reports items it could not read as `problems` (one line each, naming the item) and keeps
every good item; only a failure to get or parse the input as a whole raises SourceError.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from newsletter.papers import Paper


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

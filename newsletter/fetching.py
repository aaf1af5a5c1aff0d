"""Fetching a day: read it from a source and store it as the day's list."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from newsletter.errors import SourceError
from newsletter.papers import Paper
from newsletter.records import DayListing
from newsletter.sources.registry import Sources


class DayStore(Protocol):
    def store_day(
        self, day: date, papers: Sequence[Paper], *, replace: bool = False
    ) -> DayListing: ...

    def record_fetch(self, day: date, source: str, papers: int) -> None: ...


@dataclass
class FetchReport:
    day: date
    source: str
    stored: int  # papers this fetch read and stored
    problems: list[str]
    listing: DayListing  # what the day lists now

    @property
    def empty(self) -> bool:
        """The source answered with an empty list: a normal day off (weekends), not an error."""
        return self.stored == 0


class Fetcher:
    # Called with each day's papers once they are stored (the composition root embeds them).
    after_store: Callable[[Sequence[Paper]], None] | None = None

    def __init__(self, sources: Sources, days: DayStore) -> None:
        self.sources = sources
        self.days = days

    def fetch(
        self, day: date | None = None, source: str | None = None, *, replace: bool = False
    ) -> FetchReport:
        """Read `day` from `source` and add its papers to the day's list (`replace`: make them
        the whole list). An empty answer is recorded as an empty day; a source whose every
        item was unreadable is an error, since that is a broken feed, not a quiet day."""
        label = source or self.sources.config.default
        day, result = self.sources.read(source, day)
        if not result.papers and result.problems:
            raise SourceError(
                f"{label} for {day}: all {len(result.problems)} items were unreadable "
                f"({result.problems[0]}); nothing stored"
            )
        listing = self.days.store_day(day, result.papers, replace=replace)
        self.days.record_fetch(day, label, len(result.papers))
        if result.papers and self.after_store is not None:
            self.after_store(result.papers)
        return FetchReport(day, label, len(result.papers), result.problems, listing)

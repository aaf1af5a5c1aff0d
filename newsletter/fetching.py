"""Fetching a day: read it from a source and store it as the day's list."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from newsletter.errors import SourceError
from newsletter.papers import Paper
from newsletter.sources.registry import Sources


class DayStore(Protocol):
    def store_day(self, day: date, papers: Sequence[Paper]) -> None: ...


@dataclass
class FetchReport:
    day: date
    stored: int
    problems: list[str]


class Fetcher:
    # Called with each day's papers once they are stored (the composition root embeds them).
    after_store: Callable[[Sequence[Paper]], None] | None = None

    def __init__(self, sources: Sources, days: DayStore) -> None:
        self.sources = sources
        self.days = days

    def fetch(self, day: date | None = None, source: str | None = None) -> FetchReport:
        day, result = self.sources.read(source, day)
        if not result.papers:
            problems = f" ({len(result.problems)} unreadable items)" if result.problems else ""
            raise SourceError(f"the source listed no papers for {day}{problems}; nothing stored")
        self.days.store_day(day, result.papers)
        if self.after_store is not None:
            self.after_store(result.papers)
        return FetchReport(day, len(result.papers), result.problems)

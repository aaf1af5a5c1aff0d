"""Which source a name means: `hf`, `arxiv`, or else a local file's path.

Each named source is a function of the requested day (None: the source's own idea of today)
returning the day it listed and what it read; adding a source is one entry in `_named`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.sources import FetchResult, arxiv, huggingface, localfile

if TYPE_CHECKING:
    from newsletter.config import Settings

Source = Callable[[date | None], tuple[date, FetchResult]]


@dataclass(frozen=True)
class SourceConfig:
    default: str = "hf"
    http_timeout: float = 30.0
    hf_api_url: str = "https://huggingface.co/api/daily_papers"
    hf_page_size: int = 100
    arxiv_mode: str = "rss"
    arxiv_categories: list[str] = field(default_factory=lambda: ["cs.LG"])
    arxiv_rss_url: str = "https://rss.arxiv.org/rss/"
    arxiv_api_url: str = "https://export.arxiv.org/api/query"
    arxiv_max_results: int = 200
    arxiv_request_interval: float = 3.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SourceConfig:
        return cls(
            default=settings.source,
            http_timeout=settings.http_timeout,
            hf_api_url=settings.hf_api_url,
            hf_page_size=settings.hf_page_size,
            arxiv_mode=settings.arxiv_mode,
            arxiv_categories=list(settings.arxiv_categories),
            arxiv_rss_url=settings.arxiv_rss_url,
            arxiv_api_url=settings.arxiv_api_url,
            arxiv_max_results=settings.arxiv_max_results,
            arxiv_request_interval=settings.arxiv_request_interval,
        )


class Sources:
    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self._named: dict[str, Source] = {"hf": self._huggingface, "arxiv": self._arxiv}

    def read(self, name: str | None, day: date | None) -> tuple[date, FetchResult]:
        """Read `day`'s list from the source `name` (default: the configured one)."""
        chosen = name or self.config.default
        source = self._named.get(chosen)
        if source is not None:
            return source(day)
        return self._file(Path(chosen), day)

    def _huggingface(self, day: date | None) -> tuple[date, FetchResult]:
        c = self.config
        day = day or date.today()
        return day, huggingface.fetch(day, c.hf_api_url, c.hf_page_size, c.http_timeout)

    def _arxiv(self, day: date | None) -> tuple[date, FetchResult]:
        c = self.config
        return day or date.today(), arxiv.fetch(
            c.arxiv_categories,
            mode=c.arxiv_mode,
            rss_url=c.arxiv_rss_url,
            api_url=c.arxiv_api_url,
            max_results=c.arxiv_max_results,
            interval=c.arxiv_request_interval,
            timeout=c.http_timeout,
        )

    @staticmethod
    def _file(path: Path, day: date | None) -> tuple[date, FetchResult]:
        return localfile.read_day(path, day)

"""A day's list from a local file: Hugging Face JSON, arXiv Atom or arXiv RSS, told by content."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path

from newsletter.errors import SourceError
from newsletter.sources import FetchResult, arxiv, huggingface


def read(path: Path) -> tuple[FetchResult, date | None]:
    """Parse `path`; also return the listing day the file states, if any, for `--date` default.

    Hugging Face items state it as described in `huggingface.listing_day`, the most common day
    winning when they disagree; an arXiv RSS feed in its `pubDate`; an Atom answer never.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    # Editors on Windows save UTF-8 with a byte-order mark; json and the XML parser accept it.
    head = data.removeprefix(b"\xef\xbb\xbf").lstrip()[:1]
    origin = str(path)
    if head in (b"[", b"{"):
        try:
            items = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SourceError(f"{origin}: not valid JSON: {exc}") from exc
        if isinstance(items, dict) and isinstance(items.get("papers"), list):
            items = items["papers"]
        result = huggingface.parse_items(items, origin)
        dates = Counter(huggingface.listed_dates(items))
        return result, (dates.most_common(1)[0][0] if dates else None)
    if head == b"<":
        root = arxiv.parse_xml(data, origin)
        return arxiv.parse_root(root, origin), arxiv.listing_day(root)
    raise SourceError(f"{origin}: not a Hugging Face JSON list, Atom feed or RSS feed")


def read_day(path: Path, day: date | None = None) -> tuple[date, FetchResult]:
    """Parse `path` as the list of `day`, or of the day the file states when `day` is None.

    A file that states no day is refused rather than guessed at: a wrong day would store the
    list under another day's date, and overwrite whatever that day held.
    """
    result, stated = read(path)
    chosen = day or stated
    if chosen is None:
        raise SourceError(
            f"{path}: cannot tell which day this file lists (Hugging Face items need"
            " paper.submittedOnDailyAt or a 2024-style listing publishedAt, RSS feeds a pubDate);"
            " pass --date YYYY-MM-DD"
        )
    return chosen, result

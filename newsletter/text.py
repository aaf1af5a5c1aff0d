"""Cleaning of untrusted text: feed titles, abstracts, URLs and anything bound for a header.

Feed text is hostile until proven otherwise: it may carry markup, CR/LF meant to inject headers,
control characters that corrupt terminals, `javascript:` links and absurd lengths. These helpers
are the single place that decides what survives.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urlsplit

from newsletter import latex

# C0/C1 controls, zero-width and bidirectional-override characters (which can disguise text,
# e.g. make "txt.exe" read as "exe.txt") and a byte-order mark; terminal escape sequences go
# whole, not just their ESC.
_CONTROL = re.compile(
    r"\x1b\[[0-9;?]*[ -/]*[@-~]"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]"
)
# Python's \s includes the Unicode line and paragraph separators, which some mail clients and
# the email package treat as line breaks: they become plain spaces like any other whitespace.
_WHITESPACE = re.compile(r"\s+")


def strip_controls(value: str) -> str:
    """Drop control characters but keep tabs and newlines (for multi-line text)."""
    return _CONTROL.sub("", value)


def one_line(value: str | None, limit: int | None = None) -> str:
    """Fold any whitespace run (including CR/LF) into one space, drop controls, cap the length.

    Used for titles and for every header value: what comes out can never start a new line.
    """
    if not value:
        return ""
    if value.isascii() and value.isprintable() and "  " not in value and value == value.strip():
        # Already one clean line (our own URLs and ids, every message): nothing to fold.
        return truncate(value, limit) if limit else value
    spaced = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", value))
    folded = _WHITESPACE.sub(" ", strip_controls(spaced)).strip()
    return truncate(folded, limit) if limit else folded


def feed_text(value: str | None, limit: int) -> str:
    """Feed prose (a title, an abstract, a summary) as a reader should see it: LaTeX made
    readable, then one line, no controls, at most `limit` characters.

    Applied once, where feed text enters, so every place that shows it (mail, web pages, the
    Atom feed, the Subject) sees the same clean text.
    """
    if not value:
        return ""
    # Enough to fill `limit` even after LaTeX shrinks, without converting a 200 KB abstract.
    return one_line(latex.to_text(value[: 4 * limit + 64]), limit)


def truncate(value: str, limit: int | None) -> str:
    """Cut at a word boundary and add an ellipsis when `value` exceeds `limit` characters."""
    if limit is None or len(value) <= limit:
        return value
    cut = value[: limit - 1]
    space = cut.rfind(" ")
    # When the cut already ends a word, backing up to the previous space would lose that word.
    if space > limit * 0.6 and not value[limit - 1].isspace():
        cut = cut[:space]
    return cut.rstrip(" ,;:.-") + "…"


def safe_url(value: object, limit: int = 2000) -> str | None:
    """Return `value` if it is a plausible absolute http(s) URL, else None.

    Anything else (`javascript:`, `data:`, relative paths, whitespace tricks) is not rendered.
    """
    if not isinstance(value, str):
        return None
    candidate = value.strip()
    if not candidate or len(candidate) > limit or _CONTROL.search(candidate):
        return None
    if any(ch.isspace() for ch in candidate) or '"' in candidate or "<" in candidate:
        return None
    try:
        parts = urlsplit(candidate)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return candidate

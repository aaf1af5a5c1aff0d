#!/usr/bin/env python3
"""Build the bundled sample data from the text of a real Hugging Face "Daily Papers" page.

Usage: python scripts/build_sample_data.py SEED.txt [OUT_DIR]

The seed gives titles, abstracts, an author count or an organisation, a date and sometimes
upvotes. Everything else the `/api/daily_papers?date=YYYY-MM-DD` endpoint returns (arXiv ids,
author names, object ids, comments, GitHub links, ...) is synthesised here. Every synthetic
value is derived from a SHA-256 of the paper title, never from `random` or the clock, so two
runs write byte-identical files and a paper keeps its id and authors on every day it is listed.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

LISTING_DAYS = ("2026-02-11", "2026-02-12", "2026-02-13")
# Slices of the seed order, one per listing day: consecutive days share ten papers so that the
# day-to-day diff (a paper seen again with more upvotes) is exercised.
DAY_SLICES = (slice(0, 25), slice(15, 40), slice(30, None))
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "newsletter" / "sample_data"
# Papers listed without a date get an id from the listing month, like a fresh submission.
UNDATED_YYMM = "2602"
# Sample ids stay in 00001-24999 (a plausible monthly volume); hand-written fixtures can use
# 9xxxx numbers without ever colliding with them.
ID_NUMBER_RANGE = 24999
SUMMARY_WIDTH = 80
TITLE_BREAK_OVER = 70
AI_SUMMARY_MAX = 200

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}
_LISTING_DATE_RE = re.compile(r"^[A-Z][a-z]{2} \d{1,2}$")
_DATE_RE = re.compile(r"^([A-Z][a-z]{2}) (\d{1,2}), (\d{4})(?: (\d+))?$")
_AUTHORS_RE = re.compile(r"^•\s*(\d+) authors?$")
_SEPARATOR = "·"

# fmt: off
FIRST_NAMES = (
    "Aisha", "Alejandro", "Amara", "Anders", "Ananya", "Bilal", "Camille", "Chen", "Chiara",
    "Daniel", "Dmitri", "Elena", "Farah", "Gabriel", "Hana", "Hiroshi", "Ines", "Isaac",
    "Jae-won", "Jonas", "Kavya", "Kofi", "Laura", "Lei", "Lucas", "Maria", "Mehdi", "Mei",
    "Nadia", "Noah", "Olumide", "Pablo", "Priya", "Rafael", "Sara", "Sofia", "Tariq", "Thomas",
    "Valentina", "Wei", "Yara", "Yusuf", "Zhang", "Zofia",
)
LAST_NAMES = (
    "Abebe", "Andersson", "Bauer", "Bianchi", "Chen", "Costa", "Dubois", "Eriksen", "Fernandez",
    "Garcia", "Gupta", "Haddad", "Huang", "Ito", "Jensen", "Kim", "Kowalski", "Kumar", "Li",
    "Liu", "Martin", "Mensah", "Moreau", "Nakamura", "Nguyen", "Novak", "Okafor", "Park",
    "Petrov", "Rahman", "Rossi", "Santos", "Schmidt", "Silva", "Singh", "Tanaka", "Wang",
    "Weber", "Wu", "Yamamoto", "Yilmaz", "Zhao",
)
# (handle, full name) of the synthetic community members who submit papers.
SUBMITTERS = (
    ("akira-t", "Akira Tanaka"),
    ("lmoreau", "Lea Moreau"),
    ("okafor-n", "Ngozi Okafor"),
    ("pkumar", "Priya Kumar"),
    ("rsilva", "Rafael Silva"),
    ("weiliu", "Wei Liu"),
)
GITHUB_ORGS = (
    "aurora-ml-lab", "compiler-garden", "flowworks-ai", "nimbus-research", "parallel-foundry",
    "sparse-systems", "tensorforge",
)
# fmt: on
_STOPWORD_TEXT = """
    a about across after all also an and any are as at based be been both but by can do does
    don't each for from has have how however in into is it its more most new not of on or
    our over such than that the their them these they this those through to toward towards
    two up upon use used using via was we well what when where which while who with within
    without would yet you your e.g i.e etc let
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_PUNCTUATION = "\"'()[]{}:;,.!?`~"


@dataclass(frozen=True)
class SeedPaper:
    """One entry of the listing page, exactly as the page shows it."""

    title: str
    abstract: str
    author_count: int | None
    org: tuple[str, str] | None  # (name, fullname), e.g. ("huawei-noah", "HUAWEI Noah's Ark Lab")
    published: date | None
    upvotes: int | None


def parse_seed(text: str) -> list[SeedPaper]:
    """Parse the page text into papers, in page order.

    An entry is a title line and an abstract line, optionally followed by three metadata lines:
    "• N authors" or "<org> <Org full name>", then "·", then "Mon D, YYYY[ upvotes]".
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # Page chrome ("Subscribe", "Daily Papers", ...) ends with the listing date, e.g. "Feb 13".
    start = next((i for i, line in enumerate(lines) if _LISTING_DATE_RE.match(line)), None)
    if start is None:
        raise ValueError("seed has no listing date line such as 'Feb 13'")
    papers: list[SeedPaper] = []
    i = start + 1
    while i < len(lines):
        if i + 1 >= len(lines) or _SEPARATOR in (lines[i], lines[i + 1]):
            raise ValueError(f"seed line {i}: expected a title and an abstract at {lines[i]!r}")
        title, abstract = lines[i], lines[i + 1]
        i += 2
        author_count: int | None = None
        org: tuple[str, str] | None = None
        published: date | None = None
        upvotes: int | None = None
        if i + 1 < len(lines) and lines[i + 1] == _SEPARATOR:
            if match := _AUTHORS_RE.match(lines[i]):
                author_count = int(match.group(1))
            else:
                # Organisation slugs never contain spaces; the full name may.
                name, _, fullname = lines[i].partition(" ")
                org = (name, fullname or name)
            i += 2
            if i < len(lines) and (match := _DATE_RE.match(lines[i])):
                month, day, year, votes = match.groups()
                published = date(int(year), _MONTHS[month], int(day))
                upvotes = int(votes) if votes else None
                i += 1
        papers.append(SeedPaper(title, abstract, author_count, org, published, upvotes))
    return papers


def _digest(*parts: object) -> bytes:
    # Unit separator between parts so ("ab", "c") and ("a", "bc") hash differently.
    return hashlib.sha256("\x1f".join(str(part) for part in parts).encode()).digest()


def _num(*parts: object) -> int:
    return int.from_bytes(_digest(*parts)[:8], "big")


def _hex24(*parts: object) -> str:
    """A 24-hex-digit id shaped like the MongoDB ObjectIds the Hub returns."""
    return _digest(*parts).hex()[:24]


def assign_ids(papers: list[SeedPaper]) -> list[str]:
    """Give each paper a unique arXiv-style id: YYMM of its date plus 5 title-derived digits."""
    used: set[str] = set()
    ids: list[str] = []
    for paper in papers:
        yymm = paper.published.strftime("%y%m") if paper.published else UNDATED_YYMM
        salt = 0
        while True:
            arxiv_id = f"{yymm}.{1 + _num('arxiv-id', paper.title, salt) % ID_NUMBER_RANGE:05d}"
            if arxiv_id not in used:
                break
            salt += 1
        used.add(arxiv_id)
        ids.append(arxiv_id)
    return ids


def wrap_summary(text: str, width: int = SUMMARY_WIDTH) -> str:
    """Hard-wrap like the API does; replacing each "\\n" with a space restores the text."""
    lines: list[str] = []
    current: str | None = None
    # Splitting on single spaces (not str.split()) keeps any doubled space in the seed intact.
    for word in text.split(" "):
        if current is not None and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = word if current is None else f"{current} {word}"
    lines.append(current or "")
    return "\n".join(lines)


def wrap_title(title: str) -> str:
    """Break a long title once, near the middle, with "\\n  " as arXiv-sourced titles have."""
    if len(title) <= TITLE_BREAK_OVER:
        return title
    middle = len(title) // 2
    spaces = [i for i, char in enumerate(title) if char == " "]
    cut = min(spaces, key=lambda i: (abs(i - middle), i))
    return f"{title[:cut]}\n  {title[cut + 1 :]}"


def author_names(title: str, count: int) -> list[str]:
    """`count` distinct plausible names, the same ones every run for the same title."""
    names: list[str] = []
    salt = 0
    while len(names) < count:
        first = FIRST_NAMES[_num("first", title, salt) % len(FIRST_NAMES)]
        last = LAST_NAMES[_num("last", title, salt) % len(LAST_NAMES)]
        salt += 1
        if f"{first} {last}" not in names:
            names.append(f"{first} {last}")
    return names


def _author_count(paper: SeedPaper) -> int:
    if paper.author_count is not None:
        return paper.author_count
    # Organisation entries show no count (1-4 authors); entries without metadata get 2-6.
    spread = _num("authors", paper.title)
    return 1 + spread % 4 if paper.org else 2 + spread % 5


def _phrases(text: str) -> list[str]:
    """Runs of 1-3 consecutive words, split at stopwords and punctuation (RAKE-like)."""
    phrases: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if 1 <= len(run) <= 3:
            phrases.append(" ".join(run))
        run.clear()

    for token in text.split():
        if token[0] in _PUNCTUATION:
            flush()
        word = token.strip(_PUNCTUATION)
        if not word or word.lower() in _STOPWORDS or not any(char.isalpha() for char in word):
            flush()
            continue
        run.append(word)
        if token[-1] in _PUNCTUATION:
            flush()
    flush()
    # Keep only phrases that appear verbatim, so a keyword is always findable in the text.
    return [phrase for phrase in phrases if phrase in text]


def _is_term(phrase: str) -> bool:
    """Multi-word phrases and names like "DyCL", "C4" or "Wide-and-Deep"; not plain words."""
    return " " in phrase or "-" in phrase or any(c.isupper() or c.isdigit() for c in phrase[1:])


def ai_keywords(paper: SeedPaper) -> list[str]:
    """3-6 lowercase phrases: the title's terms first, then the abstract's most frequent ones."""
    wanted = 3 + _num("keywords", paper.title) % 4
    counts = Counter(phrase.lower() for phrase in _phrases(paper.abstract))
    # sorted() is stable, so equally frequent phrases keep their order of appearance.
    ranked = sorted(counts, key=lambda phrase: -counts[phrase])
    candidates = [
        *(phrase.lower() for phrase in _phrases(paper.title) if _is_term(phrase)),
        *(phrase for phrase in ranked if " " in phrase),
        *(phrase for phrase in ranked if len(phrase) >= 8),  # fallback for terse abstracts
    ]
    return list(dict.fromkeys(candidates))[:wanted]


def ai_summary(abstract: str) -> str:
    """The abstract's first sentence, cut at a word boundary to at most 200 characters."""
    sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z])", abstract, maxsplit=1)[0]
    if len(sentence) > AI_SUMMARY_MAX:
        sentence = sentence[: AI_SUMMARY_MAX - 3].rsplit(" ", 1)[0].rstrip(",;:") + "..."
    return sentence


def _slug(title: str) -> str:
    """Repository name: the title's lead-in before ":" when short, else its first real words."""
    head = title.split(":", 1)[0]
    if ":" in title and len(head.split()) <= 2:
        words = head.split()
    else:
        words = [word for word in title.split() if word.lower() not in _STOPWORDS][:3]
    return re.sub(r"[^a-z0-9]+", "-", " ".join(words).lower()).strip("-")


def _avatar(*parts: object) -> str:
    return (
        "https://cdn-avatars.huggingface.co/v1/production/uploads/"
        f"{_hex24('avatar-dir', *parts)}/{_digest('avatar', *parts).hex()[:32]}.png"
    )


def _organization(name: str, fullname: str) -> dict[str, str]:
    return {"_id": _hex24("org", name), "name": name, "fullname": fullname, "avatar": _avatar(name)}


def _timestamp(day: str, *parts: object) -> str:
    seconds = _num("time", day, *parts) % 86400
    return f"{day}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.000Z"


def build_paper(paper: SeedPaper, arxiv_id: str, upvotes: int) -> dict[str, Any]:
    """The `paper` object of one API item."""
    title = paper.title
    published = paper.published or date(2026, 2, 1 + _num("undated", title) % 10)
    record: dict[str, Any] = {
        "id": arxiv_id,
        "authors": [
            {"_id": _hex24("author", title, index), "name": name, "hidden": False}
            for index, name in enumerate(author_names(title, _author_count(paper)))
        ],
        "publishedAt": _timestamp(published.isoformat(), "paper", title),
        "title": wrap_title(title),
        "summary": wrap_summary(paper.abstract),
        "upvotes": upvotes,
        "discussionId": _hex24("discussion", title),
    }
    # Optional keys are left out, not set to null, exactly as the API does.
    if _num("ai", title) % 3 == 0:
        record["ai_summary"] = ai_summary(paper.abstract)
        record["ai_keywords"] = ai_keywords(paper)
    slug = _slug(title)
    github_org = GITHUB_ORGS[_num("github-org", title) % len(GITHUB_ORGS)]
    if _num("github", title) % 4 == 0:
        record["githubRepo"] = f"https://github.com/{github_org}/{slug}"
        record["githubStars"] = 3 + _num("stars", title) % 4000
    if _num("project", title) % 5 == 0:
        record["projectPage"] = f"https://{github_org}.github.io/{slug}/"
    if paper.org:
        record["organization"] = _organization(*paper.org)
    return record


def build_item(paper: SeedPaper, arxiv_id: str, upvotes: int, day: str) -> dict[str, Any]:
    """One element of the API's JSON list for the listing day `day`, in the 2025+ shape."""
    handle, fullname = SUBMITTERS[_num("submitter", paper.title) % len(SUBMITTERS)]
    submitter = {
        "_id": _hex24("user", handle),
        "avatarUrl": _avatar("user", handle),
        "fullname": fullname,
        "name": handle,
        "type": "user",
    }
    record = build_paper(paper, arxiv_id, upvotes)
    # The API's shape since early 2025: the listing time lives in `paper.submittedOnDailyAt`,
    # and the top-level `publishedAt` repeats the arXiv date, so a reader that takes the day
    # from it gets the wrong day (2024 answers had the listing time there).
    record["submittedOnDailyAt"] = _timestamp(day, "listed", paper.title)
    record["submittedOnDailyBy"] = submitter
    item: dict[str, Any] = {
        "paper": record,
        "publishedAt": record["publishedAt"],
        "title": record["title"],
        "thumbnail": (
            f"https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/{arxiv_id}.png"
        ),
        "numComments": _num("comments", paper.title) % 7,
        "submittedBy": submitter,
    }
    if paper.org:
        item["organization"] = record["organization"]
    return item


def build_days(papers: list[SeedPaper]) -> dict[str, list[dict[str, Any]]]:
    """Items per listing day, each day sorted by upvotes (descending) like the site."""
    ids = assign_ids(papers)
    # Upvotes only grow: the first listing uses the seed's count (or a synthetic 0-60), and
    # each later listing of the same paper adds 1-15.
    upvotes = [
        paper.upvotes if paper.upvotes is not None else _num("upvotes", paper.title) % 61
        for paper in papers
    ]
    seen: set[int] = set()
    days: dict[str, list[dict[str, Any]]] = {}
    for day, day_slice in zip(LISTING_DAYS, DAY_SLICES, strict=True):
        indices = list(range(len(papers)))[day_slice]
        for index in indices:
            if index in seen:
                upvotes[index] += 1 + _num("growth", papers[index].title, day) % 15
            seen.add(index)
        indices.sort(key=lambda index: (-upvotes[index], index))
        days[day] = [build_item(papers[i], ids[i], upvotes[i], day) for i in indices]
    return days


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    papers = parse_seed(Path(argv[1]).read_text(encoding="utf-8"))
    out_dir = Path(argv[2]) if len(argv) == 3 else DEFAULT_OUT
    out_dir.mkdir(parents=True, exist_ok=True)
    for day, items in build_days(papers).items():
        text = json.dumps(items, indent=2, ensure_ascii=False) + "\n"
        (out_dir / f"{day}.json").write_text(text, encoding="utf-8", newline="\n")
        print(f"{out_dir / f'{day}.json'}: {len(items)} papers")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

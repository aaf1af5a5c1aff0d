"""The Hugging Face daily papers API: `GET /api/daily_papers?date=YYYY-MM-DD&p=N&limit=N`.

Quirks handled here: titles and abstracts carry hard line breaks, optional keys are absent rather
than null and older days lack many of them, upvotes live only inside `paper`, author lists can be
hundreds long, and the top-level `title` may keep raw LaTeX.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import httpx

from newsletter.errors import SourceError
from newsletter.papers import (
    ABSTRACT_LIMIT,
    AUTHORS_KEPT,
    COUNT_MAX,
    TITLE_LIMIT,
    Paper,
    canonical_id,
)
from newsletter.sources import FetchResult, describe_http_error
from newsletter.text import feed_text, one_line, safe_url


def _int(value: Any) -> int:
    """A count from the feed: a non-negative int (bools, floats and strings are not), clamped."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return 0
    return min(value, COUNT_MAX)


def _text(value: Any, limit: int) -> str:
    return one_line(value, limit) if isinstance(value, str) else ""


def _prose(value: Any, limit: int) -> str:
    return feed_text(value, limit) if isinstance(value, str) else ""


def _date(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError:
        return None


def parse_item(item: Any) -> Paper:
    """Turn one API item into a Paper; ValueError says what is wrong with it."""
    if not isinstance(item, dict):
        raise ValueError(f"expected an object, got {type(item).__name__}")
    paper = item.get("paper")
    if not isinstance(paper, dict):
        raise ValueError("no 'paper' object")
    raw_id = paper.get("id")
    paper_id = canonical_id(raw_id) if isinstance(raw_id, str) else None
    if paper_id is None:
        raise ValueError(f"paper id {str(raw_id)[:40]!r} is not an arXiv id")
    title = _prose(paper.get("title") or item.get("title"), TITLE_LIMIT)
    if not title:
        raise ValueError(f"paper {paper_id} has no title")
    authors_raw = paper.get("authors")
    authors_list = authors_raw if isinstance(authors_raw, list) else []
    names = [
        _text(a.get("name"), 100)
        for a in authors_list
        if isinstance(a, dict) and not a.get("hidden")
    ]
    organization = paper.get("organization") or item.get("organization")
    org_name = None
    if isinstance(organization, dict):
        org_name = _text(organization.get("fullname") or organization.get("name"), 100) or None
    keywords = paper.get("ai_keywords")
    stars = paper.get("githubStars")
    return Paper(
        id=paper_id,
        title=title,
        abstract=_prose(paper.get("summary"), ABSTRACT_LIMIT),
        authors=[n for n in names if n][:AUTHORS_KEPT],
        author_count=len(authors_list),
        organization=org_name,
        upvotes=_int(paper.get("upvotes")),
        comments=_int(item.get("numComments")),
        ai_summary=_prose(paper.get("ai_summary"), 600) or None,
        ai_keywords=[_prose(k, 60) for k in keywords[:20] if _prose(k, 60)]
        if isinstance(keywords, list)
        else [],
        github_repo=safe_url(paper.get("githubRepo")),
        github_stars=_int(stars) if isinstance(stars, int) else None,
        project_page=safe_url(paper.get("projectPage")),
        published_on=_date(paper.get("publishedAt")),
    )


def parse_items(items: Any, origin: str) -> FetchResult:
    """Parse a whole API response; bad items become problems naming their position and id."""
    if not isinstance(items, list):
        raise SourceError(f"{origin}: expected a JSON list of papers, got {type(items).__name__}")
    result = FetchResult()
    for position, item in enumerate(items):
        try:
            result.papers.append(parse_item(item))
        except ValueError as exc:
            result.problems.append(f"{origin}: item {position}: skipped: {exc}")
    return result.deduplicated()


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def listing_day(item: Any) -> date | None:
    """The day `item` was listed on, when the item says so; None when it cannot tell.

    From early 2025 on, `paper.submittedOnDailyAt` is the listing time and the top-level
    `publishedAt` is merely the arXiv date (equal to `paper.publishedAt`). In 2024 answers the
    top-level `publishedAt` is the listing time, later than the paper's arXiv date. Some answers
    of the changeover (Dec 2024 - Jan 2025) carry neither, and guessing there would store the
    day under the paper's arXiv date.
    """
    if not isinstance(item, dict):
        return None
    paper = item.get("paper")
    paper = paper if isinstance(paper, dict) else {}
    submitted = _timestamp(paper.get("submittedOnDailyAt"))
    if submitted is not None:
        return submitted.astimezone(UTC).date()
    listed = _timestamp(item.get("publishedAt"))
    published = _timestamp(paper.get("publishedAt"))
    if listed is not None and published is not None and listed > published:
        return listed.astimezone(UTC).date()
    return None


def listed_dates(items: list[Any]) -> list[date]:
    """The listing days the items of a response state (see `listing_day`), for date inference."""
    return [day for item in items if (day := listing_day(item)) is not None]


def fetch(
    day: date, api_url: str, page_size: int, timeout: float, client: httpx.Client | None = None
) -> FetchResult:
    """Fetch every page of `day`'s list. Network and HTTP errors become one SourceError."""
    result = FetchResult()
    own_client = client is None
    http = client or httpx.Client(timeout=timeout, headers={"User-Agent": "trending-papers"})
    try:
        for page in range(100):  # a hard stop: no real day has 10,000 papers
            params: dict[str, str | int] = {"date": day.isoformat(), "p": page, "limit": page_size}
            try:
                response = http.get(api_url, params=params)
                response.raise_for_status()
                items = response.json()
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise SourceError(
                    f"Hugging Face API {api_url} for {day}: {describe_http_error(exc)}"
                ) from exc
            except ValueError as exc:
                raise SourceError(f"Hugging Face API {api_url} for {day}: not JSON") from exc
            result.extend(parse_items(items, f"Hugging Face {day} page {page}"))
            if not isinstance(items, list) or len(items) < page_size:
                break
    finally:
        if own_client:
            http.close()
    return result.deduplicated()

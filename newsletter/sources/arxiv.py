"""arXiv as a source: the daily RSS feed per category, or the Atom query API.

Quirks handled here: Atom ids carry a version (".../abs/2510.14968v1") and categories repeat; in
RSS the abstract sits inside `description` after "Abstract: " and `dc:creator` is one
comma-joined string; weekend feeds are empty. arXiv asks for one request every 3 seconds.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from xml.etree.ElementTree import Element

import httpx
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from newsletter.errors import SourceError
from newsletter.papers import ABSTRACT_LIMIT, AUTHORS_KEPT, TITLE_LIMIT, Paper, canonical_id
from newsletter.sources import FetchResult, describe_http_error
from newsletter.text import feed_text, one_line

ATOM = "{http://www.w3.org/2005/Atom}"
ARXIV = "{http://arxiv.org/schemas/atom}"
DC = "{http://purl.org/dc/elements/1.1/}"


def parse_xml(text: str | bytes, origin: str) -> Element:
    try:
        return ElementTree.fromstring(text)
    except (ElementTree.ParseError, DefusedXmlException) as exc:
        raise SourceError(f"{origin}: not well-formed XML: {exc}") from exc


def _text(element: Element | None) -> str:
    return (element.text or "") if element is not None else ""


def _categories(terms: list[str]) -> list[str]:
    return list(dict.fromkeys(t for t in terms if t))


def _atom_entry(entry: Element) -> Paper:
    raw_id = _text(entry.find(f"{ATOM}id"))
    paper_id = canonical_id(raw_id)
    if paper_id is None:
        raise ValueError(f"entry id {raw_id[:60]!r} is not an arXiv id")
    title = feed_text(_text(entry.find(f"{ATOM}title")), TITLE_LIMIT)
    if not title:
        raise ValueError(f"entry {paper_id} has no title")
    authors = [one_line(_text(a.find(f"{ATOM}name")), 100) for a in entry.findall(f"{ATOM}author")]
    primary = entry.find(f"{ARXIV}primary_category")
    terms = [primary.get("term", "")] if primary is not None else []
    terms += [c.get("term", "") for c in entry.findall(f"{ATOM}category")]
    published = _text(entry.find(f"{ATOM}published"))
    try:
        published_on: date | None = datetime.fromisoformat(published.replace("Z", "+00:00")).date()
    except ValueError:
        published_on = None
    return Paper(
        id=paper_id,
        title=title,
        abstract=feed_text(_text(entry.find(f"{ATOM}summary")), ABSTRACT_LIMIT),
        authors=[a for a in authors if a][:AUTHORS_KEPT],
        author_count=len(authors),
        published_on=published_on,
        categories=_categories(terms),
    )


def _rss_item(item: Element) -> Paper:
    link = _text(item.find("link")) or _text(item.find("guid"))
    paper_id = canonical_id(link)
    if paper_id is None:
        raise ValueError(f"item link {link[:60]!r} is not an arXiv id")
    title = feed_text(_text(item.find("title")), TITLE_LIMIT)
    if not title:
        raise ValueError(f"item {paper_id} has no title")
    description = _text(item.find("description"))
    _, found, abstract = description.partition("Abstract:")
    creators = _text(item.find(f"{DC}creator"))
    authors = [one_line(name, 100) for name in creators.split(",") if name.strip()]
    published_on = _rss_date(_text(item.find("pubDate")))
    return Paper(
        id=paper_id,
        title=title,
        abstract=feed_text(abstract if found else description, ABSTRACT_LIMIT),
        authors=authors[:AUTHORS_KEPT],
        author_count=len(authors),
        published_on=published_on,
        categories=_categories([_text(c) for c in item.findall("category")]),
    )


def _collect(
    elements: list[Element],
    parse: Callable[[Element], Paper],
    origin: str,
    skip: Callable[[Element], bool] = lambda _: False,
) -> FetchResult:
    result = FetchResult()
    for position, element in enumerate(elements):
        if skip(element):
            continue
        try:
            result.papers.append(parse(element))
        except ValueError as exc:
            result.problems.append(f"{origin}: entry {position}: skipped: {exc}")
    return result.deduplicated()


def parse_atom(root: Element, origin: str) -> FetchResult:
    return _collect(root.findall(f"{ATOM}entry"), _atom_entry, origin)


def parse_rss(root: Element, origin: str) -> FetchResult:
    # "replace" items are new versions of old papers, not new papers of the day.
    def is_replacement(item: Element) -> bool:
        return _text(item.find(f"{ARXIV}announce_type")).strip().startswith("replace")

    return _collect(root.findall("./channel/item"), _rss_item, origin, skip=is_replacement)


def parse_root(root: Element, origin: str) -> FetchResult:
    """Parse an Atom feed or an RSS feed already read as XML, told apart by the root element."""
    if root.tag == f"{ATOM}feed":
        return parse_atom(root, origin)
    if root.tag == "rss":
        return parse_rss(root, origin)
    raise SourceError(f"{origin}: neither an Atom feed nor an RSS feed (root <{root.tag}>)")


def parse_document(text: str | bytes, origin: str) -> FetchResult:
    """Parse either an Atom feed or an RSS feed."""
    return parse_root(parse_xml(text, origin), origin)


def _rss_date(value: str) -> date | None:
    try:
        # The feed's own time zone (arXiv's, US Eastern) names the announcement day.
        return parsedate_to_datetime(value).date()
    except (TypeError, ValueError, IndexError):
        return None


def listing_day(root: Element) -> date | None:
    """The announcement day an RSS feed states in `pubDate` (the channel's, else its items').

    An Atom query answer states none: its `published` dates are submission dates, not the day
    the papers were announced.
    """
    if root.tag != "rss":
        return None
    stated = _rss_date(_text(root.find("./channel/pubDate")))
    if stated is not None:
        return stated
    days = Counter(
        day
        for item in root.findall("./channel/item")
        if (day := _rss_date(_text(item.find("pubDate"))))
    )
    return days.most_common(1)[0][0] if days else None


class Throttle:
    """Spaces requests at least `interval` seconds apart, as arXiv asks."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = float("-inf")

    def wait(self) -> None:
        delay = self._last + self.interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._last = time.monotonic()


def fetch(
    categories: list[str],
    *,
    mode: str,
    rss_url: str,
    api_url: str,
    max_results: int,
    interval: float,
    timeout: float,
    client: httpx.Client | None = None,
) -> FetchResult:
    """Fetch the configured categories, one request per category, spaced by `interval`."""
    throttle = Throttle(interval)
    result = FetchResult()
    own_client = client is None
    http = client or httpx.Client(timeout=timeout, headers={"User-Agent": "trending-papers"})
    try:
        for category in categories:
            throttle.wait()
            if mode == "rss":
                url, params = rss_url.rstrip("/") + "/" + category, {}
            else:
                url = api_url
                params = {
                    "search_query": f"cat:{category}",
                    "sortBy": "submittedDate",
                    "sortOrder": "descending",
                    "max_results": str(max_results),
                }
            origin = f"arXiv {mode} {category}"
            try:
                response = http.get(url, params=params)
                response.raise_for_status()
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise SourceError(f"{origin}: {describe_http_error(exc)}") from exc
            result.extend(parse_document(response.content, origin))
    finally:
        if own_client:
            http.close()
    return result.deduplicated()

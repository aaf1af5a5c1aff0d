"""The public archive's Atom feed: one entry per day, linking to that day's full list."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from xml.etree.ElementTree import Element, SubElement, tostring

from newsletter.links import Links
from newsletter.papers import Paper

ATOM_NS = "http://www.w3.org/2005/Atom"


def atom_feed(name: str, links: Links, days: dict[date, list[Paper]]) -> bytes:
    """Atom XML built with ElementTree, which escapes every feed string for us."""
    feed = Element("feed", xmlns=ATOM_NS)
    SubElement(feed, "title").text = f"{name}: daily trending papers"
    SubElement(feed, "id").text = links.archive()
    SubElement(feed, "link", href=links.archive(), rel="alternate")
    SubElement(feed, "link", href=f"{links.archive()}.atom", rel="self")
    newest = max(days, default=date(2000, 1, 1))
    SubElement(feed, "updated").text = _stamp(newest)
    for day, papers in days.items():
        entry = SubElement(feed, "entry")
        SubElement(entry, "title").text = f"Trending papers, {day.isoformat()}"
        SubElement(entry, "id").text = links.archive(day)
        SubElement(entry, "link", href=links.archive(day), rel="alternate")
        SubElement(entry, "updated").text = _stamp(day)
        SubElement(entry, "summary").text = "; ".join(p.title for p in papers[:10])
    return tostring(feed, encoding="utf-8", xml_declaration=True)


def _stamp(day: date) -> str:
    return datetime.combine(day, time(0, 0), tzinfo=UTC).isoformat()

"""The digest renderer: subject, HTML and plain text for one subscriber's picks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import mjml
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template

from newsletter.digest import Interests, Pick
from newsletter.links import Links
from newsletter.render.views import paper_view
from newsletter.text import one_line, truncate
from newsletter.topics import Taxonomy

SUBJECT_TITLE_LIMIT = 70


@dataclass(frozen=True)
class RenderedDigest:
    subject: str
    html: str
    text: str


def compile_mjml(path: Path) -> str:
    """MJML to HTML, once per template. Jinja tags inside mj-text survive the compilation."""
    return str(mjml.mjml2html(path.read_text(encoding="utf-8")))


def day_label(day: date) -> str:
    return f"{day:%A} {day.day} {day:%B %Y}"


def subject_line(name: str, day: date, picks: Sequence[Pick]) -> str:
    """ "Trending Papers, 13 Feb: <top title> + 7 more". Feed text, so cleaned to one line."""
    top = truncate(one_line(picks[0].paper.title), SUBJECT_TITLE_LIMIT) if picks else ""
    more = f" + {len(picks) - 1} more" if len(picks) > 1 else ""
    return one_line(f"{name}, {day.day} {day:%b}: {top}{more}")


class DigestRenderer:
    def __init__(
        self, templates_dir: Path, taxonomy: Taxonomy, links: Links, newsletter_name: str
    ) -> None:
        self.taxonomy = taxonomy
        self.links = links
        self.newsletter_name = newsletter_name
        loader = FileSystemLoader(templates_dir)
        # select_autoescape() keys on the file extension and skips *.mjml, so HTML escaping is
        # switched on explicitly: every feed string is escaped in the HTML part.
        html_env = Environment(loader=loader, autoescape=True, undefined=StrictUndefined)
        text_env = Environment(
            loader=loader, autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True
        )
        self._html: Template = html_env.from_string(compile_mjml(templates_dir / "digest.mjml"))
        self._text: Template = text_env.get_template("digest.txt.j2")

    def intro(self, interests: Interests, count: int) -> str:
        noun = "paper" if count == 1 else "papers"
        if interests.everything:
            return f"Today's {count} most upvoted {noun}, none of which you have seen here before."
        names = [
            self.taxonomy.by_slug[s].name for s in interests.topics if s in self.taxonomy.by_slug
        ]
        names += [f"“{k}”" for k in interests.keywords]
        return f"{count} new {noun} on {', '.join(names)}."

    def render(
        self,
        *,
        subscriber_id: int,
        email: str,
        day: date,
        interests: Interests,
        picks: Sequence[Pick],
    ) -> RenderedDigest:
        papers = [paper_view(pick) for pick in picks]
        subject = subject_line(self.newsletter_name, day, picks)
        context = {
            "subject": subject,
            "preview": truncate(" · ".join(p.title for p in papers[1:4]), 140),
            "newsletter_name": self.newsletter_name,
            "day_label": day_label(day),
            "headline": "Trending papers for you" if papers else "Nothing new today",
            "intro": self.intro(interests, len(papers)),
            "papers": papers,
            "email": email,
            "view_url": self.links.view(subscriber_id, day),
            "preferences_url": self.links.preferences(subscriber_id),
            "unsubscribe_url": self.links.unsubscribe(subscriber_id),
            "archive_url": self.links.archive(day),
        }
        return RenderedDigest(subject, self._html.render(context), self._text.render(context))

"""The digest renderer: subject, HTML and plain text for one subscriber's picks."""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import mjml
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template
from markupsafe import escape

from newsletter.links import Links
from newsletter.render.views import paper_view, shown_reason
from newsletter.selection import Interests, Pick
from newsletter.text import one_line, truncate
from newsletter.topics import Taxonomy

SUBJECT_TITLE_LIMIT = 70


@dataclass(frozen=True)
class RenderedDigest:
    subject: str
    html: str
    text: str


# The context entries that differ between two subscribers who get the same papers for the same
# reasons; everything else in a digest is shared by them.
# `feedback_url` is the signed stem of every paper's "more / less like this" links: one value
# per subscriber, so the shared digest holds the papers' part of those links.
PERSONAL_FIELDS = ("email", "view_url", "preferences_url", "unsubscribe_url", "feedback_url")


@dataclass
class DigestTemplate:
    """A digest rendered once for everyone with the same papers and matched labels: the
    personal fields are placeholder tokens, filled in per subscriber by `fill`."""

    subject: str
    html: str
    text: str
    tokens: dict[str, str]  # field name -> its placeholder token
    # The message layer's encoded form of this digest, cached and evicted along with it.
    encoded: object | None = None


def compile_mjml(path: Path) -> str:
    """MJML to HTML, once per template. Jinja tags inside mj-text survive the compilation.

    No web fonts: MJML links a Google Fonts stylesheet (and @imports it) whenever the font
    stack names one of its known fonts, such as Roboto, and every open of the digest would
    then tell Google. With an empty font table the stack falls back to the reader's own fonts."""
    return str(mjml.mjml2html(path.read_text(encoding="utf-8"), fonts={}))


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

    def intro(
        self, interests: Interests, picks: Sequence[Pick], reasons: Sequence[str] = ()
    ) -> str:
        """The line under the headline: what the papers are and in what order. `reasons` are
        the planner's; any by meaning says the reader's own words chose (and ordered) them."""
        count = len(picks)
        noun = "paper" if count == 1 else "papers"
        if any(shown_reason(reason) for reason in reasons):
            if interests.everything:
                return f"{count} new {noun} close to what you work on, the closest first."
            names = self._interest_names(interests)
            return f"{count} new {noun} on {names} or close to what you work on."
        if interests.everything:
            # Votes are the order only when there are any: an arXiv-only day has none.
            if any(pick.paper.upvotes for pick in picks):
                order = f"Today's {count} most upvoted {noun}"
            else:
                order = f"Today's first {count} {noun}, in the order they were listed"
            return f"{order}, none of which you have seen here before."
        return f"{count} new {noun} on {self._interest_names(interests)}."

    def _interest_names(self, interests: Interests) -> str:
        names = [
            self.taxonomy.by_slug[s].name for s in interests.topics if s in self.taxonomy.by_slug
        ]
        names += [f"“{k}”" for k in interests.keywords]
        return ", ".join(names)

    def personal(self, subscriber_id: int, salt: str, email: str, day: date) -> dict[str, str]:
        """The context entries that are the subscriber's own (see PERSONAL_FIELDS); `salt` is
        the subscriber's token salt, which their links are signed over."""
        return {
            "email": email,
            "view_url": self.links.view(subscriber_id, salt, day),
            "preferences_url": self.links.preferences(subscriber_id, salt),
            "unsubscribe_url": self.links.unsubscribe(subscriber_id, salt),
            "feedback_url": self.links.feedback_base(subscriber_id, salt),
        }

    def render(
        self,
        *,
        subscriber_id: int,
        salt: str,
        email: str,
        day: date,
        interests: Interests,
        picks: Sequence[Pick],
        reasons: Sequence[str] = (),
    ) -> RenderedDigest:
        """`reasons`, when given, are the planner's, one per pick in order."""
        subject, context = self._shared(day, interests, picks, reasons)
        context.update(self.personal(subscriber_id, salt, email, day))
        return RenderedDigest(subject, self._html.render(context), self._text.render(context))

    def render_template(
        self,
        *,
        day: date,
        interests: Interests,
        picks: Sequence[Pick],
        tokens: dict[str, str],
        reasons: Sequence[str] = (),
    ) -> DigestTemplate:
        """The digest with `tokens` standing in for the personal fields."""
        subject, context = self._shared(day, interests, picks, reasons)
        context.update(tokens)
        return DigestTemplate(
            subject, self._html.render(context), self._text.render(context), dict(tokens)
        )

    def _shared(
        self, day: date, interests: Interests, picks: Sequence[Pick], reasons: Sequence[str] = ()
    ) -> tuple[str, dict[str, object]]:
        why = list(reasons)[: len(picks)]
        why += [""] * (len(picks) - len(why))
        papers = [paper_view(pick, reason) for pick, reason in zip(picks, why, strict=True)]
        subject = subject_line(self.newsletter_name, day, picks)
        context: dict[str, object] = {
            "subject": subject,
            "preview": truncate(" · ".join(p.title for p in papers[1:4]), 140),
            "newsletter_name": self.newsletter_name,
            "day_label": day_label(day),
            "headline": "Trending papers for you" if papers else "Nothing new today",
            "intro": self.intro(interests, picks, why),
            "papers": papers,
            "archive_url": self.links.archive(day),
        }
        return subject, context


class CachedRenderer:
    """Renders each distinct digest once and fills in only the personal parts per subscriber.

    Subscribers who get the same papers with the same matched labels and intro get the same
    digest but for their address and signed links, so the template is rendered once with
    placeholder tokens and the tokens are replaced by each subscriber's values: HTML-escaped in
    the HTML part exactly as Jinja's autoescape would, verbatim in the text part. The tokens
    carry a random nonce, so feed text cannot contain one. A template that transforms a
    personal field (a filter, a slice) would break the substitution, so the renderer checks
    itself once against the plain one and falls back to rendering per subscriber if they differ.
    The cache is a bounded LRU: memory does not grow with the number of subscribers.
    """

    def __init__(self, renderer: DigestRenderer, size: int = 128) -> None:
        self.renderer = renderer
        self.size = size
        nonce = secrets.token_hex(8)
        self.tokens = {name: f"zq{nonce}{name.replace('_', '')}qz" for name in PERSONAL_FIELDS}
        self._cache: OrderedDict[tuple[object, ...], DigestTemplate] = OrderedDict()
        self.hits = self.misses = 0
        self.usable: bool | None = None  # decided on first use by `_self_check`

    def template(
        self,
        day: date,
        interests: Interests,
        picks: Sequence[Pick],
        reasons: Sequence[str] = (),
    ) -> DigestTemplate | None:
        """The shared digest for these picks, or None when substitution cannot be trusted."""
        if not self.size:
            return None
        shown = tuple(shown_reason(r) for r in reasons)
        intro = self.renderer.intro(interests, picks, shown)
        key = (day, intro, tuple((p.paper.id, p.matched) for p in picks), shown)
        found = self._cache.get(key)
        if found is not None:
            self.hits += 1
            self._cache.move_to_end(key)
            return found
        if self.usable is None:
            self.usable = self._self_check(day, interests, picks)
        if not self.usable:
            return None
        self.misses += 1
        found = self.renderer.render_template(
            day=day, interests=interests, picks=picks, tokens=self.tokens, reasons=shown
        )
        self._cache[key] = found
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return found

    def personal(
        self, subscriber_id: int, salt: str, email: str, day: date
    ) -> tuple[dict[str, str], dict[str, str]]:
        """token -> value for the HTML part (escaped) and for the text part (verbatim)."""
        values = self.renderer.personal(subscriber_id, salt, email, day)
        html = {self.tokens[k]: str(escape(v)) for k, v in values.items()}
        text = {self.tokens[k]: v for k, v in values.items()}
        return html, text

    def render(
        self,
        *,
        subscriber_id: int,
        salt: str,
        email: str,
        day: date,
        interests: Interests,
        picks: Sequence[Pick],
        reasons: Sequence[str] = (),
    ) -> RenderedDigest:
        shared = self.template(day, interests, picks, reasons)
        if shared is None:
            return self.renderer.render(
                subscriber_id=subscriber_id,
                salt=salt,
                email=email,
                day=day,
                interests=interests,
                picks=picks,
                reasons=reasons,
            )
        html_values, text_values = self.personal(subscriber_id, salt, email, day)
        return RenderedDigest(
            shared.subject, fill(shared.html, html_values), fill(shared.text, text_values)
        )

    def _self_check(self, day: date, interests: Interests, picks: Sequence[Pick]) -> bool:
        probe_id, probe_salt, probe_email = 987654321, "pr0be-_", "o'brien+x&y<z>\"@example.org"
        plain = self.renderer.render(
            subscriber_id=probe_id,
            salt=probe_salt,
            email=probe_email,
            day=day,
            interests=interests,
            picks=picks,
        )
        shared = self.renderer.render_template(
            day=day, interests=interests, picks=picks, tokens=self.tokens
        )
        html_values, text_values = self.personal(probe_id, probe_salt, probe_email, day)
        return (
            fill(shared.html, html_values) == plain.html
            and fill(shared.text, text_values) == plain.text
        )


def fill(template: str, values: dict[str, str]) -> str:
    for token, value in values.items():
        template = template.replace(token, value)
    return template

"""The rendered digest: feed text escaped, links vetted, size bounded, MJML compiled once."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import pytest

import newsletter.render.digest as digest_module
from newsletter.render import RenderedDigest
from newsletter.root import Newsletter
from newsletter.selection import Interests, Pick
from tests.conftest import SAMPLE_DATA
from tests.fixtures import shapes
from tests.fixtures.hostile import (
    DOLLAR_TITLE,
    IDS,
    LATEX_TITLE,
    MANY_AUTHORS,
    hostile_day,
)

HOSTILE_DAY = date(2026, 2, 14)
SAMPLE_DAY = date(2026, 2, 11)
BASE_URL = "https://digest.example.net/papers"
READER = "reader@example.org"
# Markup the HTML template writes; none of it belongs in the text part. (Feed text that itself
# looks like markup, "<b>quantization</b>", is kept literally there: it is plain text.)
TEMPLATE_MARKUP = re.compile(r"<(?:div|span|br|table|td|tr|html|body|head)\b|href=\"http", re.I)


@dataclass
class Anchor:
    href: str
    text: str


class Markup(HTMLParser):
    """Every element and attribute of a document as a browser's tokenizer sees them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.anchors: list[Anchor] = []
        self._open: Anchor | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        if tag == "a":
            self._open = Anchor(dict(attrs).get("href") or "", "")
            self.anchors.append(self._open)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open.text += data

    def attribute_values(self, *names: str) -> list[str]:
        return [v or "" for _, attrs in self.tags for k, v in attrs if k in names]


def stored_day(app: Newsletter, day: date, items: Sequence[object], tmp_path: Path) -> None:
    path = tmp_path / f"{day}.json"
    path.write_text(json.dumps(items), encoding="utf-8")
    app.fetch(day, str(path))


@pytest.fixture
def app(make_newsletter: Callable[..., Newsletter]) -> Newsletter:
    return make_newsletter(base_url=BASE_URL)


@pytest.fixture
def hostile(app: Newsletter, tmp_path: Path) -> RenderedDigest:
    """The digest of a keyword subscriber whose interests match every hostile paper."""
    stored_day(app, HOSTILE_DAY, hostile_day(str(HOSTILE_DAY)), tmp_path)
    app.store.subscribers.upsert(READER, [], ["compiler", "quantization"])
    return app.preview(READER, HOSTILE_DAY)


def test_every_hostile_paper_is_selected_and_shown(hostile: RenderedDigest) -> None:
    for paper_id in IDS.values():
        assert f"https://huggingface.co/papers/{paper_id}" in hostile.html
        assert f"https://huggingface.co/papers/{paper_id}" in hostile.text


def test_feed_markup_is_escaped_text_not_markup(hostile: RenderedDigest) -> None:
    markup = Markup(hostile.html)
    tags = {tag for tag, _ in markup.tags}
    attributes = {name for _, attrs in markup.tags for name, _ in attrs}

    assert "<script" not in hostile.html.lower()
    assert "script" not in tags and "img" not in tags and "b" not in tags
    assert not [a for a in attributes if a.startswith("on")], "event handler attribute"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in hostile.html
    assert "&lt;img src=x onerror=alert(1)&gt;" in hostile.html
    assert "&lt;b onmouseover=alert(1)&gt;Mallory&lt;/b&gt;, Eve &amp; Trudy" in hostile.html
    # The AI summary tries to close the attribute and open a link: it stays text.
    assert "A compiler paper&#34;&gt;&lt;a href=&#34;javascript:alert(1)&#34;&gt;x" in hostile.html


def test_only_http_links_are_rendered(hostile: RenderedDigest) -> None:
    markup = Markup(hostile.html)
    links = markup.attribute_values("href", "src", "action", "formaction", "background")

    assert links
    for link in links:
        assert re.match(r"https?://", link.strip(), re.I), link
        assert not link.strip().lower().startswith(("javascript:", "data:"))
    # The paper whose repository and project page were script URLs gets neither link.
    unsafe = next(a for a in markup.anchors if a.href.endswith(IDS["unsafe_urls"]))
    assert unsafe.text.startswith("Links that must never be rendered")
    labels = [a.text for a in markup.anchors]
    assert "Project page" not in labels
    assert not any(label.startswith("Code") for label in labels)


def test_latex_reads_as_text_and_a_prose_dollar_is_kept(hostile: RenderedDigest) -> None:
    titles = [a.text for a in Markup(hostile.html).anchors]
    readable = "∇²DFT: a universal quantum chemistry dataset"
    assert LATEX_TITLE not in titles and readable in titles
    assert DOLLAR_TITLE in titles
    assert "Earn $1 Million" in hostile.text
    assert readable in hostile.text
    assert "∇²DFT is a large dataset" in hostile.html  # the AI summary
    for part in (hostile.subject, hostile.html, hostile.text):
        assert "\\nabla" not in part and "$\\" not in part


def test_control_characters_and_line_breaks_never_reach_the_reader(
    hostile: RenderedDigest,
) -> None:
    for part in (hostile.subject, hostile.html, hostile.text):
        assert "\x00" not in part and "\x1b" not in part and "\u2028" not in part
    assert "\r" not in hostile.subject and "\n" not in hostile.subject
    assert "Hello Bcc: victim@evil.test" in hostile.html
    assert "Null bytes and ANSI escapes in quantization titles" in hostile.html


def test_ten_paper_digest_with_huge_abstract_and_author_list_stays_under_gmail_clip(
    hostile: RenderedDigest,
) -> None:
    assert IDS["huge_abstract"] in hostile.html and IDS["many_authors"] in hostile.html
    assert len(hostile.html.encode("utf-8")) < 100_000
    assert "measure the perplexity" in hostile.html
    assert "Step 200:" not in hostile.html  # the abstract was cut, not pasted whole


def test_long_author_lists_show_the_first_three_and_et_al(hostile: RenderedDigest) -> None:
    byline = ", ".join(f"Researcher {n:03d} Collaborator" for n in (1, 2, 3)) + " et al."

    assert byline in hostile.html
    assert byline in hostile.text
    assert "Researcher 004" not in hostile.html
    assert f"Researcher {MANY_AUTHORS:03d}" not in hostile.text


def test_code_link_shows_the_repository_stars(app: Newsletter) -> None:
    app.fetch(SAMPLE_DAY, str(SAMPLE_DATA / f"{SAMPLE_DAY}.json"))
    app.store.subscribers.upsert(READER, [], [])

    rendered = app.preview(READER, SAMPLE_DAY)

    anchors = {a.text: a.href for a in Markup(rendered.html).anchors}
    repo = "https://github.com/tensorforge/mutual-supervised-learning-sequential-to-parallel"
    assert anchors["Code ★ 3,695"] == repo
    assert (
        anchors["Code ★ 1,125"]
        == "https://github.com/nimbus-research/unsupervised-translation-programming"
    )
    assert f"Code ★ 3,695: {repo}" in rendered.text


def test_footer_links_are_signed_and_built_from_the_base_url(
    app: Newsletter, hostile: RenderedDigest
) -> None:
    subscriber = app.store.subscribers.by_email(READER)
    assert subscriber is not None
    anchors = Markup(hostile.html).anchors
    by_text = {a.text.strip(): a.href for a in anchors}
    expected = {
        "Manage preferences": app.links.preferences(subscriber.id, subscriber.token_salt),
        "Unsubscribe": app.links.unsubscribe(subscriber.id, subscriber.token_salt),
        "View in browser": app.links.view(subscriber.id, subscriber.token_salt, HOSTILE_DAY),
    }

    for label, url in expected.items():
        assert by_text[label] == url
        assert url.startswith(f"{BASE_URL}/")
    # The footer comes after the last paper: the unsubscribe link is among the final anchors.
    last_paper = max(i for i, a in enumerate(anchors) if "huggingface.co/papers/" in a.href)
    footer = [a.text.strip() for a in anchors[last_paper + 1 :]]
    assert {"View in browser", "Manage preferences", "Unsubscribe"} <= set(footer)
    for link in Markup(hostile.html).attribute_values("href"):
        if "example.net" in link:
            assert link.startswith(f"{BASE_URL}/")


def test_text_part_carries_the_same_links_and_no_template_markup(
    app: Newsletter, hostile: RenderedDigest
) -> None:
    subscriber = app.store.subscribers.by_email(READER)
    assert subscriber is not None
    links = [
        app.links.view(subscriber.id, subscriber.token_salt, HOSTILE_DAY),
        app.links.preferences(subscriber.id, subscriber.token_salt),
        app.links.unsubscribe(subscriber.id, subscriber.token_salt),
        app.links.archive(HOSTILE_DAY),
    ]

    for url in links:
        assert f": {url}\n" in hostile.text
        assert f'href="{url}"' in hostile.html
    assert TEMPLATE_MARKUP.search(hostile.text) is None
    assert "&lt;" not in hostile.text and "&amp;" not in hostile.text  # not HTML-escaped either
    assert "Eve & Trudy" in hostile.text


def test_text_part_of_an_ordinary_digest_has_no_markup_at_all(app: Newsletter) -> None:
    app.fetch(SAMPLE_DAY, str(SAMPLE_DATA / f"{SAMPLE_DAY}.json"))
    app.store.subscribers.upsert(READER, [], [])

    rendered = app.preview(READER, SAMPLE_DAY)

    assert re.search(r"</?[a-zA-Z!][^>]*>", rendered.text) is None
    assert "&lt;" not in rendered.text and "&#" not in rendered.text
    assert rendered.text.count("https://huggingface.co/papers/") == 10


def test_mjml_is_compiled_once_and_rendering_is_deterministic(
    app: Newsletter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled: list[Path] = []
    real_compile = digest_module.compile_mjml

    def counting_compile(path: Path) -> str:
        compiled.append(path)
        return real_compile(path)

    monkeypatch.setattr(digest_module, "compile_mjml", counting_compile)
    stored_day(app, HOSTILE_DAY, hostile_day(str(HOSTILE_DAY)), tmp_path)
    app.store.subscribers.upsert(READER, [], ["compiler"])
    app.store.subscribers.upsert("other@example.org", [], ["quantization"])

    first = app.preview(READER, HOSTILE_DAY)
    other = app.preview("other@example.org", HOSTILE_DAY)
    again = app.preview(READER, HOSTILE_DAY)

    assert len(compiled) == 1 and compiled[0].name == "digest.mjml"
    assert again == first
    assert other.html != first.html
    # A fresh compilation (another process, another day) gives byte-identical HTML too.
    fresh = Newsletter(app.settings)
    try:
        assert fresh.preview(READER, HOSTILE_DAY) == first
    finally:
        fresh.close()
    assert len(compiled) == 2


def test_html_template_autoescapes_at_the_jinja_level(app: Newsletter) -> None:
    # The compiled MJML is loaded with from_string, which select_autoescape() would not escape.
    environment = app.composer.renderer._html.environment
    assert environment.autoescape is True
    probe = environment.from_string("{{ value }}|{{ value | upper }}")
    assert (
        probe.render(value='<i x="1">&')
        == "&lt;i x=&#34;1&#34;&gt;&amp;|&lt;I X=&#34;1&#34;&gt;&amp;"
    )


def test_jinja_syntax_in_feed_text_is_not_evaluated(app: Newsletter, tmp_path: Path) -> None:
    items = hostile_day(str(HOSTILE_DAY))[:2]
    items[0]["paper"]["title"] = items[0]["title"] = "{{ 7 * 7 }} {% raw %} compiler {# x #}"
    stored_day(app, HOSTILE_DAY, items, tmp_path)
    app.store.subscribers.upsert(READER, [], ["compiler"])

    rendered = app.preview(READER, HOSTILE_DAY)

    assert "{{ 7 * 7 }} {% raw %} compiler {# x #}" in rendered.html
    assert "{{ 7 * 7 }} {% raw %} compiler {# x #}" in rendered.text
    assert ">49<" not in rendered.html


# -- an arXiv-only day -------------------------------------------------------------------------

ARXIV_DAY = date(2026, 8, 21)
ARXIV_ITEMS = [
    ("2608.80011", "A compiler for $\\mathcal{O}(1)$ kernels", "We build a compiler."),
    ("2608.80012", "Diffusion for quantized compilers", "We quantize diffusion compilers."),
    ("2608.80013", "Protein folding at scale", "We fold proteins."),
]


@pytest.fixture
def arxiv_day(app: Newsletter, tmp_path: Path) -> Path:
    path = tmp_path / "cs.LG.xml"
    path.write_text(
        shapes.rss_feed(ARXIV_ITEMS, channel_date="Fri, 21 Aug 2026 00:00:00 -0400"), "utf-8"
    )
    report = app.fetch(None, str(path))  # the day comes from the feed's pubDate
    assert report.day == ARXIV_DAY
    return path


def test_arxiv_only_digest_is_worded_honestly_and_links_to_arxiv(
    app: Newsletter, arxiv_day: Path
) -> None:
    app.store.subscribers.upsert(READER, [], [])
    digest = app.preview(READER, ARXIV_DAY)
    for part in (digest.html, digest.text):
        assert "most upvoted" not in part
        assert "first 3 papers, in the order they were listed, none of which" in part
        assert "▲" not in part
        assert "huggingface.co/papers" not in part
    titles = {a.text: a.href for a in Markup(digest.html).anchors}
    assert titles["A compiler for 𝒪(1) kernels"] == "https://arxiv.org/abs/2608.80011"
    assert digest.subject.endswith(": A compiler for 𝒪(1) kernels + 2 more")
    # The announcement order, not the id or any other arbitrary key.
    order = [digest.text.index(f"arxiv.org/abs/{i}") for i, _, _ in ARXIV_ITEMS]
    assert order == sorted(order)


def test_arxiv_only_digest_for_interests_puts_the_best_match_first(
    app: Newsletter, arxiv_day: Path
) -> None:
    app.store.subscribers.upsert(READER, [], ["Compiler", "Quantization"])
    digest = app.preview(READER, ARXIV_DAY)
    assert "2 new papers on “Compiler”, “Quantization”." in digest.text
    first, second = (digest.text.index(f"abs/{i}") for i in ("2608.80012", "2608.80011"))
    assert first < second  # matches both keywords
    assert "   Compiler, Quantization\n" not in digest.text  # labels joined with " · "
    assert "   Compiler · Quantization\n" in digest.text
    labels = [a for a in ("Compiler", "Quantization") if f">{a}</span>" in digest.html]
    assert labels == ["Compiler", "Quantization"]


def test_hugging_face_papers_keep_their_votes_and_page(app: Newsletter, tmp_path: Path) -> None:
    stored_day(
        app, SAMPLE_DAY, json.loads((SAMPLE_DATA / f"{SAMPLE_DAY}.json").read_text()), tmp_path
    )
    app.store.subscribers.upsert(READER, [], [])
    digest = app.preview(READER, SAMPLE_DAY)
    assert "most upvoted" in digest.text and "▲ " in digest.text
    assert "https://huggingface.co/papers/" in digest.html


def test_the_intro_says_when_the_readers_own_words_chose_the_papers(app: Newsletter) -> None:
    renderer = app.composer.renderer
    app.fetch(SAMPLE_DAY, str(SAMPLE_DATA / f"{SAMPLE_DAY}.json"))
    picks = [Pick(paper, ()) for paper in app.store.papers.day_papers(SAMPLE_DAY)[:2]]
    by_meaning = ["close to your interest in “serving models”", "matches “serving”"]

    assert renderer.intro(Interests(), picks, by_meaning) == (
        "2 new papers close to what you work on, the closest first."
    )
    assert renderer.intro(Interests(keywords=("serving",)), picks, by_meaning) == (
        "2 new papers on “serving” or close to what you work on."
    )
    # Literal matches alone say nothing about meaning: the wording is the usual one.
    assert renderer.intro(Interests(), picks, ["matches “serving”", ""]).startswith("Today's 2")

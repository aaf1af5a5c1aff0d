"""Sources turn untrusted input into clean Papers: Hugging Face JSON, arXiv Atom/RSS, local files.

HTTP sources are exercised against a real HTTP server on 127.0.0.1 serving the fixture files;
nothing here touches the internet.
"""

from __future__ import annotations

import copy
import json
import socket
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from newsletter.errors import SourceError
from newsletter.papers import (
    ABSTRACT_LIMIT,
    AUTHORS_KEPT,
    COUNT_MAX,
    TITLE_LIMIT,
    Paper,
    canonical_id,
)
from newsletter.sources import arxiv, huggingface, localfile
from newsletter.store import Store
from newsletter.store.schema import PaperRow
from tests.fixtures import shapes
from tests.fixtures.hostile import (
    CONTROL_TITLE,
    CRLF_TITLE,
    GOOD_IDS,
    IDS,
    MANY_AUTHORS,
    hostile_day,
    malformed_day,
)
from tests.local_http import LocalServer, Reply

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SAMPLE_DATA = Path(__file__).resolve().parent.parent / "newsletter" / "sample_data"
ATOM_IDS = ["2510.14177", "2502.03896", "2408.04952", "2403.13668"]
RSS_IDS = ["2602.05662", "2602.04088", "2602.22463", "2602.00633"]  # 2403.24325 is "replace"


def sample_items(day: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads((SAMPLE_DATA / f"{day}.json").read_text("utf-8"))
    return items


def by_id(papers: list[Paper]) -> dict[str, Paper]:
    return {paper.id: paper for paper in papers}


# -- a real HTTP server on loopback ---------------------------------------------------------


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback port that is bound but not listening, so every connection is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/api/daily_papers"
    finally:
        sock.close()


def json_reply(value: Any) -> Reply:
    return Reply(body=json.dumps(value).encode())


# -- Hugging Face: parsing the sample days --------------------------------------------------


@pytest.mark.parametrize(
    ("day", "count"), [("2026-02-11", 25), ("2026-02-12", 25), ("2026-02-13", 16)]
)
def test_hf_sample_day_parses_every_item_in_order(day: str, count: int) -> None:
    items = sample_items(day)
    result = huggingface.parse_items(items, day)
    assert result.problems == []
    assert len(result.papers) == count
    assert [p.id for p in result.papers] == [item["paper"]["id"] for item in items]


def test_hf_titles_and_abstracts_lose_their_hard_line_breaks() -> None:
    papers = by_id(huggingface.parse_items(sample_items("2026-02-12"), "x").papers)
    deep = papers["2410.10153"]
    assert deep.title == (
        "Deep Optimizer States: Towards Scalable Training of Transformer Models "
        "Using Interleaved Offloading"
    )
    # The feed's LaTeX tie "models~(LLMs)" reads as a space.
    assert deep.abstract.startswith("Transformers and large language models (LLMs) have seen rapid")
    for paper in papers.values():
        assert "\n" not in paper.title and "  " not in paper.title
        assert "\n" not in paper.abstract


def test_hf_authors_are_names_in_order_with_their_count() -> None:
    items = sample_items("2026-02-12")
    papers = by_id(huggingface.parse_items(items, "x").papers)
    deep = papers["2410.10153"]
    assert deep.authors == [
        "Daniel Eriksen",
        "Tariq Nakamura",
        "Noah Rahman",
        "Zhang Garcia",
        "Thomas Jensen",
    ]
    assert deep.author_count == 5
    barbarians = papers["2510.09593"]
    assert barbarians.author_count == 17 == len(barbarians.authors)


def test_hf_hidden_authors_are_counted_but_not_named() -> None:
    item = copy.deepcopy(sample_items("2026-02-12")[0])
    item["paper"]["authors"][0]["hidden"] = True
    paper = huggingface.parse_item(item)
    assert "Daniel Eriksen" not in paper.authors
    assert len(paper.authors) == 4
    assert paper.author_count == 5


def test_hf_absent_optional_keys_become_none_or_empty() -> None:
    items = sample_items("2026-02-12")
    item = next(i for i in items if i["paper"]["id"] == "2211.03718")
    assert "ai_summary" not in item["paper"] and "githubRepo" not in item["paper"]
    paper = huggingface.parse_item(item)
    assert paper.ai_summary is None
    assert paper.ai_keywords == []
    assert paper.github_repo is None
    assert paper.github_stars is None
    assert paper.project_page is None
    assert paper.organization is None
    assert paper.upvotes == 59
    assert paper.comments == 1


def test_hf_optional_keys_present_are_kept() -> None:
    papers = by_id(huggingface.parse_items(sample_items("2026-02-12"), "x").papers)
    deep = papers["2410.10153"]
    assert deep.ai_summary is not None and deep.ai_summary.startswith("Transformers and large")
    assert deep.ai_keywords[:2] == ["deep optimizer states", "scalable training"]
    with_repo = papers["2312.08590"]
    assert with_repo.github_repo is not None and with_repo.github_repo.startswith("https://")
    assert isinstance(with_repo.github_stars, int)
    assert papers["2506.07470"].organization  # the fixture's only organisation on this day
    assert deep.published_on == date(2024, 10, 25)


def test_hf_upvotes_come_from_inside_paper_not_the_top_level() -> None:
    item = copy.deepcopy(sample_items("2026-02-12")[0])
    item["upvotes"] = 999
    assert huggingface.parse_item(item).upvotes == 60
    del item["paper"]["upvotes"]
    assert huggingface.parse_item(item).upvotes == 0


def test_hf_item_with_only_the_keys_the_api_always_sends_parses() -> None:
    bare = next(i for i in hostile_day() if i["paper"]["id"] == IDS["bare"])
    paper = huggingface.parse_item(bare)
    assert paper.title == "A bare paper on compiler quantization"
    assert paper.comments == 0
    assert paper.organization is None and paper.ai_keywords == []


def test_hf_sample_days_are_in_the_2026_shape_and_list_on_the_submitted_day() -> None:
    items = sample_items("2026-02-12")
    # The top-level publishedAt is the arXiv date, which is never the listing day here.
    assert all(item["publishedAt"] == item["paper"]["publishedAt"] for item in items)
    assert date(2026, 2, 12) not in {date.fromisoformat(i["publishedAt"][:10]) for i in items}
    assert set(huggingface.listed_dates(items)) == {date(2026, 2, 12)}


def test_hf_listing_day_of_a_2026_item_is_paper_submitted_on_daily_at() -> None:
    item = shapes.item_2026("2608.80001", listed="2026-08-21", published="2026-08-19")
    assert huggingface.listing_day(item) == date(2026, 8, 21)


def test_hf_listing_day_of_a_2024_item_is_the_top_level_published_at() -> None:
    item = shapes.item_2024("2403.80001", listed="2024-03-13", published="2024-03-11")
    assert huggingface.listing_day(item) == date(2024, 3, 13)


def test_hf_changeover_item_states_no_listing_day() -> None:
    item = shapes.item_changeover("2501.80001", published="2025-01-02")
    assert huggingface.listing_day(item) is None
    bare = {"paper": {"id": "2501.80002", "title": "t"}}
    assert huggingface.listing_day(bare) is None
    assert huggingface.listing_day("junk") is None


# -- Hugging Face: hostile and malformed input -----------------------------------------------


def test_hf_malformed_day_keeps_good_items_and_reports_each_bad_one_by_position() -> None:
    result = huggingface.parse_items(malformed_day(), "HF test")
    assert [p.id for p in result.papers] == list(GOOD_IDS)
    assert len(result.problems) == 3
    item1, item2, item4 = result.problems
    assert item1.startswith("HF test: item 1: ") and "expected an object" in item1
    assert item2.startswith("HF test: item 2: ") and "not an arXiv id" in item2
    assert item4.startswith("HF test: item 4: ") and "etc/passwd" in item4


def test_hf_paper_listed_twice_in_one_response_is_kept_once_first_wins() -> None:
    items = sample_items("2026-02-12")[:2]
    again = copy.deepcopy(items[0])
    again["paper"]["upvotes"] = 1
    result = huggingface.parse_items([*items, again], "x")
    assert [p.id for p in result.papers] == [i["paper"]["id"] for i in items]
    assert result.papers[0].upvotes == 60


def test_hf_response_that_is_not_a_list_is_one_source_error() -> None:
    with pytest.raises(SourceError, match="expected a JSON list"):
        huggingface.parse_items({"error": "Invalid date"}, "HF test")


@pytest.fixture
def hostile() -> dict[str, Paper]:
    result = huggingface.parse_items(hostile_day(), "hostile")
    assert result.problems == []
    assert len(result.papers) == len(IDS)
    return by_id(result.papers)


def test_hf_script_links_become_none(hostile: dict[str, Paper]) -> None:
    paper = hostile[IDS["unsafe_urls"]]
    assert paper.github_repo is None  # javascript:alert(1)
    assert paper.project_page is None  # data:text/html,...
    assert paper.github_stars == 42


def test_hf_titles_lose_crlf_and_control_characters(hostile: dict[str, Paper]) -> None:
    crlf = hostile[IDS["header_injection"]].title
    assert crlf == "Hello Bcc: victim@evil.test"
    assert crlf != CRLF_TITLE
    control = hostile[IDS["control_chars"]].title
    assert control == "Null bytes and ANSI escapes in quantization titles"
    assert control != CONTROL_TITLE
    for paper in hostile.values():
        for text in (paper.title, paper.abstract, *paper.authors):
            assert not any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F for ch in text), text
            assert "\u2028" not in text


def test_hf_huge_abstract_is_capped(hostile: dict[str, Paper]) -> None:
    abstract = hostile[IDS["huge_abstract"]].abstract
    assert len(abstract) <= ABSTRACT_LIMIT
    assert len(abstract) > ABSTRACT_LIMIT - 200  # cut near the limit, not emptied
    assert abstract.endswith("…")


def test_hf_long_author_list_is_capped_but_counted(hostile: dict[str, Paper]) -> None:
    paper = hostile[IDS["many_authors"]]
    assert len(paper.authors) == AUTHORS_KEPT < MANY_AUTHORS
    assert paper.authors[0] == "Researcher 001 Collaborator"
    assert paper.author_count == MANY_AUTHORS


def test_hf_latex_is_made_readable_and_markup_kept_as_text(hostile: dict[str, Paper]) -> None:
    # Escaping markup is the renderer's job; the source must neither mangle nor interpret it.
    latex = hostile[IDS["latex"]]
    assert latex.title == "∇²DFT: a universal quantum chemistry dataset"
    assert latex.abstract.startswith("We release ∇²DFT, a dataset")
    assert latex.ai_summary is not None and latex.ai_summary.startswith("∇²DFT is a large")
    assert latex.ai_keywords[0] == "∇²dft"
    assert hostile[IDS["dollar"]].title == "Earn $1 Million with Transformers"
    assert hostile[IDS["dollar"]].abstract == (
        "Our compiler cut the inference bill from $1 million to $2 per day; neither $ is math."
    )
    assert "<script>" in hostile[IDS["html"]].title
    assert len(hostile[IDS["html"]].title) <= TITLE_LIMIT


def test_2026_item_with_latex_in_title_and_abstract_reads_as_text() -> None:
    item = shapes.item_2026(
        "2608.80003",
        listed="2026-08-21",
        published="2026-08-19",
        title="Fr'echet Distances in $O(n \\log n)$:\n  Earn $1 Million",
        summary="We bound the $\\textit{Fr\\'echet}$ distance of $\\nabla^2$DFT by\n"
        + "$10^{-3}$ for 50% of inputs~(all) & more. "
        + "x" * 6000,
    )
    paper = huggingface.parse_item(item)
    assert paper.title == "Fréchet Distances in O(n log n): Earn $1 Million"
    assert paper.abstract.startswith(
        "We bound the Fréchet distance of ∇²DFT by 10⁻³ for 50% of inputs (all) & more. "
    )
    assert len(paper.abstract) <= ABSTRACT_LIMIT


def test_arxiv_rss_and_atom_latex_reads_as_text() -> None:
    title = "Learning $\\mathcal{O}(1)$ Fr\\'echet Means"
    summary = "We prove a $k$-NN bound of $1.5\\times$ with ~30% less data."
    rss = shapes.rss_feed([("2608.80004", title, summary)], channel_date=None)
    atom = shapes.atom_feed([("2608.80004", title, summary)])
    for document in (rss, atom):
        (paper,) = arxiv.parse_document(document, "feed").papers
        assert paper.title == "Learning 𝒪(1) Fréchet Means"
        assert paper.abstract == "We prove a k-NN bound of 1.5× with ~30% less data."


def test_hf_ai_keywords_that_are_not_strings_are_dropped() -> None:
    item = copy.deepcopy(sample_items("2026-02-12")[0])
    item["paper"]["ai_keywords"] = ["ok", 5, None, {"x": 1}, "  fine\n"]
    assert huggingface.parse_item(item).ai_keywords == ["ok", "fine"]


# -- Hugging Face: fetching over HTTP --------------------------------------------------------


def test_hf_fetch_follows_pages_until_a_short_one(server: LocalServer) -> None:
    items = sample_items("2026-02-11")[:7]
    pages = [items[0:3], items[3:6], items[6:7]]

    server.handler = lambda path, query: json_reply(pages[int(query["p"][0])])
    result = huggingface.fetch(date(2026, 2, 11), f"{server.url}/api/daily_papers", 3, 5.0)
    assert [p.id for p in result.papers] == [i["paper"]["id"] for i in items]
    assert {r.path for r in server.requests} == {"/api/daily_papers"}
    assert [r.query for r in server.requests] == [
        {"date": ["2026-02-11"], "p": [str(page)], "limit": ["3"]} for page in range(3)
    ]


def test_hf_fetch_stops_on_an_empty_page_after_full_ones(server: LocalServer) -> None:
    items = sample_items("2026-02-13")[:4]
    pages: list[list[dict[str, Any]]] = [items[0:2], items[2:4], []]
    server.handler = lambda path, query: json_reply(pages[int(query["p"][0])])
    result = huggingface.fetch(date(2026, 2, 13), f"{server.url}/api/daily_papers", 2, 5.0)
    assert len(result.papers) == 4
    assert len(server.requests) == 3


def test_hf_fetch_keeps_a_paper_listed_on_two_pages_once(server: LocalServer) -> None:
    items = sample_items("2026-02-13")[:3]
    pages = [items[0:2], [items[1], items[2]], []]
    server.handler = lambda path, query: json_reply(pages[int(query["p"][0])])
    result = huggingface.fetch(date(2026, 2, 13), f"{server.url}/x", 2, 5.0)
    assert [p.id for p in result.papers] == [i["paper"]["id"] for i in items]


def test_hf_fetch_reports_bad_items_with_their_page(server: LocalServer) -> None:
    server.handler = lambda path, query: json_reply(malformed_day())
    result = huggingface.fetch(date(2026, 2, 14), f"{server.url}/x", 100, 5.0)
    assert [p.id for p in result.papers] == list(GOOD_IDS)
    assert result.problems[0].startswith("Hugging Face 2026-02-14 page 0: item 1:")


def test_hf_fetch_http_500_is_one_source_error_on_one_line(server: LocalServer) -> None:
    server.handler = lambda path, query: Reply(500, b"oops", "text/plain")
    with pytest.raises(SourceError) as caught:
        huggingface.fetch(date(2026, 2, 12), f"{server.url}/api/daily_papers", 100, 5.0)
    message = str(caught.value)
    assert "Hugging Face API" in message and "2026-02-12" in message
    assert "HTTP 500" in message
    assert "\n" not in message


def test_hf_fetch_non_json_is_one_source_error(server: LocalServer) -> None:
    server.handler = lambda path, query: Reply(200, b"<html>maintenance</html>", "text/html")
    with pytest.raises(SourceError, match=r"2026-02-12: not JSON"):
        huggingface.fetch(date(2026, 2, 12), f"{server.url}/api/daily_papers", 100, 5.0)


def test_hf_fetch_connection_refused_is_one_source_error(refused_url: str) -> None:
    with pytest.raises(SourceError) as caught:
        huggingface.fetch(date(2026, 2, 12), refused_url, 100, 5.0)
    message = str(caught.value)
    assert refused_url in message and "2026-02-12" in message
    assert "refused" in message.lower()
    assert "\n" not in message


# -- arXiv: Atom and RSS ---------------------------------------------------------------------


def atom_papers() -> dict[str, Paper]:
    result = arxiv.parse_document((FIXTURES / "arxiv_atom.xml").read_bytes(), "atom")
    assert result.problems == []
    assert [p.id for p in result.papers] == ATOM_IDS
    return by_id(result.papers)


def test_atom_ids_lose_their_version() -> None:
    papers = atom_papers()
    assert "2510.14177" in papers  # the feed says http://arxiv.org/abs/2510.14177v2
    assert all("v" not in paper_id for paper_id in papers)


def test_atom_categories_are_deduplicated_with_the_primary_first() -> None:
    papers = atom_papers()
    assert papers["2510.14177"].categories == ["cs.CV", "cs.LG"]
    assert papers["2502.03896"].categories == ["cs.DB", "cs.AI", "cs.LG"]
    assert papers["2403.13668"].categories == ["cs.LG", "cs.AR", "cs.CL"]


def test_atom_entry_fields_are_cleaned() -> None:
    flow = atom_papers()["2510.14177"]
    assert flow.title == (
        "FlowOpt: Fast Optimization Through Whole Flow Processes for Training-Free Editing"
    )
    assert flow.authors == ["Chen Kowalski", "Lucas Nakamura", "Jae-won Jensen"]
    assert flow.author_count == 3
    assert flow.abstract.startswith("The remarkable success of diffusion and flow-matching models")
    assert "\n" not in flow.abstract
    assert flow.published_on == date(2025, 10, 24)
    assert flow.upvotes == 0
    assert "(>1.5x speedup)" in atom_papers()["2502.03896"].abstract  # &gt; decoded once


def test_atom_entry_without_an_arxiv_id_is_a_problem_naming_its_position() -> None:
    text = (FIXTURES / "arxiv_atom.xml").read_text("utf-8")
    text = text.replace(
        "http://arxiv.org/abs/2502.03896v3</id>", "http://arxiv.org/api/errors</id>"
    )
    result = arxiv.parse_document(text, "atom")
    assert [p.id for p in result.papers] == [i for i in ATOM_IDS if i != "2502.03896"]
    assert len(result.problems) == 1
    assert result.problems[0].startswith("atom: entry 1: skipped:")


def rss_papers() -> dict[str, Paper]:
    result = arxiv.parse_document((FIXTURES / "arxiv_rss.xml").read_bytes(), "rss")
    assert result.problems == []
    return by_id(result.papers)


def test_rss_skips_replacements_and_keeps_new_and_cross_lists() -> None:
    papers = rss_papers()
    assert list(papers) == RSS_IDS
    assert "2403.24325" not in papers  # announce_type replace


def test_rss_skips_replace_cross_too() -> None:
    text = (FIXTURES / "arxiv_rss.xml").read_text("utf-8")
    text = text.replace(
        "<arxiv:announce_type>cross</arxiv:announce_type>",
        "<arxiv:announce_type>replace-cross</arxiv:announce_type>",
    )
    ids = [p.id for p in arxiv.parse_document(text, "rss").papers]
    assert "2602.00633" not in ids and len(ids) == 3


def test_rss_abstract_is_the_text_after_abstract_label() -> None:
    scale = rss_papers()["2602.05662"]
    assert scale.abstract.startswith("Test-time compute scaling has emerged")
    assert "Announce Type" not in scale.abstract and "arXiv:" not in scale.abstract


def test_rss_description_without_abstract_label_is_used_whole() -> None:
    text = (FIXTURES / "arxiv_rss.xml").read_text("utf-8")
    text = text.replace("Abstract: Test-time compute", "Test-time compute", 1)
    scale = by_id(arxiv.parse_document(text, "rss").papers)["2602.05662"]
    assert scale.abstract.startswith("arXiv:2602.05662v1 Announce Type: new Test-time compute")


def test_rss_creator_string_is_split_into_authors() -> None:
    scale = rss_papers()["2602.05662"]
    assert scale.authors == ["Bilal Schmidt", "Sara Bianchi", "Jae-won Kowalski", "Alejandro Park"]
    assert scale.author_count == 4


def test_rss_categories_and_date() -> None:
    branch = rss_papers()["2602.04088"]
    assert branch.categories == ["cs.LG", "cs.AR"]
    assert branch.published_on == date(2026, 2, 13)
    assert branch.title == (
        "Identifying and Exploiting Sparse Branch Correlations for Optimizing Branch Prediction"
    )


def test_empty_weekend_rss_feed_gives_no_papers_and_no_problems() -> None:
    empty = '<?xml version="1.0"?><rss version="2.0"><channel><title>cs.LG</title></channel></rss>'
    result = arxiv.parse_document(empty, "rss")
    assert result.papers == [] and result.problems == []


def test_not_xml_is_a_source_error() -> None:
    with pytest.raises(SourceError, match=r"^feed: not well-formed XML"):
        arxiv.parse_document(b'{"papers": []}', "feed")


def test_xml_that_is_neither_atom_nor_rss_is_a_source_error() -> None:
    with pytest.raises(SourceError, match=r"neither an Atom feed nor an RSS feed \(root <html>\)"):
        arxiv.parse_document(b"<html><body>Rate limited</body></html>", "feed")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rss version="2.0"><channel><item><title>&lol9;</title>
<link>https://arxiv.org/abs/2602.05662</link></item></channel></rss>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<rss version="2.0"><channel><item><title>&xxe;</title>
<link>https://arxiv.org/abs/2602.05662</link></item></channel></rss>"""


@pytest.mark.parametrize("document", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["laughs", "xxe"])
def test_entity_declarations_are_rejected_as_source_error(document: bytes) -> None:
    started = time.monotonic()
    with pytest.raises(SourceError, match="not well-formed XML"):
        arxiv.parse_document(document, "feed")
    assert time.monotonic() - started < 1


def arxiv_fetch(server: LocalServer, categories: list[str], mode: str, interval: float) -> Any:
    return arxiv.fetch(
        categories,
        mode=mode,
        rss_url=f"{server.url}/rss/",
        api_url=f"{server.url}/api/query",
        max_results=50,
        interval=interval,
        timeout=5.0,
    )


def test_arxiv_rss_fetch_spaces_requests_by_the_interval(server: LocalServer) -> None:
    feed = (FIXTURES / "arxiv_rss.xml").read_bytes()
    server.handler = lambda path, query: Reply(body=feed, content_type="application/rss+xml")
    started = time.monotonic()
    result = arxiv_fetch(server, ["cs.LG", "cs.AR"], "rss", 0.3)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.3
    assert [r.path for r in server.requests] == ["/rss/cs.LG", "/rss/cs.AR"]
    # The same feed twice: each paper is kept once.
    assert [p.id for p in result.papers] == RSS_IDS


def test_arxiv_api_fetch_asks_for_each_category_newest_first(server: LocalServer) -> None:
    feed = (FIXTURES / "arxiv_atom.xml").read_bytes()
    server.handler = lambda path, query: Reply(body=feed, content_type="application/atom+xml")
    result = arxiv_fetch(server, ["cs.LG"], "api", 0.0)
    assert [p.id for p in result.papers] == ATOM_IDS
    (request,) = server.requests
    assert request.path == "/api/query"
    assert request.query == {
        "search_query": ["cat:cs.LG"],
        "sortBy": ["submittedDate"],
        "sortOrder": ["descending"],
        "max_results": ["50"],
    }


def test_arxiv_fetch_http_error_names_the_category(server: LocalServer) -> None:
    server.handler = lambda path, query: Reply(503, b"busy", "text/plain")
    with pytest.raises(SourceError) as caught:
        arxiv_fetch(server, ["cs.PL"], "rss", 0.0)
    assert str(caught.value) == "arXiv rss cs.PL: HTTP 503 Service Unavailable"


def test_arxiv_fetch_non_xml_reply_is_a_source_error(server: LocalServer) -> None:
    server.handler = lambda path, query: Reply(body=b"Rate exceeded.", content_type="text/plain")
    with pytest.raises(SourceError, match=r"arXiv rss cs\.LG: not well-formed XML"):
        arxiv_fetch(server, ["cs.LG"], "rss", 0.0)


# -- local files ------------------------------------------------------------------------------


def test_localfile_reads_a_json_list_and_states_its_listing_date(tmp_path: Path) -> None:
    path = tmp_path / "day.data"
    path.write_bytes(b"\n  " + (SAMPLE_DATA / "2026-02-12.json").read_bytes())
    result, listed = localfile.read(path)
    assert len(result.papers) == 25 and result.problems == []
    assert listed == date(2026, 2, 12)


def test_localfile_reads_a_papers_object(tmp_path: Path) -> None:
    path = tmp_path / "day.data"
    path.write_text(json.dumps({"papers": sample_items("2026-02-13")}), "utf-8")
    result, listed = localfile.read(path)
    assert [p.id for p in result.papers] == [i["paper"]["id"] for i in sample_items("2026-02-13")]
    assert listed == date(2026, 2, 13)


@pytest.mark.parametrize("fixture", ["json", "rss"])
def test_localfile_accepts_a_utf8_byte_order_mark(tmp_path: Path, fixture: str) -> None:
    source = SAMPLE_DATA / "2026-02-13.json" if fixture == "json" else FIXTURES / "arxiv_rss.xml"
    path = tmp_path / "with-bom"
    path.write_bytes(b"\xef\xbb\xbf" + source.read_bytes())
    result, _ = localfile.read(path)
    assert len(result.papers) == (16 if fixture == "json" else len(RSS_IDS))


def test_localfile_2026_file_is_stored_under_its_listing_day_not_the_arxiv_date(
    tmp_path: Path,
) -> None:
    items = [
        shapes.item_2026(f"2608.8000{n}", listed="2026-08-21", published="2026-08-19")
        for n in range(1, 4)
    ]
    path = tmp_path / "day.json"
    path.write_text(json.dumps(items), "utf-8")
    assert localfile.read_day(path) == (date(2026, 8, 21), localfile.read(path)[0])


def test_localfile_2024_file_is_stored_under_its_listing_day(tmp_path: Path) -> None:
    items = [
        shapes.item_2024(f"2403.8000{n}", listed="2024-03-13", published="2024-03-12")
        for n in range(1, 3)
    ]
    path = tmp_path / "day.json"
    path.write_text(json.dumps(items), "utf-8")
    day, result = localfile.read_day(path)
    assert day == date(2024, 3, 13) and len(result.papers) == 2


def test_localfile_json_without_listing_day_asks_for_date(tmp_path: Path) -> None:
    items = [shapes.item_changeover(f"2501.8000{n}", published="2025-01-02") for n in (1, 2)]
    path = tmp_path / "day.json"
    path.write_text(json.dumps(items), "utf-8")
    result, listed = localfile.read(path)
    assert len(result.papers) == 2 and listed is None
    with pytest.raises(SourceError, match=r"cannot tell which day .* pass --date YYYY-MM-DD") as e:
        localfile.read_day(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)
    assert localfile.read_day(path, date(2025, 1, 3))[0] == date(2025, 1, 3)


def test_localfile_explicit_date_wins_over_the_stated_one(tmp_path: Path) -> None:
    path = tmp_path / "day.json"
    path.write_text(json.dumps(sample_items("2026-02-12")), "utf-8")
    assert localfile.read_day(path, date(2026, 2, 20))[0] == date(2026, 2, 20)


def test_localfile_rss_feed_states_its_day_in_pub_date(tmp_path: Path) -> None:
    feed = shapes.rss_feed(
        [("2608.80001", "A title", "An abstract.")], channel_date="Fri, 21 Aug 2026 00:00:00 -0400"
    )
    path = tmp_path / "cs.LG.xml"
    path.write_text(feed, "utf-8")
    day, result = localfile.read_day(path)
    assert day == date(2026, 8, 21) and [p.id for p in result.papers] == ["2608.80001"]


def test_localfile_rss_feed_without_a_channel_date_uses_its_items_dates(tmp_path: Path) -> None:
    feed = shapes.rss_feed([("2608.80001", "A title", "An abstract.")], channel_date=None)
    path = tmp_path / "cs.LG.xml"
    path.write_text(feed, "utf-8")
    assert localfile.read_day(path)[0] == date(2026, 8, 21)


def test_localfile_atom_answer_states_no_day_and_asks_for_date(tmp_path: Path) -> None:
    path = tmp_path / "query.xml"
    path.write_text(shapes.atom_feed([("2608.80001", "A title", "A summary.")]), "utf-8")
    assert localfile.read(path)[1] is None
    with pytest.raises(SourceError, match="pass --date"):
        localfile.read_day(path)


@pytest.mark.parametrize(
    ("fixture", "ids", "day"),
    [("arxiv_atom.xml", ATOM_IDS, None), ("arxiv_rss.xml", RSS_IDS, date(2026, 2, 13))],
)
def test_localfile_detects_feeds_by_content_not_name(
    tmp_path: Path, fixture: str, ids: list[str], day: date | None
) -> None:
    path = tmp_path / "misnamed.json"
    path.write_bytes((FIXTURES / fixture).read_bytes())
    result, listed = localfile.read(path)
    assert [p.id for p in result.papers] == ids
    assert listed == day


def test_localfile_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"cannot read .*nope\.json"):
        localfile.read(tmp_path / "nope.json")


def test_localfile_directory_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot read"):
        localfile.read(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a Hugging Face JSON list, Atom feed or RSS feed"),
        (b"id,title\n2602.05662,x\n", "not a Hugging Face JSON list, Atom feed or RSS feed"),
        (b"[1, 2", "not valid JSON"),
        (b'{"error": "not found"}', "expected a JSON list of papers, got dict"),
        (b"<html></html>", "neither an Atom feed nor an RSS feed"),
    ],
    ids=["empty", "csv", "broken-json", "object", "html"],
)
def test_localfile_unknown_or_broken_content_is_a_source_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "input"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=message) as caught:
        localfile.read(path)
    assert str(path) in str(caught.value)


# -- one paper, two sources --------------------------------------------------------------------


def test_same_paper_from_hugging_face_and_arxiv_is_one_stored_paper(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'papers.db'}")
    try:
        store.upgrade()
        hf = huggingface.parse_items(sample_items("2026-02-12"), "hf").papers
        atom = arxiv.parse_document((FIXTURES / "arxiv_atom.xml").read_bytes(), "atom").papers
        assert by_id(hf)["2510.14177"].upvotes == 1
        store.papers.store_day(date(2026, 2, 12), hf)
        store.papers.store_day(date(2026, 2, 20), atom)

        with store.session() as s:
            rows = s.scalar(
                select(func.count()).select_from(PaperRow).where(PaperRow.id == "2510.14177")
            )
            total = s.scalar(select(func.count()).select_from(PaperRow))
        assert rows == 1
        assert total == len({p.id for p in hf} | {p.id for p in atom}) == 28

        stored = store.papers.by_id(["2510.14177"])["2510.14177"]
        assert stored.upvotes == 1  # arXiv's 0 does not reduce it
        assert stored.comments == 4
        assert stored.categories == ["cs.CV", "cs.LG"]  # what arXiv added is kept
        assert store.papers.listed_days() == [date(2026, 2, 12), date(2026, 2, 20)]
        assert "2510.14177" in [p.id for p in store.papers.day_papers(date(2026, 2, 12))]
        assert [p.id for p in store.papers.day_papers(date(2026, 2, 20))] == ATOM_IDS
    finally:
        store.close()


# -- canonical ids -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2510.14177", "2510.14177"),
        ("2510.14177v2", "2510.14177"),
        ("  2602.05662v12\n", "2602.05662"),
        ("0704.0001", "0704.0001"),  # the four-digit era
        ("http://arxiv.org/abs/2510.14968v1", "2510.14968"),
        ("https://arxiv.org/abs/2602.05662", "2602.05662"),
        ("https://arxiv.org/pdf/2510.14177v2", "2510.14177"),
        ("https://arxiv.org/pdf/2510.14177v2.pdf", "2510.14177"),
        ("https://export.arxiv.org/abs/2510.14177", "2510.14177"),
        ("oai:arXiv.org:2602.05662v1", "2602.05662"),
        ("hep-th/9901001", "hep-th/9901001"),
        ("hep-th/9901001v3", "hep-th/9901001"),
        ("math.AG/0309136", "math.AG/0309136"),
        ("https://arxiv.org/abs/cond-mat/0102536v1", "cond-mat/0102536"),
        ("oai:arXiv.org:hep-th/9901001", "hep-th/9901001"),
        ("arXiv:2602.05662v1", "2602.05662"),
        ("https://arxiv.org/abs/2602.05662v2?context=cs.LG", "2602.05662"),
        ("https://arxiv.org/abs/2602.05662/", "2602.05662"),
        ("https://arxiv.org/abs/2602.05662#related", "2602.05662"),
    ],
)
def test_canonical_id_accepts_arxiv_forms(raw: str, expected: str) -> None:
    assert canonical_id(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "../../etc/passwd",
        "2510.141",  # too few digits
        "2510.141777",  # too many digits
        "25101.4177",
        "2510.14177v",
        "2510.14177 extra",
        "https://arxiv.org/abs/",
        "https://example.org/papers/42",
        "javascript:alert(1)",
        "hep-th/990100",
        "HEP-TH/9901001",
        "<script>2510.14177</script>",
    ],
)
def test_canonical_id_rejects_junk(raw: str) -> None:
    assert canonical_id(raw) is None


# -- out-of-range numbers ----------------------------------------------------------------------


def test_out_of_range_counts_are_clamped_and_the_day_is_stored(database_url: str) -> None:
    huge = shapes.item_2026(
        "2608.80001", listed="2026-08-21", published="2026-08-19", githubStars=2**63
    )
    huge["paper"]["upvotes"] = 10**30
    huge["numComments"] = 10**40
    good = shapes.item_2026("2608.80002", listed="2026-08-21", published="2026-08-19")
    result = huggingface.parse_items([huge, good], "HF 2026-08-21")
    assert result.problems == []
    clamped, kept = result.papers
    assert clamped.upvotes == clamped.comments == clamped.github_stars == COUNT_MAX
    assert kept.upvotes == 5
    store = Store(database_url)
    try:
        store.upgrade()
        store.papers.store_day(date(2026, 8, 21), result.papers)
        stored = store.papers.by_id(["2608.80001", "2608.80002"])
        assert stored["2608.80001"].upvotes == COUNT_MAX
        assert stored["2608.80002"].upvotes == 5
    finally:
        store.close()


@pytest.mark.parametrize("value", [-3, 2.5, "12", True, None, float("inf")])
def test_counts_that_are_not_non_negative_ints_read_as_zero(value: object) -> None:
    item = shapes.item_2026("2608.80001", listed="2026-08-21", published="2026-08-19")
    item["paper"]["upvotes"] = value
    assert huggingface.parse_item(item).upvotes == 0

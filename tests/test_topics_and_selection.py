"""The topic taxonomy, keyword matching and choosing each subscriber's papers."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest

from newsletter.errors import ConfigError
from newsletter.papers import Paper
from newsletter.selection import Interests, Selector, match, rank, select
from newsletter.sources import arxiv, huggingface
from newsletter.states import SkipReason
from newsletter.topics import (
    KEYWORD_LIMIT,
    KEYWORDS_PER_SUBSCRIBER,
    Taxonomy,
    Topic,
    clean_keywords,
    keyword_pattern,
    keywords_match,
    load_taxonomy,
    prepare,
)
from tests.fixtures import shapes

ROOT = Path(__file__).resolve().parent.parent
TOPICS_FILE = ROOT / "config" / "topics.toml"
SAMPLE_DATA = ROOT / "newsletter" / "sample_data"


def paper(
    paper_id: str,
    title: str = "A paper",
    abstract: str = "",
    *,
    upvotes: int = 0,
    comments: int = 0,
    ai_keywords: list[str] | None = None,
) -> Paper:
    return Paper(
        id=paper_id,
        title=title,
        abstract=abstract,
        upvotes=upvotes,
        comments=comments,
        ai_keywords=ai_keywords or [],
    )


def topic(slug: str, *keywords: str, name: str | None = None) -> Topic:
    return Topic(slug=slug, name=name or slug.title(), description="", keywords=keywords)


def matches(keyword: str, text: str) -> bool:
    return keywords_match((keyword,), prepare(text))


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return load_taxonomy(TOPICS_FILE)


@pytest.fixture(scope="module")
def day_12() -> list[Paper]:
    items = json.loads((SAMPLE_DATA / "2026-02-12.json").read_text("utf-8"))
    return huggingface.parse_items(items, "2026-02-12").papers


# -- the bundled taxonomy ----------------------------------------------------------------------


def test_bundled_taxonomy_has_at_least_twelve_topics_with_unique_slugs(taxonomy: Taxonomy) -> None:
    slugs = [t.slug for t in taxonomy.topics]
    assert len(slugs) >= 12
    assert len(set(slugs)) == len(slugs)
    assert set(taxonomy.by_slug) == set(slugs)


def test_bundled_topics_are_complete(taxonomy: Taxonomy) -> None:
    for t in taxonomy.topics:
        assert t.name and len(t.name) <= 32, t.slug
        assert t.description, t.slug
        assert t.keywords and all(k.strip() for k in t.keywords), t.slug
        assert all(re.fullmatch(r"[a-z-]+\.([A-Z]{2}|[a-z-]+)", c) for c in t.arxiv_categories), (
            t.slug
        )


def test_bundled_keywords_are_not_so_generic_that_every_paper_matches(
    taxonomy: Taxonomy, day_12: list[Paper]
) -> None:
    for t in taxonomy.topics:
        matched = [p for p in day_12 if t.matches(p)]
        assert len(matched) < len(day_12), f"{t.slug} matches every paper of the day"


def test_bundled_compilers_topic_finds_the_compiler_papers(
    taxonomy: Taxonomy, day_12: list[Paper]
) -> None:
    compilers = taxonomy.get("compilers")
    matched = {p.id for p in day_12 if compilers.matches(p)}
    assert {"2412.19097", "2302.07302"} <= matched  # "Compiling C to Safe Rust", "... for MLIR"


def test_taxonomy_get_unknown_slug_names_the_known_ones(taxonomy: Taxonomy) -> None:
    with pytest.raises(ConfigError, match=r"unknown topic 'no-such'; known topics: .*compilers"):
        taxonomy.get("no-such")


def test_validate_slugs_trims_and_lowercases(taxonomy: Taxonomy) -> None:
    assert taxonomy.validate_slugs([" Compilers ", "", "reasoning"]) == ["compilers", "reasoning"]
    with pytest.raises(ConfigError):
        taxonomy.validate_slugs(["compilers", "astrology"])


# -- the matching rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "text"),
    [
        ("compiler", "Polyhedral compilers at scale"),
        ("compiler", "Compiler construction"),
        ("compiler", "COMPILER"),
        ("Compiler", "a compiler"),
        ("quantization", "Quantization-Aware Training"),
        ("quantiz", "we quantize weights"),
        ("flow matching", "Rectified flow\n  matching at scale"),
        ("flow matching", "flow\tmatching"),
        ("Flow  Matching", "FLOW MATCHING"),
        ("kv-cache", "a KV-cache eviction policy"),
        ("c++", "Closing the gap with modern C++ code"),
        ("art", "state-of-the-art"),
        ("art", "(art) history"),
        ("quantization", "matching text: the ai keyword is quantization"),
        ("3D", "3d gaussian splatting"),
    ],
)
def test_keyword_matches_at_a_word_start_case_insensitively(keyword: str, text: str) -> None:
    assert matches(keyword, text)


@pytest.mark.parametrize(
    ("keyword", "text"),
    [
        ("art", "a fresh start"),
        ("art", "Smart contracts"),
        ("compiler", "decompiler"),
        ("flow matching", "flowmatching"),
        ("c++", "a C compiler"),
        ("3D", "a 2D map"),
        ("rust", "trust region"),
        ("gan", "organ"),
    ],
)
def test_keyword_does_not_match_inside_a_word(keyword: str, text: str) -> None:
    assert not matches(keyword, text)


@pytest.mark.parametrize(
    ("keyword", "text"),
    [
        ("quantization", "weights are quantized to 4 bits"),
        ("quantization", "we quantize the KV cache"),
        ("quantization", "Quantizing LLMs"),
        ("quantized", "post-training quantization"),
        ("reinforcement learning", "reinforcement-learning from feedback"),
        ("reinforcement-learning", "Reinforcement Learning from feedback"),
        ("reinforcement learning", "reinforced learning"),  # one stem, "reinforc"
        ("flow matching", "flow-matching"),
        ("flow matching", "flows matching images"),
        ("compiler", "compile"),
        ("compiler", "Compiling C to Safe Rust"),
        ("LLM", "serving LLMs"),
        ("diffusion models", "a diffusion model"),
        ("state-of-the-art", "state of the art results"),
        ("kv cache", "KV\u2011cache"),  # a non-breaking hyphen
    ],
)
def test_keyword_matches_other_forms_of_its_words(keyword: str, text: str) -> None:
    assert matches(keyword, text)


@pytest.mark.parametrize(
    ("keyword", "text"),
    [
        ("art", "a fresh start"),
        ("art", "starting over"),
        ("quantization", "quantum chemistry"),
        ("reinforcement learning", "reinforcement of learning"),
    ],
)
def test_word_forms_do_not_reach_other_words(keyword: str, text: str) -> None:
    assert not matches(keyword, text)


def test_a_papers_text_is_prepared_once() -> None:
    text = "A paper on quantized compilers, written for this test only"
    assert prepare(text) is prepare(text)
    assert prepare(text).split("\n") == [
        "a paper on quantized compilers, written for this test only",
        "a paper on quantiz compil, written for this test onli",
    ]


def test_keyword_pattern_is_none_without_real_keywords() -> None:
    assert keyword_pattern(()) is None
    assert keyword_pattern(("", "   ")) is None


def test_keywords_are_literal_text_not_regex() -> None:
    assert not matches("a.c", "abc")
    assert matches("a.c", "a.c is here")
    assert not matches("(x", "x")


def test_topic_matches_title_abstract_or_ai_keywords() -> None:
    compilers = topic("compilers", "compiler")
    assert compilers.matches(paper("2602.00001", title="A Compiler for X"))
    assert compilers.matches(paper("2602.00002", abstract="We build a compiler."))
    assert compilers.matches(paper("2602.00003", ai_keywords=["compiler passes"]))
    assert not compilers.matches(paper("2602.00004", title="Diffusion", abstract="Images."))


def test_phrase_matches_across_a_hard_line_break_in_a_paper() -> None:
    flows = topic("flows", "flow matching")
    wrapped = paper("2602.00001", abstract="We study rectified flow\n  matching for images.")
    assert flows.matches(wrapped)


# -- loading a topics file ---------------------------------------------------------------------


VALID_TOPIC = '[[topic]]\nslug = "ok"\nname = "OK"\nkeywords = ["compiler"]\n'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[[topic]\nslug=", "cannot read topics file"),
        ('[[topic]]\nslug = "Bad Slug"\nkeywords = ["x"]\n', "topic #1 has an invalid slug"),
        ('[[topic]]\nkeywords = ["x"]\n', "topic #1 has an invalid slug ''"),
        ('[[topic]]\nslug = "empty"\nkeywords = []\n', "topic 'empty' has no keywords"),
        ('[[topic]]\nslug = "blank"\nkeywords = ["  "]\n', "topic 'blank' has no keywords"),
        ('[[topic]]\nslug = "str"\nkeywords = "compiler"\n', "keywords and arxiv_categories"),
        (VALID_TOPIC + VALID_TOPIC, "topic slugs must be unique"),
        ('[topic]\nslug = "one"\nkeywords = ["x"]\n', r"\[\[topic\]\] tables"),
        ("topic = [1, 2]\n", r"topic #1 is not a \[\[topic\]\] table"),
    ],
    ids=[
        "bad-toml",
        "bad-slug",
        "no-slug",
        "no-keywords",
        "blank-keywords",
        "keywords-string",
        "duplicate",
        "single-table",
        "not-tables",
    ],
)
def test_invalid_topics_file_is_a_config_error_naming_the_path(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "topics.toml"
    path.write_text(content, "utf-8")
    with pytest.raises(ConfigError, match=message) as caught:
        load_taxonomy(path)
    assert str(path) in str(caught.value)


def test_missing_topics_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="cannot read topics file") as caught:
        load_taxonomy(path)
    assert str(path) in str(caught.value)


def test_minimal_topics_file_loads_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "topics.toml"
    path.write_text('[[topic]]\nslug = "c-1"\nkeywords = ["compiler", 3]\n', "utf-8")
    (loaded,) = load_taxonomy(path).topics
    assert loaded == Topic(slug="c-1", name="c-1", description="", keywords=("compiler", "3"))


# -- subscriber keywords -----------------------------------------------------------------------


def test_clean_keywords_trims_and_deduplicates_keeping_the_typed_case() -> None:
    assert clean_keywords(["  Flow   Matching ", "flow matching", "RUST", "Rust\n", "3D"]) == [
        "Flow Matching",
        "RUST",
        "3D",
    ]


def test_a_keyword_is_shown_as_typed_and_matched_ignoring_case() -> None:
    (keyword,) = clean_keywords(["3D"])
    found = paper("2602.00001", "Fast 3d Gaussian splatting")
    assert match(found, Interests(keywords=(keyword,)), SMALL) == ("3D",)


def test_clean_keywords_drops_blank_and_punctuation_only_words() -> None:
    assert clean_keywords(["", "   ", "---", "*", "c++"]) == ["c++"]


def test_clean_keywords_bounds_length_and_count() -> None:
    long_word = "x" * (KEYWORD_LIMIT + 50)
    assert clean_keywords([long_word]) == ["x" * KEYWORD_LIMIT]
    many = [f"word{n}" for n in range(KEYWORDS_PER_SUBSCRIBER + 10)]
    assert clean_keywords(many) == many[:KEYWORDS_PER_SUBSCRIBER]


# -- ranking and selection ---------------------------------------------------------------------


COMPILERS = topic("compilers", "compiler", "mlir", name="Compilers")
DIFFUSION = topic("diffusion", "diffusion", name="Diffusion")
SMALL = Taxonomy((COMPILERS, DIFFUSION))


def test_rank_orders_by_upvotes_then_comments_then_keeps_the_list_order() -> None:
    papers = [
        paper("2602.00003", upvotes=5, comments=1),
        paper("2602.00001", upvotes=9, comments=0),
        paper("2602.00004", upvotes=5, comments=7),
        paper("2602.00002", upvotes=5, comments=1),
    ]
    assert [p.id for p in rank(papers)] == ["2602.00001", "2602.00004", "2602.00003", "2602.00002"]


def test_rank_of_an_arxiv_rss_day_is_the_announcement_order() -> None:
    feed = shapes.rss_feed(
        [(f"2608.8000{n}", f"Paper {n}", "An abstract.") for n in (5, 1, 9, 3)],
        channel_date="Fri, 21 Aug 2026 00:00:00 -0400",
    )
    papers = arxiv.parse_document(feed, "rss").papers
    assert all(p.upvotes == 0 for p in papers)
    assert [p.id for p in rank(papers)] == ["2608.80005", "2608.80001", "2608.80009", "2608.80003"]


def test_rank_without_votes_puts_the_most_recently_published_first() -> None:
    older = Paper(id="2608.80001", title="t", abstract="", published_on=date(2026, 8, 1))
    newer = Paper(id="2608.80002", title="t", abstract="", published_on=date(2026, 8, 19))
    undated = Paper(id="2608.80003", title="t", abstract="")
    assert [p.id for p in rank([undated, older, newer])] == [newer.id, older.id, undated.id]


def test_arxiv_only_selection_puts_papers_matching_more_interests_first() -> None:
    ranked = rank(
        [
            paper("2608.80001", "Diffusion models for images"),
            paper("2608.80002", "An MLIR compiler"),
            paper("2608.80003", "A compiler for diffusion models"),
            paper("2608.80004", "Diffusion policies"),
        ]
    )
    interests = Interests(topics=("compilers", "diffusion"))
    selection = select(ranked, interests, SMALL, set(), cap=3)
    assert selection.paper_ids == ["2608.80003", "2608.80001", "2608.80002"]


def test_votes_still_come_before_the_number_of_matched_interests() -> None:
    ranked = rank(
        [
            paper("2608.80001", "A compiler for diffusion models", upvotes=1),
            paper("2608.80002", "An MLIR compiler", upvotes=30),
        ]
    )
    interests = Interests(topics=("compilers", "diffusion"))
    assert select(ranked, interests, SMALL, set(), cap=3).paper_ids == ["2608.80002", "2608.80001"]


def test_rank_of_a_sample_day_is_by_upvotes(day_12: list[Paper]) -> None:
    ranked = rank(list(reversed(day_12)))
    assert ranked[0].id == "2410.10153"  # 60 upvotes, the day's top paper
    assert [p.upvotes for p in ranked] == sorted((p.upvotes for p in day_12), reverse=True)


def test_no_interests_means_the_days_top_papers_up_to_the_cap(day_12: list[Paper]) -> None:
    ranked = rank(day_12)
    selection = select(ranked, Interests(), SMALL, already_sent=set(), cap=5)
    assert selection.paper_ids == [p.id for p in ranked[:5]]
    assert selection.skip_reason is None
    assert all(pick.matched == () for pick in selection.picks)


def test_selection_is_capped() -> None:
    ranked = rank([paper(f"2602.0000{n}", "compiler", upvotes=n) for n in range(1, 8)])
    selection = select(ranked, Interests(topics=("compilers",)), SMALL, set(), cap=3)
    assert selection.paper_ids == ["2602.00007", "2602.00006", "2602.00005"]


def test_selection_leaves_out_what_was_already_sent_and_fills_up_from_below() -> None:
    ranked = rank([paper(f"2602.0000{n}", "compiler", upvotes=n) for n in range(1, 6)])
    sent = {"2602.00005", "2602.00003"}
    selection = select(ranked, Interests(topics=("compilers",)), SMALL, sent, cap=2)
    assert selection.paper_ids == ["2602.00004", "2602.00002"]


def test_selection_keeps_only_papers_matching_the_interests() -> None:
    ranked = rank(
        [
            paper("2602.00001", "Diffusion models", upvotes=50),
            paper("2602.00002", "An MLIR compiler", upvotes=10),
            paper("2602.00003", "Graph networks", upvotes=40),
        ]
    )
    selection = select(ranked, Interests(topics=("compilers",)), SMALL, set(), cap=10)
    assert selection.paper_ids == ["2602.00002"]


def test_no_matching_paper_is_skipped_as_no_match() -> None:
    ranked = [paper("2602.00001", "Diffusion models", upvotes=50)]
    selection = select(ranked, Interests(topics=("compilers",)), SMALL, set(), cap=10)
    assert selection.picks == ()
    assert selection.skip_reason is SkipReason.NO_MATCH


def test_matches_that_were_all_sent_before_are_skipped_as_nothing_new() -> None:
    ranked = [paper("2602.00001", "A compiler", upvotes=50), paper("2602.00002", "Diffusion")]
    selection = select(ranked, Interests(topics=("compilers",)), SMALL, {"2602.00001"}, cap=10)
    assert selection.picks == ()
    assert selection.skip_reason is SkipReason.NOTHING_NEW


def test_everything_subscriber_who_got_everything_is_nothing_new() -> None:
    ranked = [paper("2602.00001"), paper("2602.00002")]
    selection = select(ranked, Interests(), SMALL, {"2602.00001", "2602.00002"}, cap=10)
    assert selection.skip_reason is SkipReason.NOTHING_NEW


def test_labels_list_matched_topic_names_then_keywords() -> None:
    both = paper("2602.00001", "A compiler for diffusion models", "Rust and MLIR.")
    interests = Interests(topics=("compilers", "diffusion"), keywords=("rust", "quantum"))
    assert match(both, interests, SMALL) == ("Compilers", "Diffusion", "rust")
    selection = select([both], interests, SMALL, set(), cap=10)
    assert selection.picks[0].matched == ("Compilers", "Diffusion", "rust")


def test_keywords_alone_select_papers() -> None:
    ranked = [paper("2602.00001", "Rust for kernels"), paper("2602.00002", "Trust regions")]
    selection = select(ranked, Interests(keywords=("rust",)), SMALL, set(), cap=10)
    assert selection.paper_ids == ["2602.00001"]
    assert selection.picks[0].matched == ("rust",)


def test_unknown_topic_slug_matches_nothing_instead_of_failing() -> None:
    ranked = [paper("2602.00001", "A compiler")]
    selection = select(ranked, Interests(topics=("retired-topic",)), SMALL, set(), cap=10)
    assert selection.skip_reason is SkipReason.NO_MATCH


def test_selection_over_a_real_day_respects_rank_match_cap_and_sent(
    taxonomy: Taxonomy, day_12: list[Paper]
) -> None:
    ranked = rank(day_12)
    interests = Interests(topics=("compilers", "hardware-architecture"))
    matching = [p.id for p in ranked if match(p, interests, taxonomy)]
    assert len(matching) >= 5
    sent = {matching[0], matching[2]}
    selection = select(ranked, interests, taxonomy, sent, cap=3)
    assert selection.paper_ids == [i for i in matching if i not in sent][:3]
    for pick in selection.picks:
        assert pick.matched
        assert set(pick.matched) <= {
            taxonomy.get("compilers").name,
            taxonomy.get("hardware-architecture").name,
        }


def test_selector_gives_what_select_gives_for_every_interest_and_history(
    taxonomy: Taxonomy, day_12: list[Paper]
) -> None:
    ranked = rank(day_12)
    ids = [p.id for p in ranked]
    interests = [
        Interests(),
        Interests(("llm-inference",)),
        Interests(("vision-multimodal", "agents")),
        Interests((), ("benchmark",)),
        Interests(("reasoning",), ("video",)),
        Interests((), ("no-such-word-anywhere",)),
    ]
    histories = [set(), {ids[0]}, set(ids[:5]), set(ids), {"2401.00001"}]
    # A tiny memo, so entries are evicted and recomputed along the way.
    selector = Selector(ranked, taxonomy, cap=4, limit=3)
    outcomes = set()
    for _ in range(2):
        for wanted in interests:
            for sent in histories:
                chosen = selector(wanted, sent)
                assert chosen == select(ranked, wanted, taxonomy, sent, 4)
                outcomes.add(chosen.skip_reason if chosen.skip_reason else len(chosen.picks))
    # The cases above reach every kind of answer, so the comparison means something.
    assert {SkipReason.NO_MATCH, SkipReason.NOTHING_NEW, 4} <= outcomes


def test_selector_ignores_sent_papers_that_are_not_in_its_list(
    taxonomy: Taxonomy, day_12: list[Paper]
) -> None:
    ranked = rank(day_12)
    selector = Selector(ranked, taxonomy, cap=10)
    first = selector(Interests(), {"2401.00001"})
    # Same case, so the same (shared, immutable) selection comes back from the memo.
    assert selector(Interests(), {"2401.00002", "2401.00003"}) is first
    assert first == select(ranked, Interests(), taxonomy, set(), 10)

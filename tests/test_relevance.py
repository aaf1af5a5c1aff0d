"""Relevance with the real model: vectors, hash checks, BM25, threshold, feedback, exclusions."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from newsletter.papers import Paper
from newsletter.profiles import words_key
from newsletter.relevance.embedding import (
    DIMENSION,
    MODEL_ID,
    MiniLM,
    ModelError,
    default_embedder,
    default_model_path,
)
from newsletter.relevance.lexical import Bm25, query_terms, terms
from newsletter.relevance.profile import Signal, Words, build_profile, rocchio, with_feedback
from newsletter.relevance.scoring import Day, Reader, select, select_many
from newsletter.selection import Interests
from newsletter.sources import localfile
from newsletter.states import SkipReason
from newsletter.topics import Taxonomy, load_taxonomy

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 2, 13, 12)


@pytest.fixture(scope="module")
def model() -> MiniLM:
    return default_embedder()


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return load_taxonomy(ROOT / "config" / "topics.toml")


@pytest.fixture(scope="module")
def papers() -> list[Paper]:
    return localfile.read(ROOT / "newsletter" / "sample_data" / "2026-02-12.json")[0].papers


@pytest.fixture(scope="module")
def day(model: MiniLM, papers: list[Paper]) -> Day:
    return Day.prepare(papers, model.embed_papers(papers))


def by_title(papers: list[Paper] | tuple[Paper, ...], start: str) -> Paper:
    return next(p for p in papers if p.title.startswith(start))


def test_vectors_are_unit_float32_rows_independent_of_batching(model: MiniLM) -> None:
    texts = ["kv cache quantization", "", "rectified flow for image editing " * 80, "compilers"]
    vectors = model.embed(texts)
    assert vectors.shape == (4, DIMENSION) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one_by_one = np.vstack([MiniLM(batch_size=1).embed([t]) for t in texts])
    assert np.allclose(vectors, one_by_one, atol=1e-5)
    assert np.array_equal(vectors, model.embed(texts))
    assert model.embed([]).shape == (0, DIMENSION)


def test_vectors_carry_meaning(model: MiniLM) -> None:
    a, b, c = model.embed(
        [
            "speeding up large language model serving with a smaller key-value cache",
            "KV cache compression for faster LLM inference",
            "protein backbone generation with flow models",
        ]
    )
    assert a @ b > a @ c + 0.2


def test_model_id_names_model_and_tokenizer(model: MiniLM) -> None:
    assert model.model_id == MODEL_ID
    assert "minilm" in MODEL_ID and MODEL_ID.count(":") >= 3


def test_a_corrupt_model_file_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    corrupt = tmp_path / "model.onnx"
    shutil.copyfile(default_model_path(), corrupt)
    with corrupt.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00" * 16)
    with pytest.raises(ModelError, match=r"has SHA-256 .* expected 8199be6f.*corrupt"):
        MiniLM(model_path=corrupt).embed(["anything"])
    with pytest.raises(ModelError, match="cannot read"):
        MiniLM(model_path=tmp_path / "missing.onnx").embed(["anything"])


def test_a_changed_tokenizer_is_refused(tmp_path: Path) -> None:
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text("{}")
    with pytest.raises(ModelError, match=r"tokenizer .* has SHA-256"):
        MiniLM(tokenizer_path=tokenizer).embed(["anything"])


def test_terms_are_lowercased_stemmed_without_stop_words() -> None:
    assert terms("The Compilers of quantized Models") == ["compil", "quantiz", "model"]
    assert query_terms("compiler compilers, Compiling") == ("compil",)


def test_bm25_ranks_the_paper_that_uses_the_words(papers: list[Paper]) -> None:
    index = Bm25.of_papers(papers)
    scores = index.scores(query_terms("rectified flow image editing"))
    best = papers[int(np.argmax(scores))]
    assert "Flow" in best.title and ("Editing" in best.title or "Image" in best.title)
    straggler = index.scores(query_terms("straggler mitigation gradient coding"))
    assert papers[int(np.argmax(straggler))].title.startswith("Sequential Gradient Coding")
    assert not index.scores(query_terms("zebra giraffe")).any()
    many = index.scores_many([query_terms("rectified flow"), (), query_terms("straggler")])
    assert np.allclose(many[0], index.scores(query_terms("rectified flow")))
    assert not many[1].any()


def test_bm25_of_many_queries_is_each_query_alone(papers: list[Paper]) -> None:
    index = Bm25.of_papers(papers)
    queries = [
        query_terms("rectified flow image editing"),
        (),
        ("zebra",),
        ("flow", "flow", "edit"),  # a repeated term counts once, as in `scores`
        query_terms("straggler mitigation gradient coding"),
    ]
    many = index.scores_many(queries)
    assert many.shape == (len(queries), len(papers)) and many.dtype == np.float32
    for row, query in zip(many, queries, strict=True):
        assert np.allclose(row, index.scores(query), atol=1e-6)
    assert index.scores_many([]).shape == (0, len(papers))


def test_words_key_is_the_stored_format() -> None:
    # Profiles are stored with this key: a different format would recompute every one.
    for words in [
        Words(),
        Words('I study "robot" learning\n\u2014 VLA \u2192 \U0001f916', ("robotics",), ("vla",)),
        Words("", ("a", "b\\c"), ("\x00", "caf\u00e9")),
    ]:
        data = json.dumps([words.about, list(words.topics), list(words.keywords)])
        assert words_key(words) == hashlib.sha256(data.encode()).hexdigest()


def test_a_reworded_interest_finds_its_papers(model: MiniLM, day: Day, taxonomy: Taxonomy) -> None:
    words = Words(
        "Keeping big training jobs alive and fast on cheap, unreliable machines: slow workers"
        " and nodes that disappear."
    )
    profile = build_profile(model, words, taxonomy, now=NOW)
    assert profile is not None
    choices = select(day, Reader(profile), taxonomy, cap=2)
    titles = sorted(c.paper.title[:16] for c in choices.picks)
    assert titles == ["All is Not Lost:", "Sequential Gradi"]  # neither says "slow" nor "cheap"
    assert [c.reason for c in choices.picks] == [
        "close to your interest in \u201cslow workers and nodes that disappear\u201d",
        "close to your interest in \u201cunreliable machines\u201d",
    ]


def test_nothing_relevant_yields_nothing_with_its_own_reason(
    model: MiniLM, day: Day, taxonomy: Taxonomy
) -> None:
    words = Words("Bird migration and the ecology of wetlands.")
    profile = build_profile(model, words, taxonomy, now=NOW)
    assert profile is not None
    choices = select(day, Reader(profile), taxonomy, cap=5)
    assert choices.picks == () and choices.skip_reason is SkipReason.NOTHING_RELEVANT
    # The same reader with no threshold gets the day's closest papers: the threshold did it.
    assert select(day, Reader(profile), taxonomy, cap=5, threshold=-1.0).picks


def test_literal_matches_still_select_and_say_so(
    model: MiniLM, day: Day, taxonomy: Taxonomy
) -> None:
    profile = build_profile(model, Words("Bird migration."), taxonomy, now=NOW)
    assert profile is not None
    reader = Reader(profile, Interests(keywords=("straggler",)))
    choices = select(day, reader, taxonomy, cap=5)
    assert [c.reason for c in choices.picks] == ["matches straggler"]


def test_already_sent_papers_are_left_out(model: MiniLM, day: Day, taxonomy: Taxonomy) -> None:
    profile = build_profile(model, Words("rectified flow models"), taxonomy, now=NOW)
    assert profile is not None
    first = select(day, Reader(profile), taxonomy, cap=2)
    again = select(day, Reader(profile, already_sent=first.paper_ids), taxonomy, cap=2)
    assert first.picks and not set(first.paper_ids) & set(again.paper_ids)
    everything = [p.id for p in day.papers]
    done = select(day, Reader(profile, already_sent=everything), taxonomy, cap=2)
    assert done.skip_reason is SkipReason.NOTHING_NEW


def test_exclude_words_are_honoured(model: MiniLM, day: Day, taxonomy: Taxonomy) -> None:
    profile = build_profile(model, Words("rectified flow and diffusion models"), taxonomy, now=NOW)
    assert profile is not None
    plain = select(day, Reader(profile), taxonomy, cap=10)
    assert sum("editing" in c.paper.abstract.lower() for c in plain.picks) >= 2
    excluded = select(day, Reader(profile, exclude=("editing",)), taxonomy, cap=10)
    assert excluded.picks and len(excluded.picks) < len(plain.picks)
    for choice in excluded.picks:
        assert "editing" not in f"{choice.paper.title} {choice.paper.abstract}".lower()


def test_rocchio_moves_the_profile_towards_likes_and_away_from_dislikes(
    model: MiniLM, day: Day, taxonomy: Taxonomy
) -> None:
    profile = build_profile(model, Words("efficient deep learning"), taxonomy, now=NOW)
    assert profile is not None
    liked = by_title(day.papers, "Steering Rectified Flow")
    disliked = by_title(day.papers, "Sequential Gradient Coding")
    vector = {p.id: day.vectors[day.index[p.id]] for p in (liked, disliked)}
    signals = [
        Signal(liked.id, True, NOW, vector[liked.id]),
        Signal(disliked.id, False, NOW, vector[disliked.id]),
    ]
    moved = with_feedback(profile, signals, NOW)
    assert np.isclose(np.linalg.norm(moved.vector), 1.0, atol=1e-5)
    assert moved.vector @ vector[liked.id] > profile.vector @ vector[liked.id] + 0.05
    assert moved.vector @ vector[disliked.id] < profile.vector @ vector[disliked.id]
    assert np.array_equal(moved.anchor, profile.anchor)
    # Old signals fade: the same like given a year ago moves the profile much less.
    old = rocchio(
        profile.anchor, [Signal(liked.id, True, NOW - timedelta(365), vector[liked.id])], NOW
    )
    assert (
        profile.vector @ vector[liked.id] < old @ vector[liked.id] < moved.vector @ vector[liked.id]
    )


def test_keyword_only_readers_get_a_profile_that_feedback_moves(
    model: MiniLM, day: Day, taxonomy: Taxonomy
) -> None:
    words = Words(topics=("distributed-training",), keywords=("straggler",))
    profile = build_profile(model, words, taxonomy, now=NOW)
    assert profile is not None
    assert profile.parts == ("Distributed training & HPC", "straggler")
    assert "straggler" in profile.terms
    liked = by_title(day.papers, "All is Not Lost")
    signal = Signal(liked.id, True, NOW, day.vectors[day.index[liked.id]])
    moved = with_feedback(profile, [signal], NOW)
    assert moved.vector @ signal.vector > profile.vector @ signal.vector
    assert build_profile(model, Words(), taxonomy) is None


def test_many_readers_in_batches_match_one_at_a_time(
    model: MiniLM, day: Day, taxonomy: Taxonomy
) -> None:
    abouts = ["rectified flow", "compilers and MLIR", "Bird migration.", "code LLM agents"]
    profiles = [build_profile(model, Words(a), taxonomy, now=NOW) for a in abouts]
    readers = [Reader(p) for p in profiles if p is not None] * 3
    together = list(select_many(day, readers, taxonomy, cap=4, batch_size=5))
    alone = [select(day, r, taxonomy, cap=4) for r in readers]
    assert [c.paper_ids for c in together] == [c.paper_ids for c in alone]
    assert [c.skip_reason for c in together] == [c.skip_reason for c in alone]


def test_a_days_literal_matches_are_its_own_not_a_copys(day: Day, taxonomy: Taxonomy) -> None:
    """The memo of literal matches lives with the day: a day copied with other papers (in
    another order) must not answer from the original's memo."""
    import dataclasses

    interests = Interests((), ("agent",))
    mask, _ = day.memo(taxonomy).matches(interests)
    assert mask.any() and not mask.all()
    reversed_day = dataclasses.replace(
        day,
        papers=day.papers[::-1],
        vectors=day.vectors[::-1],
        texts=day.texts[::-1],
        index={p.id: i for i, p in enumerate(day.papers[::-1])},
    )
    reversed_mask, _ = reversed_day.memo(taxonomy).matches(interests)
    assert list(reversed_mask) == list(mask[::-1])
    assert day.memo(taxonomy) is day.memo(taxonomy)  # kept across a plan's batches

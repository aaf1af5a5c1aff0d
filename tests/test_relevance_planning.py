"""Relevance through the real planner and store (SQLite and PostgreSQL) with the real model:
papers embedded once when fetched, profiles stored and recomputed only when their inputs change,
readers with their own words chosen by meaning with the reason kept, keyword readers untouched."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import numpy as np
import pytest
from sqlalchemy import func, select

from newsletter.relevance.embedding import MODEL_ID
from newsletter.relevance.state import ReaderWords
from newsletter.root import Newsletter
from newsletter.states import DeliveryStatus, SkipReason
from newsletter.store.schema import PaperVectorRow, ReaderProfileRow
from tests.conftest import SAMPLE_DATA

DAY = date(2026, 2, 12)
CLUSTERS = (
    "Keeping big training jobs alive and fast on cheap, unreliable machines: slow workers"
    " and nodes that disappear."
)


@pytest.fixture
def app(make_newsletter: Callable[..., Newsletter], database_url: str) -> Newsletter:
    newsletter = make_newsletter(database_url=database_url)
    newsletter.fetch(DAY, source=str(SAMPLE_DATA / f"{DAY}.json"))
    return newsletter


def count(app: Newsletter, table: type[PaperVectorRow] | type[ReaderProfileRow]) -> int:
    with app.store.session() as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)


def add(
    app: Newsletter, email: str, about: str = "", exclude: tuple[str, ...] = (), **kw: object
) -> int:
    record = app.subscriptions.add(email, kw.get("topics", ()), kw.get("keywords", ()))  # type: ignore[arg-type]
    if about or exclude:
        app.store.relevance.set_words(record.id, ReaderWords(about, exclude))
    return record.id


def test_fetch_embeds_each_paper_once_with_the_model_id(app: Newsletter) -> None:
    papers = app.store.papers.day_papers(DAY)
    assert count(app, PaperVectorRow) == len(papers)
    vectors = app.store.relevance.paper_vectors([p.id for p in papers], MODEL_ID)
    assert set(vectors) == {p.id for p in papers}
    for vector in vectors.values():
        assert vector.dtype == np.float32 and vector.shape == (384,)
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4
    # Another model's vectors are not handed out: they would be compared with ours.
    assert app.store.relevance.paper_vectors([papers[0].id], "another-model") == {}


def test_readers_words_choose_by_meaning_and_the_reasons_are_kept(app: Newsletter) -> None:
    reader = add(app, "ada@example.org", CLUSTERS)
    keyword = add(app, "kay@example.org", keywords=("straggler",))
    report = app.plan(DAY)
    assert report.queued == 2
    planned = app.store.outbox.delivery_for(reader, DAY)
    assert planned is not None and planned.paper_ids
    titles = [p.title[:16] for p in app.store.papers.by_id(planned.paper_ids).values()]
    assert "All is Not Lost:" in titles and "Sequential Gradi" in titles
    reasons = app.store.relevance.reasons(reader, DAY)
    assert reasons is not None and len(reasons) == len(planned.paper_ids)
    assert all(r.startswith("close to your interest in \u201c") for r in reasons)
    # The keyword reader is chosen for as before, and carries no reasons row.
    kw_planned = app.store.outbox.delivery_for(keyword, DAY)
    ranked = app.planner.day_papers(DAY)
    sub = app.store.subscribers.by_id(keyword)
    assert sub is not None and kw_planned is not None
    assert kw_planned.paper_ids == app.planner.selection_for(sub, ranked, set()).paper_ids
    assert app.store.relevance.reasons(keyword, DAY) is None


def test_a_day_with_nothing_relevant_is_skipped_with_its_own_reason(app: Newsletter) -> None:
    reader = add(app, "bird@example.org", "Bird migration and the ecology of wetlands.")
    report = app.plan(DAY)
    assert report.skipped == {SkipReason.NOTHING_RELEVANT: 1}
    planned = app.store.outbox.delivery_for(reader, DAY)
    assert planned is not None and planned.status == DeliveryStatus.SKIPPED


def test_profiles_are_stored_and_recomputed_only_when_words_change(app: Newsletter) -> None:
    reader = add(app, "ada@example.org", CLUSTERS)
    app.plan(DAY, dry_run=True)
    stored = app.store.relevance.profiles([reader], MODEL_ID)[reader]
    assert stored.profile is not None and stored.current
    first = stored.profile.vector
    # Planning again reuses it (same words key, same bytes).
    app.plan(DAY, dry_run=True)
    again = app.store.relevance.profiles([reader], MODEL_ID)[reader]
    assert again.words_key == stored.words_key
    assert again.profile is not None and np.array_equal(again.profile.vector, first)
    app.store.relevance.set_words(reader, ReaderWords("Bird migration and wetlands."))
    app.plan(DAY, dry_run=True)
    changed = app.store.relevance.profiles([reader], MODEL_ID)[reader]
    assert changed.words_key != stored.words_key
    assert changed.profile is not None and not np.allclose(changed.profile.vector, first)


def test_feedback_moves_the_profile_and_keyword_readers_get_one(app: Newsletter) -> None:
    reader = add(app, "kay@example.org", keywords=("straggler",))
    ranked = app.planner.day_papers(DAY)
    liked = next(p for p in ranked if "diffusion" in p.abstract.lower())
    app.store.relevance.record_feedback(reader, liked.id, liked=True)
    app.store.relevance.record_feedback(reader, liked.id, liked=False)
    app.store.relevance.record_feedback(reader, liked.id, liked=True)  # the last one wins
    assert [(f.paper_id, f.liked) for f in app.store.relevance.feedback(reader)] == [
        (liked.id, True)
    ]
    app.plan(DAY)
    stored = app.store.relevance.profiles([reader], MODEL_ID)[reader]
    assert stored.profile is not None and stored.current and stored.feedback_count == 1
    vectors = app.store.relevance.paper_vectors([liked.id], MODEL_ID)
    closer = float(stored.profile.vector @ vectors[liked.id])
    assert closer > float(stored.profile.anchor @ vectors[liked.id])
    planned = app.store.outbox.delivery_for(reader, DAY)
    reasons = app.store.relevance.reasons(reader, DAY)
    assert planned is not None and reasons is not None
    assert any(r == "matches straggler" for r in reasons)


def test_exclude_words_hold_for_readers_with_and_without_their_own_words(
    app: Newsletter,
) -> None:
    top = add(app, "top@example.org", exclude=("diffusion",))
    own = add(app, "own@example.org", "rectified flow and diffusion models", exclude=("editing",))
    app.plan(DAY)
    for sub_id, word in ((top, "diffusion"), (own, "editing")):
        planned = app.store.outbox.delivery_for(sub_id, DAY)
        assert planned is not None and planned.paper_ids
        for paper in app.store.papers.by_id(planned.paper_ids).values():
            assert word not in f"{paper.title} {paper.abstract}".lower()
    planned_top = app.store.outbox.delivery_for(top, DAY)
    assert planned_top is not None and len(planned_top.paper_ids) == app.settings.max_papers


def test_deleting_a_subscriber_removes_their_words_and_profile(app: Newsletter) -> None:
    add(app, "ada@example.org", CLUSTERS)
    app.plan(DAY)
    assert count(app, ReaderProfileRow) == 1
    app.subscriptions.remove("ada@example.org")
    assert count(app, ReaderProfileRow) == 0

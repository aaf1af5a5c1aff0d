"""Relevance: papers' vectors, readers' own words and profiles, feedback, and why each paper of
a profile reader's digest is there.

Vectors are stored as little-endian float32 bytes with the id of the model that made them; a
caller asking for another model's vectors gets none, so they are recomputed, never compared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from newsletter.clock import utcnow
from newsletter.relevance.embedding import Vectors
from newsletter.relevance.profile import Profile
from newsletter.relevance.state import FeedbackRecord, ReaderWords, StoredProfile
from newsletter.store.backend import Backend
from newsletter.store.rows import json_text, strings
from newsletter.store.schema import (
    DeliveryReasonsRow,
    DeliveryRow,
    FeedbackRow,
    PaperVectorRow,
    ReaderProfileRow,
)

_FLOAT32 = np.dtype("<f4")
# Between one paper's reason and the next: a control character, which reasons never hold
# (they are made of the reader's cleaned words and topic names).
SEPARATOR = "\x1f"


def to_bytes(vectors: Vectors) -> bytes:
    return np.ascontiguousarray(vectors, dtype=_FLOAT32).tobytes()


def from_bytes(data: bytes, rows: int | None = None) -> Vectors:
    """A read-only view of the stored bytes, not a copy: planning decodes three vectors per
    reader, and nothing writes into a stored vector (a profile that moves is a new array)."""
    flat: Vectors = np.frombuffer(data, dtype=_FLOAT32)
    return flat if rows is None else flat.reshape(rows, -1)


class Relevance:
    def __init__(self, db: Backend) -> None:
        self._db = db

    # -- papers -----------------------------------------------------------------------------

    def paper_vectors(self, paper_ids: Iterable[str], model_id: str) -> dict[str, Vectors]:
        """The stored vectors of `paper_ids` made by `model_id` (others are left out)."""
        ids = list(dict.fromkeys(paper_ids))
        if not ids:
            return {}
        with self._db.connection() as c:
            rows = c.execute(
                select(PaperVectorRow.paper_id, PaperVectorRow.vector).where(
                    PaperVectorRow.paper_id.in_(ids), PaperVectorRow.model_id == model_id
                )
            )
            return {paper_id: from_bytes(data) for paper_id, data in rows}

    def save_paper_vectors(self, model_id: str, vectors: Mapping[str, Vectors]) -> None:
        if not vectors:
            return
        insert = self._db.insert(PaperVectorRow)
        statement = insert.on_conflict_do_update(
            index_elements=["paper_id"],
            set_={"model_id": insert.excluded.model_id, "vector": insert.excluded.vector},
        )
        with self._db.session() as s:
            s.execute(
                statement,
                [
                    {"paper_id": i, "model_id": model_id, "vector": to_bytes(v)}
                    for i, v in vectors.items()
                ],
            )

    # -- readers' words ---------------------------------------------------------------------

    def set_words(self, subscriber_id: int, words: ReaderWords) -> None:
        """Keep what the reader wrote; their profile is recomputed when next needed."""
        insert = self._db.insert(ReaderProfileRow)
        values = {"about": words.about, "exclude": list(words.exclude), "updated_at": utcnow()}
        statement = insert.values(
            subscriber_id=subscriber_id, feedback_count=0, terms=[], parts=[], **values
        ).on_conflict_do_update(index_elements=["subscriber_id"], set_=values)
        with self._db.session() as s:
            s.execute(statement)

    def words(self, subscriber_ids: Iterable[int]) -> dict[int, ReaderWords]:
        """What each of the subscribers wrote (those who wrote nothing are left out)."""
        ids = list(subscriber_ids)
        if not ids:
            return {}
        with self._db.connection() as c:
            rows = c.execute(
                select(
                    ReaderProfileRow.subscriber_id,
                    ReaderProfileRow.about,
                    ReaderProfileRow.exclude,
                ).where(ReaderProfileRow.subscriber_id.in_(ids))
            )
            return {
                sub_id: ReaderWords(about or "", tuple(exclude or ()))
                for sub_id, about, exclude in rows
                if about or exclude
            }

    # -- profiles ---------------------------------------------------------------------------

    def profiles(self, subscriber_ids: Iterable[int], model_id: str) -> dict[int, StoredProfile]:
        """The stored state of each subscriber that has any (one query for a batch)."""
        ids = list(subscriber_ids)
        if not ids:
            return {}
        found: dict[int, StoredProfile] = {}
        # Plain rows of the columns needed, a batch at a time: planning reads thousands, and
        # ORM objects cost more to build than the query takes to run.
        t = ReaderProfileRow
        query = select(
            t.subscriber_id,
            t.about,
            json_text(t.exclude),
            t.feedback_count,
            t.words_key,
            t.model_id,
            t.vector,
            t.anchor,
            json_text(t.terms),
            json_text(t.parts),
            t.part_vectors,
        ).where(t.subscriber_id.in_(ids))
        with self._db.connection() as c:
            rows = c.execute(query).all()
        for sub_id, about, exclude, count, key, model, vector, anchor, terms, parts, pvs in rows:
            profile = None
            if model == model_id and anchor is not None:
                anchor_vector = from_bytes(anchor)
                names = strings(parts)
                profile = Profile(
                    model_id=model,
                    vector=anchor_vector if vector is None else from_bytes(vector),
                    anchor=anchor_vector,
                    terms=strings(terms),
                    parts=names,
                    part_vectors=from_bytes(pvs or b"").reshape(len(names), len(anchor_vector)),
                )
            found[sub_id] = StoredProfile(
                subscriber_id=sub_id,
                words=ReaderWords(about or "", strings(exclude)),
                feedback_count=count or 0,
                words_key=key,
                profile=profile,
                current=profile is not None and vector is not None,
            )
        return found

    def save_profile(self, subscriber_id: int, words_key: str, profile: Profile) -> None:
        values = {
            "words_key": words_key,
            "model_id": profile.model_id,
            "vector": to_bytes(profile.vector),
            "anchor": to_bytes(profile.anchor),
            "terms": list(profile.terms),
            "parts": list(profile.parts),
            "part_vectors": to_bytes(profile.part_vectors),
            "updated_at": utcnow(),
        }
        insert = self._db.insert(ReaderProfileRow)
        statement = insert.values(
            subscriber_id=subscriber_id, about="", exclude=[], feedback_count=0, **values
        ).on_conflict_do_update(index_elements=["subscriber_id"], set_=values)
        with self._db.session() as s:
            s.execute(statement)

    # -- feedback ---------------------------------------------------------------------------

    def record_feedback(self, subscriber_id: int, paper_id: str, liked: bool) -> None:
        """ "More like this" (liked) or "less like this": replaces any earlier signal on the
        paper, and marks the profile for recomputing."""
        now = utcnow()
        insert = self._db.insert(FeedbackRow)
        with self._db.session() as s:
            s.execute(
                insert.values(
                    subscriber_id=subscriber_id, paper_id=paper_id, liked=liked, at=now
                ).on_conflict_do_update(
                    index_elements=["subscriber_id", "paper_id"],
                    set_={"liked": insert.excluded.liked, "at": insert.excluded.at},
                )
            )
            self._feedback_changed(s, subscriber_id, now)

    def undo_feedback(self, subscriber_id: int, paper_id: str) -> bool:
        now = utcnow()
        with self._db.session() as s:
            result = s.execute(
                delete(FeedbackRow).where(
                    FeedbackRow.subscriber_id == subscriber_id, FeedbackRow.paper_id == paper_id
                )
            )
            removed = bool(getattr(result, "rowcount", 0))
            if removed:
                self._feedback_changed(s, subscriber_id, now)
            return removed

    def _feedback_changed(self, s: Session, subscriber_id: int, now: datetime) -> None:
        count = (
            select(func.count())
            .select_from(FeedbackRow)
            .where(FeedbackRow.subscriber_id == subscriber_id)
            .scalar_subquery()
        )
        insert = self._db.insert(ReaderProfileRow)
        values = {"feedback_count": count, "vector": None, "updated_at": now}
        s.execute(
            insert.values(
                subscriber_id=subscriber_id, about="", exclude=[], terms=[], parts=[], **values
            ).on_conflict_do_update(index_elements=["subscriber_id"], set_=values)
        )

    def feedback(self, subscriber_id: int) -> list[FeedbackRecord]:
        """The reader's signals, newest first."""
        with self._db.connection() as c:
            rows = c.execute(
                select(FeedbackRow.paper_id, FeedbackRow.liked, FeedbackRow.at)
                .where(FeedbackRow.subscriber_id == subscriber_id)
                .order_by(FeedbackRow.at.desc(), FeedbackRow.paper_id)
            )
            return [FeedbackRecord(p, bool(liked), at) for p, liked, at in rows]

    # -- why each paper is there ------------------------------------------------------------

    def save_reasons(self, day: date, reasons: Mapping[int, Sequence[str]]) -> None:
        """One row per digest, its reasons in the order of its paper list. A re-plan of the
        same day keeps what the first plan wrote, as the delivery row does."""
        if not reasons:
            return
        statement = self._db.insert(DeliveryReasonsRow).on_conflict_do_nothing(
            index_elements=["subscriber_id", "digest_date"]
        )
        with self._db.connection() as c:
            c.execute(
                statement,
                [
                    {"subscriber_id": sub_id, "digest_date": day, "reasons": SEPARATOR.join(why)}
                    for sub_id, why in reasons.items()
                ],
            )

    def reasons(self, subscriber_id: int, day: date) -> list[str] | None:
        with self._db.connection() as c:
            found = c.scalar(
                select(DeliveryReasonsRow.reasons).where(
                    DeliveryReasonsRow.subscriber_id == subscriber_id,
                    DeliveryReasonsRow.digest_date == day,
                )
            )
            return None if found is None else str(found).split(SEPARATOR)

    def reasons_of_deliveries(self, first: int, last: int) -> tuple[dict[int, list[str]], int]:
        """The reasons of the deliveries with ids in [first, last), by delivery id, and the
        highest delivery id in that range when read (0 for none). A delivery's reasons are
        written before it, so every delivery up to that id has its reasons here if it has any;
        a later one needs another read."""
        d, r = DeliveryRow, DeliveryReasonsRow
        window = (d.id >= first, d.id < last)
        with self._db.connection() as c:
            highest = c.scalar(select(func.max(d.id)).where(*window)) or 0
            rows = c.execute(
                select(d.id, r.reasons)
                .join(r, (r.subscriber_id == d.subscriber_id) & (r.digest_date == d.digest_date))
                .where(*window)
            )
            return {i: str(why).split(SEPARATOR) for i, why in rows}, int(highest)

    def forget_reasons(self, day: date) -> None:
        """A day's reasons, removed with its plan (benchmarks re-plan a day)."""
        with self._db.session() as s:
            s.execute(delete(DeliveryReasonsRow).where(DeliveryReasonsRow.digest_date == day))

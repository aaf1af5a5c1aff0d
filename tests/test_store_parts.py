"""The store's parts on their own, on SQLite and PostgreSQL: the records they return, and a
delivery's way through the outbox from planning to the reports."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from newsletter.papers import Paper
from newsletter.records import (
    DeliveryHistory,
    PlannedDelivery,
    PlannedDigest,
    SuppressionRecord,
    Undelivered,
)
from newsletter.states import Cadence, DeliveryStatus, FailureReason, SubscriberStatus
from newsletter.store import Store
from tests.loaders import add_subscribers

DAY = date(2026, 2, 11)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.upgrade()
    yield store
    store.close()


def paper(paper_id: str) -> Paper:
    return Paper(id=paper_id, title=f"Paper {paper_id}", abstract="", authors=[], author_count=0)


def test_subscriber_records_carry_enums(store: Store) -> None:
    record, may_mail = store.subscribers.sign_up("a@example.org", ["agents"], [], 60)
    assert may_mail and record.status is SubscriberStatus.PENDING
    assert record.frequency is Cadence.DAILY
    confirmed = store.subscribers.confirm(record.id)
    assert confirmed is not None and confirmed.status is SubscriberStatus.ACTIVE
    weekly = store.subscribers.update_preferences(
        record.id, topics=[], keywords=["x"], frequency="weekly", paused=True
    )
    assert weekly is not None and weekly.frequency is Cadence.WEEKLY
    assert weekly.status is SubscriberStatus.PAUSED
    assert store.subscribers.by_email("a@example.org") == weekly
    assert [r.email for r in store.subscribers.all()] == ["a@example.org"]
    assert store.subscribers.delete_by_id(record.id)
    assert store.subscribers.by_id(record.id) is None


def test_suppressions_are_records(store: Store) -> None:
    store.subscribers.upsert("b@example.org", [], [])
    assert not store.outbox.record_bounce("b@example.org", "550 no such user", limit=2)
    assert store.outbox.record_bounce("b@example.org", "550 no such user", limit=2)
    store.suppressions.suppress("c@example.org", "manual")
    rows = store.suppressions.all()
    assert all(isinstance(row, SuppressionRecord) for row in rows)
    assert [(r.email, r.reason, r.detail) for r in rows] == [
        ("b@example.org", "bounced", "550 no such user"),
        ("c@example.org", "manual", None),
    ]
    assert store.outbox.suppressed(["b@example.org", "d@example.org"]) == {"b@example.org"}
    bounced = store.subscribers.by_email("b@example.org")
    assert bounced is not None and bounced.status is SubscriberStatus.BOUNCED
    assert store.suppressions.unsuppress("c@example.org")
    assert not store.suppressions.unsuppress("c@example.org")


def test_a_delivery_from_planning_to_the_reports(store: Store) -> None:
    store.papers.store_day(DAY, [paper("p1"), paper("p2")])
    assert [p.id for p in store.papers.day_papers(DAY)] == ["p1", "p2"]
    assert store.papers.listed_days() == [DAY]
    add_subscribers(store, ["x@example.org", "y@example.org"])
    batches = list(store.outbox.plan_candidates(DAY, batch_size=1))
    assert [[c.subscriber.email for c in batch] for batch in batches] == [
        ["x@example.org"],
        ["y@example.org"],
    ]
    x, y = (batch[0].subscriber for batch in batches)
    store.outbox.start_run(DAY, 2)
    created = store.outbox.add_deliveries(
        DAY,
        [
            PlannedDelivery(x.id, DeliveryStatus.QUEUED, None, "<x@t>", ["p1", "p2"]),
            PlannedDelivery(y.id, DeliveryStatus.QUEUED, None, "<y@t>", ["p1"]),
        ],
    )
    assert created == {x.id, y.id}
    assert (
        store.outbox.add_deliveries(
            DAY, [PlannedDelivery(x.id, DeliveryStatus.QUEUED, None, "<x2@t>", ["p2"])]
        )
        == set()
    )
    store.outbox.finish_run(DAY)
    assert store.outbox.run_planned(DAY)
    assert store.outbox.already_sent([x.id, y.id], ["p1", "p2"]) == {
        x.id: {"p1", "p2"},
        y.id: {"p1"},
    }
    assert store.outbox.delivery_for(x.id, DAY) == PlannedDigest(
        DeliveryStatus.QUEUED, ["p1", "p2"]
    )

    claimed = store.outbox.claim(limit=10, lease_seconds=60)
    assert [(c.subscriber.email, c.paper_ids, c.attempts) for c in claimed] == [
        ("x@example.org", ["p1", "p2"], 1),
        ("y@example.org", ["p1"], 1),
    ]
    assert claimed[0].subscriber.status is SubscriberStatus.ACTIVE
    assert store.outbox.claim(limit=10, lease_seconds=60) == []
    assert store.outbox.next_due_at() is not None  # the leases' expiry
    store.outbox.mark_sent([claimed[0].id])
    store.outbox.mark_finished(
        [claimed[1].id], DeliveryStatus.FAILED, FailureReason.REJECTED, "550 5.1.1 no"
    )
    assert store.outbox.already_sent([y.id], ["p1"]) == {}  # released for a later digest

    summary = store.reports.day_summary(DAY)
    assert summary.by_status == {"sent": 1, "failed": 1} and summary.papers_sent == 2
    assert store.reports.undelivered(DAY) == [
        Undelivered("y@example.org", DeliveryStatus.FAILED, "recipient_rejected", "550 5.1.1 no", 1)
    ]
    assert store.reports.deliveries_for("x@example.org") == [
        DeliveryHistory(DAY, DeliveryStatus.SENT, None, ["p1", "p2"])
    ]
    assert store.reports.delivery_states(DAY) == {
        "x@example.org": ("sent", None),
        "y@example.org": ("failed", "recipient_rejected"),
    }
    assert store.reports.metrics()["queue_due"] == 0


def test_sqlite_logs_a_sent_delivery_by_its_key_not_by_reading_every_sent_one(
    tmp_path: Path,
) -> None:
    """Recording one send must not read the day's (and every earlier day's) sent deliveries:
    the sent log's INSERT looks each marked delivery up by its primary key."""
    from sqlalchemy import text

    from newsletter.store.outbox_sql import _LOG_SENT_SQLITE

    store = Store(f"sqlite:///{tmp_path}/plan.db")
    store.upgrade()
    try:
        with store.connection() as c:
            plan = [
                row[3]
                for row in c.execute(
                    text("EXPLAIN QUERY PLAN " + _LOG_SENT_SQLITE.text),
                    {"ids": "[1, 2]", "sent": DeliveryStatus.SENT},
                )
            ]
    finally:
        store.close()
    deliveries = [step for step in plan if " d " in f" {step} "]
    assert deliveries == ["SEARCH d USING INTEGER PRIMARY KEY (rowid=?)"], plan


def test_sqlite_stores_planned_rows_as_sqlalchemy_would(tmp_path: Path) -> None:
    """The planner's rows go in as one JSON text unpacked by SQLite: every column must hold
    what an ORM insert of the same values holds, to the type and the text format, since the
    claim compares times as text."""
    from datetime import datetime

    from sqlalchemy import text

    from newsletter.store.schema import DeliveryRow

    store = Store(f"sqlite:///{tmp_path}/rows.db")
    store.upgrade()
    try:
        add_subscribers(store, ["r0@example.org", "r1@example.org"])
        first, second = (store.subscribers.by_email(f"r{i}@example.org") for i in range(2))
        assert first is not None and second is not None
        due = datetime(2026, 2, 12, 8, 0)
        papers = ["2602.1", "2602.2"]
        planned = PlannedDelivery(first.id, DeliveryStatus.QUEUED, None, "<a@x>", papers, due)
        store.outbox.add_deliveries(DAY, [planned])
        with store.session() as s:
            row = s.get(DeliveryRow, 1)
            assert row is not None
            s.add(
                DeliveryRow(
                    subscriber_id=second.id,
                    digest_date=DAY,
                    status=DeliveryStatus.QUEUED,
                    reason=None,
                    message_id="<a@x>",
                    paper_ids=papers,
                    next_attempt_at=due,
                    attempts=0,
                    created_at=row.created_at,
                    updated_at=row.updated_at,
                )
            )
        columns = "digest_date, status, reason, message_id, paper_ids, next_attempt_at, attempts"
        typed = ", ".join(f"{c}, typeof({c})" for c in columns.split(", "))
        with store.connection() as c:
            by_planner, by_orm = c.execute(
                text(f"SELECT {typed}, created_at FROM deliveries ORDER BY id")
            ).all()
    finally:
        store.close()
    assert by_planner == by_orm


def test_records_of_a_batch_are_those_of_each_row(store: Store) -> None:
    """subscriber_records finds the columns by position once per batch: the records must be
    subscriber_record's, row by row, whatever other columns the rows carry first."""
    from sqlalchemy import literal, select

    from newsletter.store.rows import SUBSCRIBER_COLUMNS, subscriber_record, subscriber_records
    from newsletter.store.schema import SubscriberRow

    add_subscribers(store, [f"b{i}@example.org" for i in range(5)], ["agents"], ["video"])
    store.subscribers.update_preferences(
        store.subscribers.by_email("b3@example.org").id,  # type: ignore[union-attr]
        topics=[],
        keywords=["x"],
        frequency="weekly",
        paused=True,
    )
    with store.connection() as c:
        rows = c.execute(
            select(literal(7).label("delivery_id"), *SUBSCRIBER_COLUMNS).order_by(SubscriberRow.id)
        ).all()
    assert len(rows) == 5
    assert subscriber_records(rows) == [subscriber_record(row) for row in rows]
    assert subscriber_records([]) == []

"""The diff's two sources on SQLite and PostgreSQL: the sent log, written when a delivery is
marked sent, and the paper lists of deliveries not yet sent, which hold their papers until
then. Whatever state a delivery is in, its papers are never offered to the subscriber twice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from sqlalchemy import text

from newsletter.records import PlannedDelivery
from newsletter.states import DeliveryStatus, FailureReason
from newsletter.store import Store
from tests.loaders import add_subscribers

DAY, NEXT_DAY = date(2026, 2, 11), date(2026, 2, 12)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.upgrade()
    yield store
    store.close()


def logged(store: Store) -> set[tuple[int, str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT subscriber_id, paper_id FROM sent_papers"))
        return {(row[0], row[1]) for row in rows}


def test_papers_are_held_from_planning_to_sent_and_released_if_never_sent(store: Store) -> None:
    add_subscribers(store, ["x@example.org", "y@example.org", "z@example.org"])
    x, y, z = (store.subscribers.by_email(f"{n}@example.org") for n in "xyz")
    assert x and y and z
    outbox = store.outbox
    outbox.add_deliveries(
        DAY,
        [
            PlannedDelivery(x.id, DeliveryStatus.QUEUED, None, "<x@t>", ["p1", "p2"]),
            PlannedDelivery(y.id, DeliveryStatus.QUEUED, None, "<y@t>", ["p1"]),
            PlannedDelivery(z.id, DeliveryStatus.QUEUED, None, "<z@t>", ["p3"]),
        ],
    )
    # Planned, not sent: nothing logged yet, but the papers are taken.
    assert logged(store) == set()
    everyone, papers = [x.id, y.id, z.id], ["p1", "p2", "p3", "p9"]
    held = {x.id: {"p1", "p2"}, y.id: {"p1"}, z.id: {"p3"}}
    assert outbox.already_sent(everyone, papers) == held

    by_subscriber = {c.subscriber.id: c.id for c in outbox.claim(limit=10, lease_seconds=60)}
    assert outbox.already_sent(everyone, papers) == held  # in flight: still taken

    outbox.mark_sent([by_subscriber[x.id]])
    assert logged(store) == {(x.id, "p1"), (x.id, "p2")}
    outbox.mark_finished([by_subscriber[y.id]], DeliveryStatus.FAILED, FailureReason.REJECTED)
    assert outbox.already_sent(everyone, papers) == {x.id: {"p1", "p2"}, z.id: {"p3"}}
    assert outbox.already_sent([x.id], ["p2", "p9"]) == {x.id: {"p2"}}

    # A digest still in flight when the next day is planned is not superseded: its papers
    # stay taken, and are logged once it is sent.
    assert outbox.supersede_older(NEXT_DAY) == 0
    assert outbox.already_sent([z.id], ["p3"]) == {z.id: {"p3"}}
    outbox.mark_sent([by_subscriber[z.id]])
    outbox.mark_sent([by_subscriber[z.id]])  # recorded twice (a retried write): one row
    assert logged(store) == {(x.id, "p1"), (x.id, "p2"), (z.id, "p3")}
    assert store.reports.day_summary(DAY).papers_sent == 3


def test_a_queued_digest_superseded_by_the_next_day_gives_its_papers_back(store: Store) -> None:
    add_subscribers(store, ["x@example.org"])
    x = store.subscribers.by_email("x@example.org")
    assert x
    store.outbox.add_deliveries(
        DAY, [PlannedDelivery(x.id, DeliveryStatus.QUEUED, None, "<x@t>", ["p1"])]
    )
    assert store.outbox.already_sent([x.id], ["p1"]) == {x.id: {"p1"}}
    assert store.outbox.supersede_older(NEXT_DAY) == 1
    assert store.outbox.already_sent([x.id], ["p1"]) == {}
    assert logged(store) == set()

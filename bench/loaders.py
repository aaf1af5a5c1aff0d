"""Loading a bench's data set in bulk: many subscribers, and a long history of past deliveries.

Functions taking a Store, outside the package: the newsletter itself never adds rows this way.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import date

from sqlalchemy import insert, select

from newsletter.clock import utcnow
from newsletter.states import Cadence, DeliveryStatus, SubscriberStatus
from newsletter.store import Store
from newsletter.store.schema import DeliveryRow, SubscriberRow


def bulk_add_subscribers(
    store: Store,
    subscribers: Iterable[tuple[str, Sequence[str], Sequence[str]]],
    chunk: int = 5000,
) -> int:
    """Insert many confirmed subscribers (email, topics, keywords) without per-row round
    trips; addresses already present are left alone. Returns how many were added."""
    now = utcnow()
    table = SubscriberRow.__table__
    statement = (
        store.backend.insert(table)
        .on_conflict_do_nothing(index_elements=["email"])
        .returning(table.c.id)
    )
    rows = (
        {
            "email": email,
            "status": SubscriberStatus.ACTIVE,
            "topics": list(topics),
            "keywords": list(keywords),
            "created_at": now,
            "confirmed_at": now,
            "bounce_count": 0,
            "frequency": Cadence.DAILY,
        }
        for email, topics, keywords in subscribers
    )
    added = 0
    with store.session() as s:
        while batch := list(itertools.islice(rows, chunk)):
            added += len(s.execute(statement, batch).all())
    return added


def bulk_add_history(
    store: Store, day: date, history: Iterable[tuple[int, Sequence[str]]], chunk: int = 2000
) -> int:
    """Record past deliveries in bulk: for each (subscriber id, paper ids), one sent delivery
    dated `day` carrying those papers in the sent log (the table the diff reads). PostgreSQL
    gets the sent-log rows by COPY. Returns the sent-log rows added."""
    now = utcnow()
    rows = 0
    pending: list[tuple[int, Sequence[str]]] = []

    def flush() -> None:
        nonlocal rows
        if not pending:
            return
        with store.session() as s:
            s.execute(
                insert(DeliveryRow),
                [
                    {
                        "subscriber_id": sub_id,
                        "digest_date": day,
                        "status": DeliveryStatus.SENT,
                        "message_id": f"<history.{sub_id}.{day}@bench>",
                        "paper_ids": [],
                        "attempts": 1,
                        "created_at": now,
                        "updated_at": now,
                        "sent_at": now,
                    }
                    for sub_id, _ in pending
                ],
            )
            ids = dict(
                s.execute(
                    select(DeliveryRow.subscriber_id, DeliveryRow.id).where(
                        DeliveryRow.digest_date == day,
                        DeliveryRow.subscriber_id.in_([sub_id for sub_id, _ in pending]),
                    )
                ).all()
            )
            values = [
                (sub_id, paper_id, ids[sub_id]) for sub_id, papers in pending for paper_id in papers
            ]
            dbapi = s.connection().connection.dbapi_connection
            assert dbapi is not None
            cursor = dbapi.cursor()
            if store.dialect == "postgresql":
                with cursor.copy(
                    "COPY sent_papers (subscriber_id, paper_id, delivery_id) FROM STDIN"
                ) as copy:
                    for value in values:
                        copy.write_row(value)
            else:
                cursor.executemany(
                    "INSERT INTO sent_papers (subscriber_id, paper_id, delivery_id) "
                    "VALUES (?, ?, ?)",
                    values,
                )
            rows += len(values)
        pending.clear()

    for item in history:
        pending.append(item)
        if len(pending) >= chunk:
            flush()
    flush()
    return rows

"""The outbox's statements, with what each database runs differently kept side by side.

A sender claims and records thousands of deliveries a minute, and a planner writes them by the
batch. These statements are built once and run on a plain connection: through an ORM session,
the same UPDATE cost four times as much Python as the database took to run it, and that Python
shares the sender's one core.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import (
    DateTime,
    Integer,
    Table,
    Text,
    and_,
    bindparam,
    func,
    null,
    or_,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy import cast as cast_sql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, aliased

from newsletter.records import PlannedDelivery
from newsletter.states import DeliveryStatus, SubscriberStatus
from newsletter.store.backend import LIVE_SENDERS, Backend
from newsletter.store.rows import SUBSCRIBER_COLUMNS, json_text
from newsletter.store.schema import (
    UNDELIVERED,
    DeliveryRow,
    SentPaperRow,
    SubscriberRow,
    SuppressionRow,
)

DELIVERIES = cast(Table, DeliveryRow.__table__)
_NOW = bindparam("now", type_=DateTime())
_OWNER = bindparam("owner", type_=Integer())
_SENDING = DELIVERIES.c.status == DeliveryStatus.SENDING
_DUE = or_(
    and_(
        DELIVERIES.c.status == DeliveryStatus.QUEUED,
        or_(DELIVERIES.c.next_attempt_at.is_(None), DELIVERIES.c.next_attempt_at <= _NOW),
    ),
    and_(DELIVERIES.c.status == DeliveryStatus.RETRY, DELIVERIES.c.next_attempt_at <= _NOW),
    and_(_SENDING, DELIVERIES.c.lease_until < _NOW),
)
# PostgreSQL: a lease whose sender is gone (its advisory lock is free) is due at once. The
# live senders are read once per statement; leases naming nobody (taken before migration 0006)
# wait for their expiry.
_LIVE = select(text("*")).select_from(text(f"({LIVE_SENDERS}) AS live")).scalar_subquery()
_ORPHANED = and_(
    _SENDING,
    DELIVERIES.c.lease_owner.is_not(None),
    DELIVERIES.c.lease_owner != _OWNER,
    DELIVERIES.c.lease_owner.not_in(_LIVE),
)
# SQLite: the sender that takes the lock file takes over every lease (Outbox.exclusive_sender).
TAKE_OVER_ALL = (
    update(DELIVERIES)
    .where(_SENDING, DELIVERIES.c.lease_until >= _NOW)
    .values(lease_until=_NOW, lease_owner=None)
)


def _claim_statement(skip_locked: bool) -> Any:
    """Lease up to :limit due deliveries in one statement. The UPDATE re-checks "due", and
    RETURNING says which rows this call took, whatever other senders did meanwhile."""
    due = or_(_DUE, _ORPHANED) if skip_locked else _DUE
    candidates = (
        select(DELIVERIES.c.id).where(due).order_by(DELIVERIES.c.id).limit(bindparam("limit"))
    )
    if skip_locked:
        candidates = candidates.with_for_update(skip_locked=True)
        # As an array, the candidates are picked once (an InitPlan). As `IN (subquery)` the
        # planner may rescan them per row of a nested loop, and each rescan skips the rows
        # locked by the last: a claim of 10 took 30.
        chosen = DELIVERIES.c.id == func.any(func.array(candidates.scalar_subquery()))
    else:
        chosen = DELIVERIES.c.id.in_(candidates.scalar_subquery())
    return (
        update(DELIVERIES)
        .where(chosen, due)
        .values(
            status=DeliveryStatus.SENDING,
            lease_until=bindparam("lease_until", type_=DateTime()),
            lease_owner=_OWNER,
            attempts=DELIVERIES.c.attempts + 1,
            updated_at=_NOW,
        )
        .returning(DELIVERIES.c.id)
    )


def _leases_statement(owners: bool) -> Any:
    """Unexpired leases not this sender's: (held by a live sender, the last one's end, left
    by a gone one); without `owners` (SQLite) all count as held and the third is NULL."""
    unexpired = and_(
        _SENDING,
        DELIVERIES.c.lease_until >= _NOW,
        # Not this sender's; a process that is no sender (`status`) owns none.
        or_(_OWNER.is_(None), DELIVERIES.c.lease_owner.is_distinct_from(_OWNER)),
    )
    if not owners:
        return select(func.count(), func.max(DELIVERIES.c.lease_until), null()).where(unexpired)
    held = DELIVERIES.c.lease_owner.is_(None) | DELIVERIES.c.lease_owner.in_(_LIVE)
    return select(
        func.count().filter(held),
        func.max(DELIVERIES.c.lease_until).filter(held),
        func.count().filter(~held),
    ).where(unexpired)


_CLAIM_SQLITE = _claim_statement(skip_locked=False)
_CLAIMED_COLUMNS = (
    DELIVERIES.c.digest_date,
    DELIVERIES.c.message_id,
    DELIVERIES.c.paper_ids,
    DELIVERIES.c.attempts,
)


def _read(column: Any) -> Any:
    """How a claimed delivery's column is read: the paper list as JSON text (rows.strings)."""
    return json_text(column) if column.key == "paper_ids" else column


# PostgreSQL claims and reads the claimed rows with their subscribers in one round trip (the
# UPDATE as a CTE); SQLite cannot put an UPDATE in a WITH, so it reads them by id afterwards.
_CLAIMED = (
    _claim_statement(skip_locked=True)
    .returning(DELIVERIES.c.subscriber_id, *_CLAIMED_COLUMNS)
    .cte()
)
_CLAIM_AND_READ = (
    select(
        _CLAIMED.c.id.label("delivery_id"),
        *(_read(_CLAIMED.c[column.name]) for column in _CLAIMED_COLUMNS),
        *SUBSCRIBER_COLUMNS,
    )
    .join(SubscriberRow, SubscriberRow.id == _CLAIMED.c.subscriber_id)
    .order_by(_CLAIMED.c.id)
)
_CLAIMED_ROWS = (
    select(
        DELIVERIES.c.id.label("delivery_id"),
        *(_read(column) for column in _CLAIMED_COLUMNS),
        *SUBSCRIBER_COLUMNS,
    )
    .join(SubscriberRow, SubscriberRow.id == DELIVERIES.c.subscriber_id)
    .where(DELIVERIES.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(DELIVERIES.c.id)
)
_SENT = SentPaperRow.__table__.c
# What the batch's subscribers were sent or are about to be, in one statement (one snapshot: a
# delivery marked sent meanwhile is found in one part or the other, never in neither).
# Sent: for each of the papers, a range scan over the batch's ids in the sent log's key
# (paper, subscriber), which finds only the pairs that exist, however long the history.
# Undelivered: their paper lists, through the partial index of undelivered deliveries; the
# condition is spelled as the index's own (literal, not bound) so both databases can use it.


def _already_sent(deliveries: str) -> Any:
    """ALREADY_SENT, reading the undelivered rows FROM `deliveries` (a table name, with the
    index SQLite is told to use)."""
    undelivered = text(
        "SELECT subscriber_id, CAST(NULL AS TEXT) AS paper_id, "
        f"CAST(paper_ids AS TEXT) AS paper_ids FROM {deliveries} "
        f"WHERE subscriber_id BETWEEN :first AND :last AND {UNDELIVERED}"
    ).columns(subscriber_id=Integer(), paper_id=Text(), paper_ids=Text())
    sent = select(
        _SENT.subscriber_id, _SENT.paper_id, cast_sql(null(), Text).label("paper_ids")
    ).where(
        _SENT.paper_id.in_(bindparam("papers", expanding=True)),
        _SENT.subscriber_id.between(bindparam("first"), bindparam("last")),
    )
    return union_all(sent, undelivered)


MARK_SENT = (
    update(DELIVERIES)
    .where(DELIVERIES.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=DeliveryStatus.SENT,
        sent_at=_NOW,
        updated_at=_NOW,
        lease_until=None,
        reason=None,
        last_error=None,
    )
)


# PostgreSQL marks deliveries sent and logs their papers in one statement (an UPDATE in a
# WITH), so the two cannot part even in autocommit mode.
_MARKED = MARK_SENT.returning(
    DELIVERIES.c.id, DELIVERIES.c.subscriber_id, DELIVERIES.c.paper_ids
).cte("marked")
_MARKED_PAPERS = (
    func.json_array_elements_text(_MARKED.c.paper_ids).table_valued("value").render_derived("p")
)
_MARK_SENT_AND_LOG = (
    pg_insert(cast(Table, SentPaperRow.__table__))
    .from_select(
        ["subscriber_id", "paper_id", "delivery_id"],
        select(_MARKED.c.subscriber_id, _MARKED_PAPERS.c.value, _MARKED.c.id).select_from(
            _MARKED.join(_MARKED_PAPERS, true())
        ),
    )
    .on_conflict_do_nothing()
    .add_cte(_MARKED)
)


def _candidates(is_planned: Any, join_planned: Callable[[Any], Any], batch_size: int) -> Any:
    """Planning's batch of subscribers in id order after :last_id, each with whether it is
    planned already (as each database best finds it) and whether its address is suppressed."""
    query = select(
        *SUBSCRIBER_COLUMNS,
        is_planned.label("is_planned"),
        SuppressionRow.email.is_not(None).label("is_suppressed"),
    ).select_from(SubscriberRow)
    return (
        join_planned(query)
        .outerjoin(SuppressionRow, SuppressionRow.email == SubscriberRow.email)
        .where(
            SubscriberRow.status == SubscriberStatus.ACTIVE,
            SubscriberRow.id > bindparam("last_id"),
        )
        .order_by(SubscriberRow.id)
        .limit(batch_size)
    )


class OutboxStatements:
    """The statements that each database runs its own way."""

    leases: Any  # see _leases_statement
    already_sent: Any  # see _already_sent

    def __init__(self, db: Backend) -> None:
        self._db = db

    def claim(self, params: dict[str, Any]) -> Sequence[Any]:
        """Lease due deliveries (params: now, limit, lease_until); the claimed rows with
        their subscribers' columns."""
        raise NotImplementedError

    def insert_deliveries(
        self, s: Session, day: date, now: datetime, planned: Sequence[PlannedDelivery]
    ) -> list[tuple[int, int]]:
        """Insert the outbox rows and the sent log of the queued ones' papers; (delivery id,
        subscriber id) of the rows this call created."""
        raise NotImplementedError

    def candidates(self, day: date, batch_size: int) -> Any:
        """A batch of active subscribers after :last_id, with is_planned (a delivery for `day`
        exists) and is_suppressed: a join on the outbox's (subscriber, day) key, which SQLite
        probes per subscriber."""
        planned = aliased(DeliveryRow)
        return _candidates(
            planned.id.is_not(None),
            lambda query: query.outerjoin(
                planned,
                and_(planned.subscriber_id == SubscriberRow.id, planned.digest_date == day),
            ),
            batch_size,
        )

    def mark_sent(self, ids: list[int], now: datetime) -> None:
        """Mark the deliveries sent and write their papers to the sent log, atomically."""
        raise NotImplementedError

    def refresh_statistics(self) -> None:
        """Before planning: bring the query planner's statistics of the tables planning reads
        up to date where they are stale (nothing to do on SQLite, whose plans use the keys
        regardless)."""


# A planned batch from one JSON text: [subscriber id, status, reason, message id, paper ids as
# JSON text, due at]. The WHERE keeps SQLite from reading ON CONFLICT as a join's ON.
_INSERT_DELIVERIES_SQLITE = text(
    "INSERT INTO deliveries (subscriber_id, digest_date, status, reason, message_id, "
    "paper_ids, next_attempt_at, attempts, created_at, updated_at) "
    "SELECT json_extract(r.value, '$[0]'), :day, json_extract(r.value, '$[1]'), "
    "json_extract(r.value, '$[2]'), json_extract(r.value, '$[3]'), "
    "json_extract(r.value, '$[4]'), json_extract(r.value, '$[5]'), 0, :now, :now "
    "FROM json_each(:rows) AS r WHERE true "
    "ON CONFLICT (subscriber_id, digest_date) DO NOTHING "
    "RETURNING id, subscriber_id"
)


# CROSS JOIN fixes SQLite's join order: the marked ids first, each delivery by its key. Left to
# choose, SQLite read every delivery with status 'sent' through ix_deliveries_due and kept those
# in the list, so each record cost more than the one before it: the whole day's, and every
# earlier day's, sent rows (3 ms a record at 20,000 subscribers, and growing). The WHERE must
# stay: without one, SQLite cannot tell the upsert's ON CONFLICT from a join's ON.
_LOG_SENT_SQLITE = text(
    "INSERT INTO sent_papers (subscriber_id, paper_id, delivery_id) "
    "SELECT d.subscriber_id, p.value, d.id FROM json_each(:ids) AS marked "
    "CROSS JOIN deliveries AS d ON d.id = marked.value "
    "CROSS JOIN json_each(d.paper_ids) AS p "
    "WHERE d.status = :sent "
    "ON CONFLICT (paper_id, subscriber_id) DO NOTHING"
)


class SQLiteStatements(OutboxStatements):
    """SQLite: no UPDATE inside a WITH, no FOR UPDATE; json_each expands paper lists."""

    leases = _leases_statement(owners=False)
    # Without statistics SQLite would rather scan every undelivered row by status: during a
    # plan, each batch would read all the rows planned before it.
    already_sent = _already_sent("deliveries INDEXED BY ix_deliveries_undelivered")

    def __init__(self, db: Backend) -> None:
        super().__init__(db)
        # How SQLAlchemy stores a datetime on SQLite, for rows written without it.
        dialect = db.engine.dialect
        processor = DateTime().dialect_impl(dialect).bind_processor(dialect)
        assert processor is not None  # SQLite keeps datetimes as text
        self._stored_datetime: Callable[[datetime], str] = processor

    def claim(self, params: dict[str, Any]) -> Sequence[Any]:
        """The claim, then the claimed rows read by id in the same transaction."""
        with self._db.connection() as c:
            ids = list(c.execute(_CLAIM_SQLITE, params).scalars())
            return c.execute(_CLAIMED_ROWS, {"ids": ids}).all() if ids else []

    def insert_deliveries(
        self, s: Session, day: date, now: datetime, planned: Sequence[PlannedDelivery]
    ) -> list[tuple[int, int]]:
        """The batch as one JSON text, unpacked by SQLite (json_each), as on PostgreSQL:
        SQLAlchemy's own multi-row INSERT spent longer converting each row's ten parameters
        than SQLite took to insert it (22 -> 13 us a row). Values are stored as SQLAlchemy
        stores them (its DATETIME and DATE formats, the paper list as json.dumps text)."""
        stored = self._stored_datetime
        rows = [
            [
                p.subscriber_id,
                str(p.status),
                p.reason,
                p.message_id,
                json.dumps(p.paper_ids),
                stored(p.due_at) if p.due_at else None,
            ]
            for p in planned
        ]
        result = s.execute(
            _INSERT_DELIVERIES_SQLITE,
            {"day": day.isoformat(), "now": stored(now), "rows": json.dumps(rows)},
        )
        return [(row[0], row[1]) for row in result]

    def mark_sent(self, ids: list[int], now: datetime) -> None:
        """MARK_SENT, then the sent log of the deliveries it marked, expanding their paper
        lists in the database (json_each), in the same transaction."""
        with self._db.single_statement() as c:
            c.execute(MARK_SENT, {"ids": ids, "now": now})
            c.execute(_LOG_SENT_SQLITE, {"ids": json.dumps(ids), "sent": DeliveryStatus.SENT})


# Tables planning reads with more rows changed since their last ANALYZE than a tenth of them.
# Autovacuum gets there within a minute or so, but a plan right after a bulk import of
# subscribers then reads every remaining subscriber and sorts them for each batch of 2,000
# (the planner takes the fresh table for empty): 5 s of a 100,000-subscriber plan here.
# Not the sent log: its range scans are chosen without statistics too, and analysing a long
# history would be the one cost of planning that grows with it (1.2 s at 14.6 million rows).
# Not the outbox either: statistics taken before the day's rows exist say the day has none,
# and PostgreSQL then probes for each subscriber through the (day, status) index, reading all
# the day's rows planned so far (15.6 s instead of 0.4 s for 20,000 with a year of history).
_STALE_STATISTICS = text(
    "SELECT relname FROM pg_stat_user_tables "
    "WHERE relname IN ('subscribers', 'suppressions') "
    "AND n_mod_since_analyze > 1000 + n_live_tup / 10 ORDER BY relname"
)


class PostgresStatements(OutboxStatements):
    """PostgreSQL: one round trip per claim and per planned batch."""

    def refresh_statistics(self) -> None:
        """ANALYZE samples a fixed number of rows, so it costs a fraction of a second at any
        size; it runs only for the tables that need it."""
        with self._db.single_statement() as c:
            stale = list(c.execute(_STALE_STATISTICS).scalars())
            for table in stale:
                c.execute(text(f'ANALYZE "{table}"'))

    leases = _leases_statement(owners=True)
    already_sent = _already_sent("deliveries")

    def claim(self, params: dict[str, Any]) -> Sequence[Any]:
        """FOR UPDATE SKIP LOCKED lets many senders claim at once; claim and read are one
        round trip, in autocommit mode."""
        with self._db.single_statement() as c:
            return c.execute(_CLAIM_AND_READ, params).all()

    def insert_deliveries(
        self, s: Session, day: date, now: datetime, planned: Sequence[PlannedDelivery]
    ) -> list[tuple[int, int]]:
        """The batch as one JSON text, unpacked by the server. psycopg spends longer
        converting a many-row VALUES statement, or arrays of strings, than the server takes to
        run the INSERT."""
        rows = [
            [
                p.subscriber_id,
                str(p.status),
                p.reason,
                p.message_id,
                p.paper_ids,
                p.due_at.isoformat() if p.due_at else None,
            ]
            for p in planned
        ]
        result = s.execute(
            text(
                "INSERT INTO deliveries (subscriber_id, digest_date, status, reason, message_id, "
                "paper_ids, next_attempt_at, attempts, created_at, updated_at) "
                "SELECT (r->>0)::integer, :day, r->>1, r->>2, r->>3, r->4, "
                "(r->>5)::timestamp, 0, :now, :now "
                "FROM json_array_elements(CAST(:rows AS json)) AS r "
                "ON CONFLICT (subscriber_id, digest_date) DO NOTHING "
                "RETURNING id, subscriber_id"
            ),
            {"day": day, "now": now, "rows": json.dumps(rows)},
        ).all()
        return [(row[0], row[1]) for row in result]

    def mark_sent(self, ids: list[int], now: datetime) -> None:
        """MARK_SENT and the sent log of the rows it marked, one statement in autocommit
        mode: the server expands each paper list, so nothing per paper is built here."""
        with self._db.single_statement() as c:
            c.execute(_MARK_SENT_AND_LOG, {"ids": ids, "now": now})


def statements_for(db: Backend) -> OutboxStatements:
    return PostgresStatements(db) if db.name == "postgresql" else SQLiteStatements(db)

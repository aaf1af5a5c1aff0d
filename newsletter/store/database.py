"""The Store: every query the newsletter runs, on SQLite or PostgreSQL."""

from __future__ import annotations

import fcntl
import itertools
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    Connection,
    CursorResult,
    DateTime,
    Engine,
    Result,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import cast as cast_sql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased, sessionmaker

from newsletter.clock import utcnow
from newsletter.errors import SenderBusy
from newsletter.papers import Paper
from newsletter.records import (
    ClaimedDelivery,
    DaySummary,
    PlanCandidate,
    PlannedDelivery,
    SubscriberRecord,
)
from newsletter.states import DeliveryStatus, SkipReason, SubscriberStatus
from newsletter.store.engine import make_engine, translated_errors
from newsletter.store.schema import (
    DeliveryRow,
    DigestRunRow,
    ListingRow,
    PaperRow,
    SentPaperRow,
    SubscriberRow,
    SuppressionRow,
)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _subscriber(row: Any) -> SubscriberRecord:
    """From an ORM SubscriberRow or a Core row of _SUBSCRIBER_COLUMNS (same attribute names)."""
    return SubscriberRecord(
        id=row.id,
        email=row.email,
        status=row.status,
        topics=_strings(row.topics),
        keywords=_strings(row.keywords),
        created_at=row.created_at,
        bounce_count=row.bounce_count,
        frequency=row.frequency,
        timezone=row.timezone,
        delivery_hour=row.delivery_hour,
        weekday=row.weekday,
    )


def _strings(value: list[str] | str | None) -> tuple[str, ...]:
    """A JSON list of strings as a tuple: decoded already (ORM rows), or its JSON text."""
    if isinstance(value, str):
        return _decoded_strings(value)
    return tuple(value or ())


@lru_cache(maxsize=4096)
def _decoded_strings(text: str) -> tuple[str, ...]:
    """Memoised: thousands of subscribers share a few interest lists, and digests a few paper
    lists, so each distinct JSON text is decoded once."""
    return tuple(json.loads(text) or ())


def _json_text(column: Any) -> Any:
    """A JSON column read as its text, for _strings to decode (once per distinct text)."""
    return cast_sql(column, Text).label(column.key)


# The columns a SubscriberRecord is made of. Queries that read subscribers by the thousand
# (planning, claims) select these rather than ORM objects, which cost more to build than the
# query takes to run.
_SUBSCRIBER_COLUMNS = (
    SubscriberRow.id,
    SubscriberRow.email,
    SubscriberRow.status,
    _json_text(SubscriberRow.topics),
    _json_text(SubscriberRow.keywords),
    SubscriberRow.created_at,
    SubscriberRow.bounce_count,
    SubscriberRow.frequency,
    SubscriberRow.timezone,
    SubscriberRow.delivery_hour,
    SubscriberRow.weekday,
)


def _paper(row: PaperRow) -> Paper:
    return Paper(
        id=row.id,
        title=row.title,
        abstract=row.abstract,
        authors=list(row.authors or []),
        author_count=row.author_count,
        organization=row.organization,
        upvotes=row.upvotes,
        comments=row.comments,
        ai_summary=row.ai_summary,
        ai_keywords=list(row.ai_keywords or []),
        github_repo=row.github_repo,
        github_stars=row.github_stars,
        project_page=row.project_page,
        published_on=row.published_on,
        categories=list(row.categories or []),
    )


# -- the sender's statements ---------------------------------------------------------------
# A sender claims and records thousands of deliveries a minute. These statements are built once
# and run on a plain connection: through an ORM session, the same UPDATE cost four times as
# much Python as the database took to run it, and that Python shares the sender's one core.

_DELIVERIES = cast(Table, DeliveryRow.__table__)
_NOW = bindparam("now", type_=DateTime())
_DUE = or_(
    and_(
        _DELIVERIES.c.status == DeliveryStatus.QUEUED,
        or_(_DELIVERIES.c.next_attempt_at.is_(None), _DELIVERIES.c.next_attempt_at <= _NOW),
    ),
    and_(_DELIVERIES.c.status == DeliveryStatus.RETRY, _DELIVERIES.c.next_attempt_at <= _NOW),
    and_(_DELIVERIES.c.status == DeliveryStatus.SENDING, _DELIVERIES.c.lease_until < _NOW),
)


def _claim_statement(skip_locked: bool) -> Any:
    """Lease up to :limit due deliveries in one statement. The UPDATE re-checks "due", and
    RETURNING says which rows this call took, whatever other senders did meanwhile."""
    candidates = (
        select(_DELIVERIES.c.id).where(_DUE).order_by(_DELIVERIES.c.id).limit(bindparam("limit"))
    )
    chosen: Any = candidates.scalar_subquery()
    if skip_locked:
        # Materialized, so the candidates are chosen once: as a plain subquery PostgreSQL may
        # run it again for each row it updates, and with SKIP LOCKED each run skips the rows the
        # last one locked, so one claim took far more than :limit (one worker took a whole day).
        picked = candidates.with_for_update(skip_locked=True).cte("candidates")
        chosen = select(picked.prefix_with("MATERIALIZED").c.id).scalar_subquery()
    return (
        update(_DELIVERIES)
        .where(_DELIVERIES.c.id.in_(chosen), _DUE)
        .values(
            status=DeliveryStatus.SENDING,
            lease_until=bindparam("lease_until", type_=DateTime()),
            attempts=_DELIVERIES.c.attempts + 1,
            updated_at=_NOW,
        )
        .returning(_DELIVERIES.c.id)
    )


_CLAIM_SQLITE = _claim_statement(skip_locked=False)
_CLAIMED_COLUMNS = (
    _DELIVERIES.c.digest_date,
    _DELIVERIES.c.message_id,
    _DELIVERIES.c.paper_ids,
    _DELIVERIES.c.attempts,
)


def _read(column: Any) -> Any:
    """How a claimed delivery's column is read: the paper list as JSON text (see _strings)."""
    return _json_text(column) if column.key == "paper_ids" else column


# PostgreSQL claims and reads the claimed rows with their subscribers in one round trip (the
# UPDATE as a CTE); SQLite cannot put an UPDATE in a WITH, so it reads them by id afterwards.
_CLAIMED = (
    _claim_statement(skip_locked=True)
    .returning(_DELIVERIES.c.subscriber_id, *_CLAIMED_COLUMNS)
    .cte()
)
_CLAIM_AND_READ = (
    select(
        _CLAIMED.c.id.label("delivery_id"),
        *(_read(_CLAIMED.c[column.name]) for column in _CLAIMED_COLUMNS),
        *_SUBSCRIBER_COLUMNS,
    )
    .join(SubscriberRow, SubscriberRow.id == _CLAIMED.c.subscriber_id)
    .order_by(_CLAIMED.c.id)
)
_SENT = SentPaperRow.__table__.c
# For each of the papers, a range scan over the batch's subscriber ids in the sent log's key
# (paper, subscriber): it finds only the pairs that exist, however long the history.
_ALREADY_SENT = select(_SENT.subscriber_id, _SENT.paper_id).where(
    _SENT.paper_id.in_(bindparam("papers", expanding=True)),
    _SENT.subscriber_id.between(bindparam("first"), bindparam("last")),
)
_CLAIMED_ROWS = (
    select(
        _DELIVERIES.c.id.label("delivery_id"),
        *(_read(column) for column in _CLAIMED_COLUMNS),
        *_SUBSCRIBER_COLUMNS,
    )
    .join(SubscriberRow, SubscriberRow.id == _DELIVERIES.c.subscriber_id)
    .where(_DELIVERIES.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_DELIVERIES.c.id)
)
_MARK_SENT = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=DeliveryStatus.SENT,
        sent_at=_NOW,
        updated_at=_NOW,
        lease_until=None,
        reason=None,
        last_error=None,
    )
)


class Store:
    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._autocommit_engine: Engine | None = None  # see single_statement

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()
        if self._autocommit_engine is not None:
            self._autocommit_engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction; database failures leave as StoreUnavailable with one clear line."""
        with translated_errors(self.url), self._sessions.begin() as session:
            yield session

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A transaction on a plain connection, for the sender's hot statements."""
        with translated_errors(self.url), self.engine.begin() as connection:
            yield connection

    @contextmanager
    def single_statement(self) -> Iterator[Connection]:
        """A connection for one statement that is its own transaction. On PostgreSQL it runs
        in autocommit mode, sparing the BEGIN and COMMIT round trips, which cost a sender as
        much Python as the statement; SQLite takes its write lock in a BEGIN (see engine.py)."""
        if self.dialect != "postgresql":
            with self.connection() as connection:
                yield connection
            return
        if self._autocommit_engine is None:
            # Its own pool, without the ping before each use (another round trip): the
            # sender retries a statement that meets a dead connection (DeliveryLoop._retrying).
            self._autocommit_engine = make_engine(self.url, pre_ping=False).execution_options(
                isolation_level="AUTOCOMMIT"
            )
        with translated_errors(self.url), self._autocommit_engine.connect() as connection:
            yield connection

    def _insert(self, table: Any) -> Any:
        return (pg_insert if self.dialect == "postgresql" else sqlite_insert)(table)

    # -- schema ---------------------------------------------------------------------------

    def upgrade(self, revision: str = "head") -> None:
        """Create or upgrade the schema to the newest migration (or to `revision`)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with translated_errors(self.url), self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    @contextmanager
    def exclusive_sender(self) -> Iterator[None]:
        """Hold the right to send. On SQLite only one sender may run at a time (the file has one
        writer), enforced with a lock file the kernel releases if the process dies. PostgreSQL
        senders coordinate through FOR UPDATE SKIP LOCKED and leases, so any number may run."""
        if self.dialect != "sqlite" or not self.engine.url.database:
            yield
            return
        lock_path = Path(f"{self.engine.url.database}.sender.lock")
        with lock_path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SenderBusy(
                    f"another sender is already running on {self.engine.url.database}; "
                    "SQLite allows one at a time (use PostgreSQL to run several)"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- papers ---------------------------------------------------------------------------

    def store_day(self, day: date, papers: Sequence[Paper]) -> None:
        """Upsert `papers` and record them as `day`'s list (replacing an earlier partial one).

        Safe against a concurrent fetch of an overlapping day: new papers are first inserted as
        bare rows with ON CONFLICT DO NOTHING, so whoever comes second updates instead of
        failing on the primary key.
        """
        if not papers:
            return
        now = utcnow()
        with self.session() as s:
            s.execute(
                self._insert(PaperRow)
                .values(
                    [
                        {
                            "id": p.id,
                            "title": p.title,
                            "abstract": "",
                            "authors": [],
                            "author_count": 0,
                            "upvotes": 0,
                            "comments": 0,
                            "ai_keywords": [],
                            "categories": [],
                            "first_seen": now,
                            "updated_at": now,
                        }
                        for p in papers
                    ]
                )
                .on_conflict_do_nothing(index_elements=["id"])
            )
            rows = {
                row.id: row
                for row in s.scalars(
                    select(PaperRow)
                    .where(PaperRow.id.in_([p.id for p in papers]))
                    .with_for_update()
                )
            }
            for paper in papers:
                _merge_paper(rows[paper.id], paper, now)
            s.execute(delete(ListingRow).where(ListingRow.day == day))
            listing = self._insert(ListingRow).values(
                [{"day": day, "paper_id": p.id, "position": i} for i, p in enumerate(papers)]
            )
            s.execute(
                listing.on_conflict_do_update(
                    index_elements=["day", "paper_id"],
                    set_={"position": listing.excluded.position},
                )
            )

    def day_papers(self, day: date) -> list[Paper]:
        with self.session() as s:
            rows = s.scalars(
                select(PaperRow)
                .join(ListingRow, ListingRow.paper_id == PaperRow.id)
                .where(ListingRow.day == day)
                .order_by(ListingRow.position)
            )
            return [_paper(row) for row in rows]

    def papers_listed_between(self, first: date, last: date) -> list[Paper]:
        """Each paper listed on any day from `first` to `last`, once."""
        with self.session() as s:
            listed = select(ListingRow.paper_id).where(ListingRow.day.between(first, last))
            rows = s.scalars(select(PaperRow).where(PaperRow.id.in_(listed)))
            return [_paper(row) for row in rows]

    def papers_by_id(self, ids: Iterable[str]) -> dict[str, Paper]:
        with self.session() as s:
            rows = s.scalars(select(PaperRow).where(PaperRow.id.in_(list(ids))))
            return {row.id: _paper(row) for row in rows}

    def listed_days(self) -> list[date]:
        with self.session() as s:
            return list(s.scalars(select(ListingRow.day).distinct().order_by(ListingRow.day)))

    # -- subscribers ----------------------------------------------------------------------

    def upsert_subscriber(
        self,
        email: str,
        topics: Sequence[str],
        keywords: Sequence[str],
        status: SubscriberStatus = SubscriberStatus.ACTIVE,
    ) -> SubscriberRecord:
        now = utcnow()
        with self.session() as s:
            row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            if row is None:
                row = SubscriberRow(email=email, created_at=now, bounce_count=0)
                s.add(row)
            row.topics = list(topics)
            row.keywords = list(keywords)
            row.status = status
            if status == SubscriberStatus.ACTIVE:
                row.confirmed_at = row.confirmed_at or now
                row.unsubscribed_at = None
            s.flush()
            return _subscriber(row)

    def subscriber(self, email: str) -> SubscriberRecord | None:
        with self.session() as s:
            row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            return _subscriber(row) if row else None

    def subscribers(self) -> list[SubscriberRecord]:
        with self.session() as s:
            return [
                _subscriber(r) for r in s.scalars(select(SubscriberRow).order_by(SubscriberRow.id))
            ]

    def set_subscriber_status(self, email: str, status: SubscriberStatus) -> bool:
        now = utcnow()
        values: dict[str, Any] = {"status": status}
        if status == SubscriberStatus.UNSUBSCRIBED:
            values["unsubscribed_at"] = now
        with self.session() as s:
            result = s.execute(
                update(SubscriberRow).where(SubscriberRow.email == email).values(**values)
            )
            return _changed(result)

    def delete_subscriber(self, email: str) -> bool:
        """Remove the subscriber and everything recorded about them (deliveries, sent log)."""
        with self.session() as s:
            sub_id = s.scalar(select(SubscriberRow.id).where(SubscriberRow.email == email))
            if sub_id is None:
                return False
            # By delivery: the sent log is keyed by paper, and indexed by delivery.
            s.execute(
                delete(SentPaperRow).where(
                    SentPaperRow.delivery_id.in_(
                        select(DeliveryRow.id).where(DeliveryRow.subscriber_id == sub_id)
                    )
                )
            )
            s.execute(delete(DeliveryRow).where(DeliveryRow.subscriber_id == sub_id))
            s.execute(delete(SubscriberRow).where(SubscriberRow.id == sub_id))
            return True

    def plan_candidates(self, day: date, batch_size: int) -> Iterator[list[PlanCandidate]]:
        """Active subscribers in id order, a batch at a time, each with whether `day` is planned
        for them already and whether their address is suppressed: one indexed query a batch
        rather than three queries with thousands of parameters each."""
        planned = aliased(DeliveryRow)
        query = (
            select(
                *_SUBSCRIBER_COLUMNS,
                planned.id.is_not(None).label("is_planned"),
                SuppressionRow.email.is_not(None).label("is_suppressed"),
            )
            .outerjoin(
                planned,
                and_(planned.subscriber_id == SubscriberRow.id, planned.digest_date == day),
            )
            .outerjoin(SuppressionRow, SuppressionRow.email == SubscriberRow.email)
            .where(SubscriberRow.status == SubscriberStatus.ACTIVE)
            .order_by(SubscriberRow.id)
            .limit(batch_size)
        )
        last_id = 0
        while True:
            with self.connection() as c:
                rows = c.execute(query.where(SubscriberRow.id > last_id)).all()
            if not rows:
                return
            yield [
                PlanCandidate(_subscriber(row), bool(row.is_planned), bool(row.is_suppressed))
                for row in rows
            ]
            last_id = rows[-1].id

    # -- subscriptions from the web --------------------------------------------------------

    def subscriber_by_id(self, subscriber_id: int) -> SubscriberRecord | None:
        with self.session() as s:
            row = s.get(SubscriberRow, subscriber_id)
            return _subscriber(row) if row else None

    def sign_up(
        self, email: str, topics: Sequence[str], keywords: Sequence[str], cooldown_seconds: int
    ) -> tuple[SubscriberRecord, bool]:
        """Record a sign-up; return the subscriber and whether a confirmation mail may go out.

        New, pending and unsubscribed addresses become pending with the chosen interests; an
        active or paused subscriber's interests are left alone (a stranger must not change
        them). At most one mail per address per cooldown, decided by one conditional UPDATE
        so that concurrent sign-ups cannot both win.
        """
        now = utcnow()
        with self.session() as s:
            row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            if row is None:
                row = SubscriberRow(
                    email=email,
                    created_at=now,
                    bounce_count=0,
                    status=SubscriberStatus.PENDING,
                    frequency="daily",
                )
                s.add(row)
            if row.status in (SubscriberStatus.PENDING, SubscriberStatus.UNSUBSCRIBED):
                row.status = SubscriberStatus.PENDING
                row.topics = list(topics)
                row.keywords = list(keywords)
            s.flush()
            cutoff = now - timedelta(seconds=cooldown_seconds)
            claimed = s.execute(
                update(SubscriberRow)
                .where(
                    SubscriberRow.id == row.id,
                    or_(
                        SubscriberRow.confirm_sent_at.is_(None),
                        SubscriberRow.confirm_sent_at <= cutoff,
                    ),
                )
                .values(confirm_sent_at=now)
                .execution_options(synchronize_session=False)
            )
            return _subscriber(row), _changed(claimed)

    def release_confirmation(self, subscriber_id: int) -> None:
        with self.session() as s:
            s.execute(
                update(SubscriberRow)
                .where(SubscriberRow.id == subscriber_id)
                .values(confirm_sent_at=None)
            )

    def confirm(self, subscriber_id: int) -> SubscriberRecord | None:
        """Activate a pending subscriber; anyone else is returned unchanged."""
        with self.session() as s:
            row = s.get(SubscriberRow, subscriber_id)
            if row is None:
                return None
            if row.status == SubscriberStatus.PENDING:
                row.status = SubscriberStatus.ACTIVE
                row.confirmed_at = utcnow()
            return _subscriber(row)

    def update_preferences(
        self,
        subscriber_id: int,
        *,
        topics: Sequence[str],
        keywords: Sequence[str],
        frequency: str,
        paused: bool,
        schedule: tuple[str | None, int | None, int | None] | None = None,
    ) -> SubscriberRecord | None:
        """Save what a subscriber chose; `schedule` is (time zone, delivery hour, weekday)."""
        with self.session() as s:
            row = s.get(SubscriberRow, subscriber_id)
            if row is None:
                return None
            row.topics, row.keywords, row.frequency = list(topics), list(keywords), frequency
            if schedule is not None:
                row.timezone, row.delivery_hour, row.weekday = schedule
            if paused and row.status == SubscriberStatus.ACTIVE:
                row.status = SubscriberStatus.PAUSED
            elif not paused and row.status == SubscriberStatus.PAUSED:
                row.status = SubscriberStatus.ACTIVE
            return _subscriber(row)

    def unsubscribe(self, subscriber_id: int) -> SubscriberRecord | None:
        """Stop all mail now: the status is re-checked when any queued digest is claimed, and
        digests still waiting are closed here too so they never reach a sender."""
        now = utcnow()
        with self.session() as s:
            row = s.get(SubscriberRow, subscriber_id)
            if row is None:
                return None
            if row.status != SubscriberStatus.BOUNCED:
                row.status = SubscriberStatus.UNSUBSCRIBED
                row.unsubscribed_at = now
            waiting = list(
                s.scalars(
                    select(DeliveryRow.id).where(
                        DeliveryRow.subscriber_id == subscriber_id,
                        DeliveryRow.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.RETRY]),
                    )
                )
            )
            self._finish(s, waiting, DeliveryStatus.SKIPPED, SkipReason.UNSUBSCRIBED, release=True)
            return _subscriber(row)

    def resubscribe(self, subscriber_id: int) -> SubscriberRecord | None:
        with self.session() as s:
            row = s.get(SubscriberRow, subscriber_id)
            if row is None:
                return None
            if row.status == SubscriberStatus.UNSUBSCRIBED:
                row.status = SubscriberStatus.ACTIVE
                row.unsubscribed_at = None
            return _subscriber(row)

    def export_subscriber(self, subscriber_id: int) -> dict[str, Any] | None:
        """Everything stored about one subscriber, for "export my data"."""
        with self.session() as s:
            row = s.get(SubscriberRow, subscriber_id)
            if row is None:
                return None
            deliveries = s.execute(
                select(
                    DeliveryRow.digest_date,
                    DeliveryRow.status,
                    DeliveryRow.reason,
                    DeliveryRow.paper_ids,
                    DeliveryRow.sent_at,
                )
                .where(DeliveryRow.subscriber_id == subscriber_id)
                .order_by(DeliveryRow.digest_date)
            ).all()
            return {
                "email": row.email,
                "status": row.status,
                "topics": list(row.topics or []),
                "keywords": list(row.keywords or []),
                "frequency": row.frequency,
                "created_at": row.created_at.isoformat(),
                "confirmed_at": row.confirmed_at.isoformat() if row.confirmed_at else None,
                "deliveries": [
                    {
                        "date": d.isoformat(),
                        "status": st,
                        "reason": r,
                        "papers": list(p),
                        "sent_at": at.isoformat() if at else None,
                    }
                    for d, st, r, p, at in deliveries
                ],
            }

    def delete_subscriber_by_id(self, subscriber_id: int) -> bool:
        record = self.subscriber_by_id(subscriber_id)
        return record is not None and self.delete_subscriber(record.email)

    # -- planning -------------------------------------------------------------------------

    def start_run(self, day: date, paper_count: int) -> None:
        """Create `day`'s run row once; concurrent planners all find the same row."""
        with self.session() as s:
            s.execute(
                self._insert(DigestRunRow)
                .values(digest_date=day, created_at=utcnow(), paper_count=paper_count)
                .on_conflict_do_nothing(index_elements=["digest_date"])
            )

    def finish_run(self, day: date) -> None:
        with self.session() as s:
            s.execute(
                update(DigestRunRow)
                .where(DigestRunRow.digest_date == day, DigestRunRow.planned_at.is_(None))
                .values(planned_at=utcnow())
            )

    def run_planned(self, day: date) -> bool:
        with self.session() as s:
            return (
                s.scalar(select(DigestRunRow.planned_at).where(DigestRunRow.digest_date == day))
                is not None
            )

    def already_sent(
        self, subscriber_ids: Sequence[int], paper_ids: Sequence[str]
    ) -> dict[int, set[str]]:
        """Which of `paper_ids` each subscriber already got: one range scan per paper over the
        subscribers' ids (see _ALREADY_SENT), so the cost does not grow with their history."""
        sent: dict[int, set[str]] = {}
        if not subscriber_ids or not paper_ids:
            return sent
        wanted = set(subscriber_ids)
        with self.connection() as c:
            rows = c.execute(
                _ALREADY_SENT,
                {"papers": list(paper_ids), "first": min(wanted), "last": max(wanted)},
            )
            for subscriber_id, paper_id in rows:
                if subscriber_id in wanted:  # the id range may hold others
                    sent.setdefault(subscriber_id, set()).add(paper_id)
        return sent

    def add_deliveries(self, day: date, planned: Sequence[PlannedDelivery]) -> set[int]:
        """Insert the outbox rows and the sent log of their papers in one transaction; return
        the subscribers whose row this call created.

        A row that already exists (another planner, a re-run) is left alone, and so are its
        papers: the unique key, not this process, decides who planned a subscriber's day.
        """
        if not planned:
            return set()
        with self.session() as s:
            if self.dialect == "postgresql":
                inserted = self._insert_deliveries_json(s, day, utcnow(), planned)
            else:
                inserted = self._insert_deliveries_many(s, day, utcnow(), planned)
                self._reserve_papers(s, [delivery_id for delivery_id, _ in inserted])
            return {sub_id for _, sub_id in inserted}

    def _insert_deliveries_many(
        self, s: Session, day: date, now: datetime, planned: Sequence[PlannedDelivery]
    ) -> list[tuple[int, int]]:
        """One statement with a parameter list: SQLAlchemy batches it into multi-row INSERTs
        from a cached compilation. Inlining the rows with .values() would compile a new, huge
        statement for every batch, which cost more than all the rest of planning."""
        table = DeliveryRow.__table__
        statement = (
            self._insert(table)
            .on_conflict_do_nothing(index_elements=["subscriber_id", "digest_date"])
            .returning(table.c.id, table.c.subscriber_id)
        )
        values = [
            {
                "subscriber_id": p.subscriber_id,
                "digest_date": day,
                "status": p.status,
                "reason": p.reason,
                "message_id": p.message_id,
                "paper_ids": p.paper_ids,
                "next_attempt_at": p.due_at,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for p in planned
        ]
        return [(row[0], row[1]) for row in s.execute(statement, values)]

    @staticmethod
    def _insert_deliveries_json(
        s: Session, day: date, now: datetime, planned: Sequence[PlannedDelivery]
    ) -> list[tuple[int, int]]:
        """PostgreSQL: the batch as one JSON text, unpacked by the server. psycopg spends longer
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
        # The sent log is written in the same statement, from the rows just inserted: the
        # server expands each paper list, so no per-paper row is built or sent from here.
        result = s.execute(
            text(
                "WITH inserted AS ("
                "INSERT INTO deliveries (subscriber_id, digest_date, status, reason, message_id, "
                "paper_ids, next_attempt_at, attempts, created_at, updated_at) "
                "SELECT (r->>0)::integer, :day, r->>1, r->>2, r->>3, r->4, "
                "(r->>5)::timestamp, 0, :now, :now "
                "FROM json_array_elements(CAST(:rows AS json)) AS r "
                "ON CONFLICT (subscriber_id, digest_date) DO NOTHING "
                "RETURNING id, subscriber_id, status, paper_ids"
                "), reserved AS ("
                "INSERT INTO sent_papers (subscriber_id, paper_id, delivery_id) "
                "SELECT i.subscriber_id, p.paper_id, i.id FROM inserted AS i "
                "CROSS JOIN LATERAL json_array_elements_text(i.paper_ids) AS p(paper_id) "
                "WHERE i.status = :queued ON CONFLICT DO NOTHING"
                ") SELECT id, subscriber_id FROM inserted"
            ),
            {"day": day, "now": now, "rows": json.dumps(rows), "queued": DeliveryStatus.QUEUED},
        ).all()
        return [(row[0], row[1]) for row in result]

    @staticmethod
    def _reserve_papers(s: Session, delivery_ids: list[int]) -> None:
        """SQLite: write the sent log of the queued deliveries just inserted, expanding their
        paper lists in the database (json_each), skipping rows already there (a racing
        planner's). Building ten parameter rows a digest here cost more than the inserts."""
        if not delivery_ids:
            return
        s.execute(
            text(
                "INSERT INTO sent_papers (subscriber_id, paper_id, delivery_id) "
                "SELECT d.subscriber_id, p.value, d.id FROM deliveries AS d, "
                "json_each(d.paper_ids) AS p "
                "WHERE d.id IN (SELECT value FROM json_each(:ids)) AND d.status = :queued "
                "ON CONFLICT (paper_id, subscriber_id) DO NOTHING"
            ),
            {"ids": json.dumps(delivery_ids), "queued": DeliveryStatus.QUEUED},
        )

    def supersede_older(self, day: date) -> int:
        """Undelivered digests of earlier days give way to `day`'s: their papers go back into
        the pool, so the new digest can carry them."""
        with self.session() as s:
            ids = list(
                s.scalars(
                    select(DeliveryRow.id).where(
                        DeliveryRow.digest_date < day,
                        DeliveryRow.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.RETRY]),
                    )
                )
            )
            self._finish(s, ids, DeliveryStatus.SKIPPED, SkipReason.SUPERSEDED, release=True)
            return len(ids)

    # -- sending --------------------------------------------------------------------------

    def claim(self, limit: int, lease_seconds: int) -> list[ClaimedDelivery]:
        """Reserve up to `limit` due deliveries for this sender with a lease.

        Due means queued or retry whose time has come (the local delivery hour, the backoff),
        or sending whose lease expired (its sender died). On PostgreSQL, FOR UPDATE SKIP LOCKED
        lets many senders claim at once.
        """
        now = utcnow()
        claim = {
            "now": now,
            "limit": limit,
            "lease_until": now + timedelta(seconds=lease_seconds),
        }
        if self.dialect == "postgresql":
            with self.single_statement() as c:
                rows = c.execute(_CLAIM_AND_READ, claim).all()
        else:
            with self.connection() as c:
                ids = list(c.execute(_CLAIM_SQLITE, claim).scalars())
                rows = c.execute(_CLAIMED_ROWS, {"ids": ids}).all() if ids else []
        return [
            ClaimedDelivery(
                id=row.delivery_id,
                digest_date=row.digest_date,
                message_id=row.message_id,
                paper_ids=list(_strings(row.paper_ids)),
                attempts=row.attempts,
                subscriber=_subscriber(row),
            )
            for row in rows
        ]

    def suppressed(self, emails: Iterable[str]) -> set[str]:
        with self.session() as s:
            return set(
                s.scalars(
                    select(SuppressionRow.email).where(SuppressionRow.email.in_(list(emails)))
                )
            )

    def mark_sent(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self.single_statement() as c:
            c.execute(_MARK_SENT, {"ids": list(ids), "now": utcnow()})

    def release(self, ids: Sequence[int]) -> None:
        """Put claimed deliveries back untried (the run stopped first): the attempt is not
        counted against them."""
        if not ids:
            return
        with self.session() as s:
            s.execute(
                update(DeliveryRow)
                .where(DeliveryRow.id.in_(ids), DeliveryRow.status == DeliveryStatus.SENDING)
                .values(
                    status=DeliveryStatus.QUEUED,
                    lease_until=None,
                    attempts=DeliveryRow.attempts - 1,
                    updated_at=utcnow(),
                )
            )

    def mark_retry(self, retries: Sequence[tuple[int, datetime, str]]) -> None:
        now = utcnow()
        with self.session() as s:
            for delivery_id, when, error in retries:
                s.execute(
                    update(DeliveryRow)
                    .where(DeliveryRow.id == delivery_id)
                    .values(
                        status=DeliveryStatus.RETRY,
                        next_attempt_at=when,
                        lease_until=None,
                        last_error=error[:1000],
                        updated_at=now,
                    )
                )

    def mark_finished(
        self, ids: Sequence[int], status: DeliveryStatus, reason: str, error: str | None = None
    ) -> None:
        """Close deliveries that will not be sent (skipped or failed); their papers are
        released so a later digest may carry them."""
        with self.session() as s:
            self._finish(s, ids, status, reason, release=True, error=error)

    def _finish(
        self,
        s: Session,
        ids: Sequence[int],
        status: DeliveryStatus,
        reason: str,
        release: bool,
        error: str | None = None,
    ) -> None:
        if not ids:
            return
        s.execute(
            update(DeliveryRow)
            .where(DeliveryRow.id.in_(ids))
            .values(
                status=status,
                reason=reason,
                lease_until=None,
                updated_at=utcnow(),
                last_error=error[:1000] if error else None,
            )
        )
        if release:
            s.execute(delete(SentPaperRow).where(SentPaperRow.delivery_id.in_(ids)))

    def record_bounce(self, email: str, detail: str, limit: int) -> bool:
        """Count a hard bounce; suppress the address once it reaches `limit`. True if suppressed."""
        with self.session() as s:
            row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            count = 1
            if row is not None:
                row.bounce_count += 1
                count = row.bounce_count
                if count >= limit:
                    row.status = SubscriberStatus.BOUNCED
            if count >= limit:
                self._suppress(s, email, "bounced", detail)
                return True
            return False

    # -- suppressions ---------------------------------------------------------------------

    def _suppress(self, s: Session, email: str, reason: str, detail: str | None) -> None:
        s.execute(
            self._insert(SuppressionRow)
            .values(email=email, reason=reason, detail=detail, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["email"])
        )

    def suppress(self, email: str, reason: str, detail: str | None = None) -> None:
        with self.session() as s:
            self._suppress(s, email, reason, detail)

    def unsuppress(self, email: str) -> bool:
        with self.session() as s:
            return _changed(s.execute(delete(SuppressionRow).where(SuppressionRow.email == email)))

    def suppressions(self) -> list[SuppressionRow]:
        with self.session() as s:
            return list(s.scalars(select(SuppressionRow).order_by(SuppressionRow.created_at)))

    # -- reporting ------------------------------------------------------------------------

    def day_summary(self, day: date) -> DaySummary:
        with self.session() as s:
            rows = s.execute(
                select(DeliveryRow.status, DeliveryRow.reason, func.count())
                .where(DeliveryRow.digest_date == day)
                .group_by(DeliveryRow.status, DeliveryRow.reason)
            ).all()
            papers = (
                s.scalar(
                    select(func.count())
                    .select_from(SentPaperRow)
                    .join(DeliveryRow, DeliveryRow.id == SentPaperRow.delivery_id)
                    .where(
                        DeliveryRow.digest_date == day, DeliveryRow.status == DeliveryStatus.SENT
                    )
                )
                or 0
            )
        summary = DaySummary(day, Counter(), Counter(), Counter(), papers)
        for status, reason, count in rows:
            summary.by_status[status] += count
            if status == DeliveryStatus.SKIPPED:
                summary.skipped_by_reason[reason or "unknown"] += count
            elif status == DeliveryStatus.FAILED:
                summary.failed_by_reason[reason or "unknown"] += count
        return summary

    def metrics(self) -> dict[str, Any]:
        """Counters for the metrics endpoint, all read in one short transaction."""
        now = utcnow()
        with self.session() as s:
            by_state = s.execute(
                select(DeliveryRow.status, DeliveryRow.reason, func.count()).group_by(
                    DeliveryRow.status, DeliveryRow.reason
                )
            ).all()
            due_now = s.scalar(
                select(func.count()).where(
                    DeliveryRow.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.RETRY]),
                    or_(DeliveryRow.next_attempt_at.is_(None), DeliveryRow.next_attempt_at <= now),
                )
            )
            later = s.scalar(
                select(func.count()).where(
                    DeliveryRow.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.RETRY]),
                    DeliveryRow.next_attempt_at > now,
                )
            )
            last_run = s.execute(
                select(DigestRunRow.digest_date, DigestRunRow.created_at, DigestRunRow.planned_at)
                .order_by(DigestRunRow.digest_date.desc())
                .limit(1)
            ).first()
            sending = s.execute(
                select(func.min(DeliveryRow.created_at), func.max(DeliveryRow.sent_at)).where(
                    DeliveryRow.digest_date == (last_run[0] if last_run else None),
                    DeliveryRow.status == DeliveryStatus.SENT,
                )
            ).first()
        return {
            "deliveries": [(st, r or "", n) for st, r, n in by_state],
            "queue_due": due_now or 0,
            "queue_scheduled": later or 0,
            "last_run": last_run,
            "last_run_send_span": sending,
        }

    def undelivered(self, day: date) -> list[tuple[str, str, str | None, str | None, int]]:
        """Who did not get `day`'s digest and why: (email, status, reason, last error, attempts)."""
        with self.session() as s:
            rows = s.execute(
                select(
                    SubscriberRow.email,
                    DeliveryRow.status,
                    DeliveryRow.reason,
                    DeliveryRow.last_error,
                    DeliveryRow.attempts,
                )
                .join(SubscriberRow, SubscriberRow.id == DeliveryRow.subscriber_id)
                .where(DeliveryRow.digest_date == day, DeliveryRow.status != DeliveryStatus.SENT)
                .order_by(DeliveryRow.status, SubscriberRow.email)
            ).all()
            return [tuple(row) for row in rows]  # type: ignore[misc]

    def deliveries_for(self, email: str) -> list[tuple[date, str, str | None, list[str]]]:
        with self.session() as s:
            rows = s.execute(
                select(
                    DeliveryRow.digest_date,
                    DeliveryRow.status,
                    DeliveryRow.reason,
                    DeliveryRow.paper_ids,
                )
                .join(SubscriberRow, SubscriberRow.id == DeliveryRow.subscriber_id)
                .where(SubscriberRow.email == email)
                .order_by(DeliveryRow.digest_date)
            ).all()
            return [(d, st, r, list(p)) for d, st, r, p in rows]

    def delivery_for(self, subscriber_id: int, day: date) -> tuple[str, list[str]] | None:
        """(Message-ID, paper ids) of a planned digest, for previews and the web version."""
        with self.session() as s:
            row = s.execute(
                select(DeliveryRow.message_id, DeliveryRow.paper_ids).where(
                    DeliveryRow.subscriber_id == subscriber_id, DeliveryRow.digest_date == day
                )
            ).first()
            return (row[0], list(row[1])) if row else None

    # -- reliability ----------------------------------------------------------------------

    def next_due_at(self) -> datetime | None:
        """When the next delivery becomes claimable: a retry's time, or the expiry of a lease
        (a sender that died mid-run leaves its claims in `sending` until then)."""
        with self.session() as s:
            retry_at = s.scalar(
                select(func.min(DeliveryRow.next_attempt_at)).where(
                    DeliveryRow.status == DeliveryStatus.RETRY
                )
            )
            lease_until = s.scalar(
                select(func.min(DeliveryRow.lease_until)).where(
                    DeliveryRow.status == DeliveryStatus.SENDING
                )
            )
        times = [t for t in (retry_at, lease_until) if t is not None]
        return min(times) if times else None

    def add_subscribers(
        self, emails: Sequence[str], topics: Sequence[str] = (), keywords: Sequence[str] = ()
    ) -> int:
        """Add many confirmed subscribers with the same interests (imports, load and fault
        tests); addresses already present are left as they are. Returns how many were added."""
        return self.bulk_add_subscribers((email, topics, keywords) for email in emails)

    def bulk_add_subscribers(
        self, subscribers: Iterable[tuple[str, Sequence[str], Sequence[str]]], chunk: int = 5000
    ) -> int:
        """Insert many confirmed subscribers (email, topics, keywords) without per-row round
        trips; addresses already present are left alone. Returns how many were added."""
        now = utcnow()
        statement = (
            self._insert(SubscriberRow.__table__)
            .on_conflict_do_nothing(index_elements=["email"])
            .returning(SubscriberRow.__table__.c.id)
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
                "frequency": "daily",
            }
            for email, topics, keywords in subscribers
        )
        added = 0
        with self.session() as s:
            while batch := list(itertools.islice(rows, chunk)):
                added += len(s.execute(statement, batch).all())
        return added

    def bulk_add_history(
        self, day: date, history: Iterable[tuple[int, Sequence[str]]], chunk: int = 2000
    ) -> int:
        """Record past deliveries in bulk: for each (subscriber id, paper ids), one sent delivery
        dated `day` carrying those papers in the sent log (the table the diff reads). For load
        tests and benchmarks; PostgreSQL gets the rows by COPY. Returns the sent-log rows added."""
        now = utcnow()
        rows = 0
        pending: list[tuple[int, Sequence[str]]] = []

        def flush() -> None:
            nonlocal rows
            if not pending:
                return
            with self.session() as s:
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
                    (sub_id, paper_id, ids[sub_id])
                    for sub_id, papers in pending
                    for paper_id in papers
                ]
                dbapi = s.connection().connection.dbapi_connection
                assert dbapi is not None
                cursor = dbapi.cursor()
                if self.dialect == "postgresql":
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

    def delivery_states(self, day: date) -> dict[str, tuple[str, str | None]]:
        """Every subscriber's delivery for `day`: email -> (status, reason)."""
        with self.session() as s:
            rows = s.execute(
                select(SubscriberRow.email, DeliveryRow.status, DeliveryRow.reason)
                .join(SubscriberRow, SubscriberRow.id == DeliveryRow.subscriber_id)
                .where(DeliveryRow.digest_date == day)
            ).all()
            return {email: (status, reason) for email, status, reason in rows}


def _changed(result: Result[Any]) -> bool:
    """Whether an UPDATE or DELETE touched a row (their results are CursorResults)."""
    return bool(cast("CursorResult[Any]", result).rowcount)


def _merge_paper(row: PaperRow, paper: Paper, now: datetime) -> None:
    """Fold a fresh copy of a paper into its stored row.

    Sources differ in what they know (arXiv has no upvotes, older HF days lack AI summaries), so
    a field only changes when the new copy has a value; engagement only goes up, since a later
    listing of the same paper reports the newer count.
    """
    row.title = paper.title
    row.abstract = paper.abstract or row.abstract or ""
    if paper.authors:
        row.authors = paper.authors
        row.author_count = paper.author_count
    row.author_count = row.author_count or paper.author_count
    row.organization = paper.organization or row.organization
    row.upvotes = max(row.upvotes or 0, paper.upvotes)
    row.comments = max(row.comments or 0, paper.comments)
    row.ai_summary = paper.ai_summary or row.ai_summary
    row.ai_keywords = paper.ai_keywords or row.ai_keywords or []
    row.github_repo = paper.github_repo or row.github_repo
    row.github_stars = paper.github_stars if paper.github_stars is not None else row.github_stars
    row.project_page = paper.project_page or row.project_page
    row.published_on = paper.published_on or row.published_on
    row.categories = list(dict.fromkeys([*(row.categories or []), *paper.categories]))
    row.updated_at = now

"""The database one Store talks to: its transactions, and what differs between SQLite and
PostgreSQL outside the SQL text, chosen once per Store.

Each part of the store (papers, subscribers, ...) is handed this object, not the Store, so the
parts do not depend on the root that holds them. The outbox keeps its per-database statements
together in outbox.py; everything else that depends on the database (the INSERT flavour with
ON CONFLICT, single-statement transactions, how senders exclude each other) is here, so no
other module asks which database it runs on.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from newsletter.errors import SenderBusy
from newsletter.store.engine import make_engine, translated_errors


class Backend:
    """The SQLite behaviour; PostgresBackend overrides what differs."""

    name = "sqlite"

    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

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

    def insert(self, table: Any) -> Any:
        """An INSERT that offers ON CONFLICT (the generic one does not)."""
        return sqlite_insert(table)

    @contextmanager
    def single_statement(self) -> Iterator[Connection]:
        """SQLite takes its write lock in a BEGIN (see engine.py), so one statement still runs
        in a transaction of its own."""
        with self.connection() as connection:
            yield connection

    @contextmanager
    def exclusive_sender(self) -> Iterator[None]:
        """Only one sender may run at a time (the file has one writer), enforced with a lock
        file the kernel releases if the process dies."""
        database = self.engine.url.database
        if not database:
            yield
            return
        with Path(f"{database}.sender.lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SenderBusy(
                    f"another sender is already running on {database}; "
                    "SQLite allows one at a time (use PostgreSQL to run several)"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def close(self) -> None:
        self.engine.dispose()


class PostgresBackend(Backend):
    name = "postgresql"

    def __init__(self, url: str, engine: Engine) -> None:
        super().__init__(url, engine)
        self._autocommit_engine: Engine | None = None  # see single_statement

    def insert(self, table: Any) -> Any:
        return pg_insert(table)

    @contextmanager
    def single_statement(self) -> Iterator[Connection]:
        """Autocommit mode, sparing the BEGIN and COMMIT round trips, which cost a sender as
        much Python as the statement."""
        if self._autocommit_engine is None:
            # Its own pool, without the ping before each use (another round trip): the
            # sender retries a statement that meets a dead connection (DeliveryLoop._retrying).
            self._autocommit_engine = make_engine(self.url, pre_ping=False).execution_options(
                isolation_level="AUTOCOMMIT"
            )
        with translated_errors(self.url), self._autocommit_engine.connect() as connection:
            yield connection

    @contextmanager
    def exclusive_sender(self) -> Iterator[None]:
        """Senders coordinate through FOR UPDATE SKIP LOCKED and leases, so any number may
        run."""
        yield

    def close(self) -> None:
        super().close()
        if self._autocommit_engine is not None:
            self._autocommit_engine.dispose()


def backend_for(url: str, engine: Engine) -> Backend:
    kind = PostgresBackend if engine.dialect.name == "postgresql" else Backend
    return kind(url, engine)

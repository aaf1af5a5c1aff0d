"""The database one Store talks to: its transactions, and what differs between SQLite and
PostgreSQL outside the SQL text, chosen once per Store.

Each part of the store (papers, subscribers, ...) is handed this object, not the Store, so the
parts do not depend on the root that holds them. The outbox keeps its per-database statements
together in outbox.py; everything else that depends on the database (the INSERT flavour with
ON CONFLICT, single-statement transactions, how senders exclude each other) is here, so no
other module asks which database it runs on.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from newsletter.clock import utcnow
from newsletter.errors import SenderBusy, StoreUnavailable
from newsletter.store.engine import make_engine, normalise_url, translated_errors

log = logging.getLogger(__name__)

# The advisory-lock class (the first of pg_advisory_lock's two keys) of sender ids, so they
# cannot collide with another application's advisory locks on the same database: "nwsl".
SENDER_LOCK_CLASS = 0x6E77736C
# Senders alive now: those whose lock on their id is held, in this database.
LIVE_SENDERS = (
    "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted "
    f"AND classid = {SENDER_LOCK_CLASS} AND objsubid = 2 "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


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
    def exclusive_sender(self) -> Iterator[bool]:
        """Only one sender may run at a time (the file has one writer), enforced with a lock
        file the kernel releases if the process dies.

        Yields True: whoever holds the lock knows that no other sender lives, so every lease
        it did not take itself is a dead sender's (PostgresBackend yields False).
        """
        database = self.engine.url.database
        if not database or database == ":memory:":
            yield True
            return
        with Path(f"{database}.sender.lock").open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SenderBusy(
                    f"another sender is already running on {database}; "
                    "SQLite allows one at a time (use PostgreSQL to run several)"
                ) from None
            try:
                # Who holds it, for `status` (which must not take the lock to find out: a
                # sender starting at that moment would be refused).
                handle.truncate(0)
                handle.write(str(os.getpid()))
                handle.flush()
                yield True
            finally:
                handle.truncate(0)
                fcntl.flock(handle, fcntl.LOCK_UN)

    def running_sender(self) -> int | None:
        """The process id of the sender holding the lock, if one is alive."""
        database = self.engine.url.database
        try:
            pid = int(Path(f"{database}.sender.lock").read_text().strip() or 0)
        except (OSError, ValueError):
            return None
        if pid <= 0:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # killed while holding it: the kernel freed the lock, not the file
        except PermissionError:
            pass  # alive, another user's
        return pid

    def sender_owner(self) -> int | None:
        """The id that this process's leases carry: none on SQLite, where the lock file
        already says that no other sender lives."""
        return None

    @property
    def registered_owner(self) -> int | None:
        """This process's sender id if it registered as one, without registering."""
        return None

    def close(self) -> None:
        self.engine.dispose()


class PostgresBackend(Backend):
    name = "postgresql"

    def __init__(self, url: str, engine: Engine) -> None:
        super().__init__(url, engine)
        self._autocommit_engine: Engine | None = None  # see single_statement
        # This process as a sender (see sender_owner): its id, and the connection whose
        # session holds the advisory lock on it.
        self._owner: int | None = None
        self._owner_connection: Connection | None = None
        self._owner_checked = 0.0

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
    def exclusive_sender(self) -> Iterator[bool]:
        """Senders coordinate through FOR UPDATE SKIP LOCKED and leases, so any number may
        run; which of them are alive, their advisory locks say (sender_owner)."""
        yield False

    def running_sender(self) -> int | None:
        return None

    def sender_owner(self) -> int | None:
        """Register this process as a sender, once: a `senders` row, and a session-level
        advisory lock on its id, held on a connection of its own for the process's life.

        The lock dies with the connection, so with the process however it ends (kill -9
        included), and other senders then take over its leases at once (outbox_sql). The
        connection is checked at most once a second; if it was lost, the lock went with it,
        and this process registers again under a new id.
        """
        if self._owner is not None:
            if time.monotonic() - self._owner_checked < 1.0:
                return self._owner
            try:
                assert self._owner_connection is not None
                self._owner_connection.execute(text("SELECT 1"))
                self._owner_checked = time.monotonic()
                return self._owner
            except Exception as exc:  # any failure: the session, and so the lock, is gone
                log.warning(
                    "sender %d lost its lock connection (%s): registering again", self._owner, exc
                )
                self._drop_owner()
        with translated_errors(self.url):
            engine = create_engine(
                normalise_url(self.url), poolclass=NullPool, isolation_level="AUTOCOMMIT"
            )
            connection = engine.connect()
            try:
                # One statement: the row is never visible without its lock held, so the
                # clean-up of gone senders' rows (the DELETE) cannot take a live one.
                owner, locked = connection.execute(
                    text(
                        "WITH gone AS (DELETE FROM senders WHERE id NOT IN ("
                        f"{LIVE_SENDERS})), me AS (INSERT INTO senders (pid, host, started_at) "
                        "VALUES (:pid, :host, :now) RETURNING id) "
                        f"SELECT id, pg_try_advisory_lock({SENDER_LOCK_CLASS}, id) FROM me"
                    ),
                    {"pid": os.getpid(), "host": socket.gethostname()[:255], "now": utcnow()},
                ).one()
            except BaseException:
                connection.close()
                raise
        if not locked:  # a fresh id nobody else knows: cannot happen unless ids were reused
            connection.close()
            raise StoreUnavailable(f"sender id {owner} is locked by another session")
        self._owner, self._owner_connection = owner, connection
        self._owner_checked = time.monotonic()
        return owner

    @property
    def registered_owner(self) -> int | None:
        return self._owner

    def _drop_owner(self) -> None:
        connection, self._owner, self._owner_connection = self._owner_connection, None, None
        if connection is not None:
            # Already broken, perhaps: closing it is all that was left to do.
            with contextlib.suppress(Exception):
                connection.close()

    def close(self) -> None:
        if self._owner is not None and self._owner_connection is not None:
            with contextlib.suppress(Exception):  # the lock dies with the connection anyway
                self._owner_connection.execute(
                    text("DELETE FROM senders WHERE id = :id"), {"id": self._owner}
                )
        self._drop_owner()
        super().close()
        if self._autocommit_engine is not None:
            self._autocommit_engine.dispose()


def backend_for(url: str, engine: Engine) -> Backend:
    kind = PostgresBackend if engine.dialect.name == "postgresql" else Backend
    return kind(url, engine)

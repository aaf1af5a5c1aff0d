"""Creating engines for the two supported databases, and translating their failures."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, NoSuchTableError, OperationalError

from newsletter.errors import StoreUnavailable


def normalise_url(url: str) -> str:
    """Pick the driver for plain `postgresql://` URLs, so operators need not know it."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def redacted(url: str) -> str:
    return make_url(normalise_url(url)).render_as_string(hide_password=True)


def make_engine(url: str, *, pre_ping: bool = True) -> Engine:
    """`pre_ping` tests each pooled PostgreSQL connection before use (a round trip), so a
    request after a database restart does not fail; a caller that retries failed statements
    itself can do without it."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _begin_immediate)
        return engine
    return create_engine(url, pool_pre_ping=pre_ping, pool_size=5, max_overflow=5)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, say when transactions begin (see below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets readers (the web app, `status`) run while a sender writes; busy_timeout makes a
    # briefly locked file a wait rather than an error.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _begin_immediate(connection: Any) -> None:
    """Take the write lock when a transaction starts. A deferred transaction that reads and then
    writes fails at once with "database is locked" when another one did the same (neither can
    upgrade its lock); taking it up front makes the second wait its turn (busy_timeout)."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")


@contextlib.contextmanager
def translated_errors(url: str) -> Iterator[None]:
    """Turn driver errors that mean "the database is not there" into one StoreUnavailable line."""
    try:
        yield
    except NoSuchTableError as exc:
        raise StoreUnavailable(
            f"database {redacted(url)} is not initialised; run `newsletter init`"
        ) from exc
    except DBAPIError as exc:
        lines = str(exc.orig).strip().splitlines()
        detail = lines[0] if lines else type(exc.orig).__name__
        if "no such table" in detail or ("relation" in detail and "does not exist" in detail):
            raise StoreUnavailable(
                f"database {redacted(url)} is not initialised ({detail}); run `newsletter init`"
            ) from exc
        if isinstance(exc, OperationalError) or exc.connection_invalidated:
            raise StoreUnavailable(f"database {redacted(url)} unavailable: {detail}") from exc
        raise

"""The Store: the root that opens the database and holds one object per concern."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from newsletter.store.backend import Backend, backend_for
from newsletter.store.engine import make_engine, translated_errors
from newsletter.store.outbox import Outbox
from newsletter.store.papers import Papers
from newsletter.store.relevance import Relevance
from newsletter.store.reports import Reports
from newsletter.store.subscribers import Subscribers
from newsletter.store.suppressions import Suppressions

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class Store:
    """Every query the newsletter runs, on SQLite or PostgreSQL, by concern: `papers`,
    `subscribers`, `suppressions`, `outbox` (planning and sending) and `reports`."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or make_engine(url)
        self.backend: Backend = backend_for(url, self.engine)
        self.papers = Papers(self.backend)
        self.subscribers = Subscribers(self.backend)
        self.suppressions = Suppressions(self.backend)
        self.outbox = Outbox(self.backend, self.suppressions)
        self.reports = Reports(self.backend)
        self.relevance = Relevance(self.backend)

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self.backend.name

    def close(self) -> None:
        self.backend.close()

    def session(self) -> AbstractContextManager[Session]:
        """A transaction; database failures leave as StoreUnavailable with one clear line."""
        return self.backend.session()

    def connection(self) -> AbstractContextManager[Connection]:
        """A transaction on a plain connection."""
        return self.backend.connection()

    def upgrade(self, revision: str = "head") -> None:
        """Create or upgrade the schema to the newest migration (or to `revision`)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with translated_errors(self.url), self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

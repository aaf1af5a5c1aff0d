"""Schema migrations keep existing data: upgrading a database made by an earlier release."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable
from datetime import date, datetime

from sqlalchemy import inspect, text

from newsletter.config import Settings
from newsletter.root import Newsletter
from newsletter.store import Store
from newsletter.store.database import MIGRATIONS
from tests.conftest import TEST_SECRET


def downgrade(store: Store, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def test_0004_keys_the_sent_log_by_paper_without_foreign_keys_and_keeps_its_rows(
    database_url: str,
) -> None:
    store = Store(database_url)
    try:
        store.upgrade("0003")
        assert len(inspect(store.engine).get_foreign_keys("sent_papers")) == 2
        now = datetime(2026, 2, 13, 7, 0)
        with store.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO subscribers (id, email, status, topics, keywords, created_at, "
                    "bounce_count, frequency) VALUES (1, 'ada@example.org', 'active', '[]', "
                    "'[]', :now, 0, 'daily')"
                ),
                {"now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO deliveries (id, subscriber_id, digest_date, status, message_id, "
                    "paper_ids, attempts, created_at, updated_at) VALUES (7, 1, :day, 'sent', "
                    "'<m@x>', '[\"2602.00001\"]', 1, :now, :now)"
                ),
                {"day": date(2026, 2, 13), "now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO sent_papers (subscriber_id, paper_id, delivery_id) "
                    "VALUES (1, '2602.00001', 7)"
                )
            )

        store.upgrade()

        assert inspect(store.engine).get_foreign_keys("sent_papers") == []
        primary_key = inspect(store.engine).get_pk_constraint("sent_papers")
        assert primary_key["constrained_columns"] == ["paper_id", "subscriber_id"]
        assert "ix_sent_papers_delivery_id" in {
            index["name"] for index in inspect(store.engine).get_indexes("sent_papers")
        }
        assert store.outbox.already_sent([1], ["2602.00001", "2602.00002"]) == {1: {"2602.00001"}}
        downgrade(store, "0003")
        assert len(inspect(store.engine).get_foreign_keys("sent_papers")) == 2
        # The rows survive the downgrade (read as SQL: today's queries expect today's schema).
        with store.engine.connect() as conn:
            rows = conn.execute(text("SELECT subscriber_id, paper_id FROM sent_papers")).all()
        assert [tuple(row) for row in rows] == [(1, "2602.00001")]
        store.upgrade()
        # Deleting a subscriber still takes their sent log with them, now without a cascade.
        assert store.subscribers.delete("ada@example.org")
        with store.engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM sent_papers")) == 0
    finally:
        store.close()


def test_0005_keeps_subscribers_and_deliveries_salts_each_row_and_never_reuses_ids(
    database_url: str,
) -> None:
    store = Store(database_url)
    try:
        store.upgrade("0004")
        now = datetime(2026, 2, 13, 7, 0)
        with store.engine.begin() as conn:
            for email in ("ada@example.org", "bob@example.org"):  # ids 1 and 2
                conn.execute(
                    text(
                        "INSERT INTO subscribers (email, status, topics, keywords, "
                        "created_at, bounce_count, frequency) VALUES (:email, 'active', "
                        "'[\"agents\"]', '[]', :now, 0, 'daily')"
                    ),
                    {"email": email, "now": now},
                )
            conn.execute(
                text(
                    "INSERT INTO deliveries (id, subscriber_id, digest_date, status, message_id, "
                    "paper_ids, attempts, created_at, updated_at) VALUES (7, 2, :day, 'sent', "
                    "'<m@x>', '[\"2602.00001\"]', 1, :now, :now)"
                ),
                {"day": date(2026, 2, 13), "now": now},
            )

        store.upgrade("0005")

        kept = store.subscribers.all()
        assert [(s.id, s.email, s.topics) for s in kept] == [
            (1, "ada@example.org", ("agents",)),
            (2, "bob@example.org", ("agents",)),
        ]
        salts = {s.token_salt for s in kept}
        assert len(salts) == 2 and all(len(salt) >= 16 for salt in salts)
        with store.engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM deliveries")) == 1
        assert store.subscribers.delete("bob@example.org")
        again = store.subscribers.upsert("carol@example.org", [], [])
        assert again.id == 3  # not bob's 2
        downgrade(store, "0004")
        with store.engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM subscribers")) == 2
    finally:
        store.close()


def test_0005_keeps_old_unsubscribe_links_of_existing_rows_working_and_nothing_else(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    store = Store(database_url)
    try:
        store.upgrade("0004")
        with store.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO subscribers (email, status, topics, keywords, created_at, "
                    "bounce_count, frequency) VALUES ('ada@example.org', 'active', '[]', '[]', "
                    ":now, 0, 'daily')"
                ),
                {"now": datetime(2026, 2, 13, 7, 0)},
            )
    finally:
        store.close()
    app = Newsletter(make_settings(database_url=database_url))
    try:
        app.store.upgrade()
        ada = app.store.subscribers.by_email("ada@example.org")
        newcomer = app.store.subscribers.upsert("bob@example.org", [], [])
        assert ada is not None

        def unsalted(purpose: str, subscriber_id: int) -> str:
            # How every link was signed before 0005.
            mac = hmac.new(TEST_SECRET.encode(), f"{purpose}:{subscriber_id}".encode(), "sha256")
            return base64.urlsafe_b64encode(mac.digest()[:18]).decode()

        subscriptions = app.subscriptions
        assert subscriptions.signed("unsubscribe", ada.id, unsalted("unsubscribe", ada.id))
        assert not subscriptions.signed("preferences", ada.id, unsalted("preferences", ada.id))
        assert not subscriptions.signed(
            "unsubscribe", newcomer.id, unsalted("unsubscribe", newcomer.id)
        )
        salted = app.links.unsubscribe_token(ada.id, ada.token_salt)
        assert subscriptions.signed("unsubscribe", ada.id, salted)
    finally:
        app.close()

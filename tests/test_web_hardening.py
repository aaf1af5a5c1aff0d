"""What a hostile visitor tries, over real HTTP against the real app, with mail read at a real
SMTP server: reused ids and their old links, +tag bombing, malformed and oversized requests,
forged Host headers, operations data and third-party loads."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import date

import httpx
import pytest
from sqlalchemy import text

from newsletter.capture import CaptureServer
from newsletter.config import Settings
from newsletter.pipeline import Newsletter
from newsletter.web import create_app
from tests.test_web_http import Site, form_token, link_in, sign_up
from tests.web_server import free_port, serve


@pytest.fixture
def web(
    make_settings: Callable[..., Settings], smtp_server: CaptureServer, database_url: str
) -> Iterator[Site]:
    """The app on SQLite and on PostgreSQL."""
    port = free_port()
    settings = make_settings(
        base_url=f"http://127.0.0.1:{port}",
        smtp_port=smtp_server.port,
        confirm_cooldown_seconds=600,
        database_url=database_url,
    )
    newsletter = Newsletter(settings)
    newsletter.store.upgrade()
    with serve(create_app(settings), port) as base, httpx.Client(base_url=base) as client:
        yield Site(base, smtp_server, newsletter, client)
    newsletter.close()


def confirm_over_http(web: Site, email: str, mails_before: int) -> tuple[str, str]:
    """Sign up and confirm; the confirmation token and the preferences URL it leads to."""
    sign_up(web.client, email)
    mail = web.wait_for_mail(mails_before + 1)[mails_before]
    url = link_in(mail, r"https?://\S+/confirm/\S+")
    page = web.client.get(url)
    done = web.client.post(url, data={"csrf_token": form_token(page.text)}, follow_redirects=False)
    assert done.status_code == 303
    return url.rsplit("/", 1)[1], done.headers["location"].split("?")[0]


def test_a_deleted_subscribers_id_is_never_reused_and_their_links_open_no_one_else(
    web: Site,
) -> None:
    token, preferences = confirm_over_http(web, "mallory@example.org", 0)
    old = web.newsletter.store.subscribers.by_email("mallory@example.org")
    assert old is not None
    unsubscribe = web.newsletter.links.unsubscribe(old.id, old.token_salt)
    view = web.newsletter.links.view(old.id, old.token_salt, date(2026, 3, 2))
    page = web.client.get(preferences)
    web.client.post(f"{preferences}/delete", data={"csrf_token": form_token(page.text)})
    assert web.newsletter.store.subscribers.by_email("mallory@example.org") is None

    sign_up(web.client, "victim@example.org")
    web.wait_for_mail(2)
    victim = web.newsletter.store.subscribers.by_email("victim@example.org")
    assert victim is not None and victim.id > old.id

    # Should an id ever come back (a restored backup, a reset sequence), the old links still
    # match nobody: they were signed over the deleted row's salt.
    with web.newsletter.store.engine.begin() as conn:
        conn.execute(
            text("UPDATE subscribers SET id = :old WHERE id = :new"),
            {"old": old.id, "new": victim.id},
        )
    reborn = web.newsletter.store.subscribers.by_email("victim@example.org")
    assert reborn is not None and reborn.id == old.id and reborn.token_salt != old.token_salt
    assert web.client.post("/api/confirm", json={"token": token}).status_code == 400
    page = web.client.get(f"/confirm/{token}")
    assert page.status_code == 400
    assert web.client.get(preferences).status_code == 404
    assert web.client.get(preferences.replace(web.base, "/api")).status_code == 404
    assert web.client.get(f"{preferences}/export").status_code == 404
    assert httpx.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}).status_code == 404
    assert web.client.get(view.replace(web.base, "")).status_code == 404
    after = web.newsletter.store.subscribers.by_email("victim@example.org")
    assert after is not None and after.status == "pending"


def test_one_confirmation_per_mailbox_whatever_the_tag_or_case(web: Site) -> None:
    for address in (
        "victim+1@example.org",
        "victim+2@example.org",
        "VICTIM@example.org",
        "Victim+news@Example.org",
    ):
        assert sign_up(httpx.Client(base_url=web.base), address).status_code == 200
    sign_up(web.client, "someone.else@example.org")
    time.sleep(1.0)
    web.wait_for_mail(3, timeout=1)
    recipients = sorted(m.recipients[0].lower() for m in web.smtp.messages)
    assert len(recipients) == 2, recipients
    assert "someone.else@example.org" in recipients
    assert re.fullmatch(
        r"victim(\+\w+)?@example\.org", next(r for r in recipients if "victim" in r)
    )

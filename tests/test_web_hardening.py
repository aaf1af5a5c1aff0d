"""What a hostile visitor tries, over real HTTP against the real app, with mail read at a real
SMTP server: reused ids and their old links, +tag bombing, malformed and oversized requests,
forged Host headers, operations data and third-party loads."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import date
from html.parser import HTMLParser

import httpx
import pytest
from sqlalchemy import text

from newsletter.capture import CaptureServer
from newsletter.config import Settings
from newsletter.root import Newsletter
from newsletter.web import create_app
from tests.test_web_http import DAY_ONE, Site, form_token, link_in, sign_up
from tests.test_web_http import site as site
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


def test_malformed_tokens_and_bodies_get_a_clear_4xx_that_echoes_nothing(site: Site) -> None:
    client = site.client
    for token in ("١٢٣.١٧٠٠٠٠٠٠٠٠.abc", "9" * 5000 + ".1.abc", "1." + "9" * 5000 + ".abc"):
        page = client.get(f"/confirm/{token}")
        assert page.status_code == 400 and "expired" in page.text
    assert client.post("/api/confirm", json={"token": "١.١.x"}).status_code == 400
    assert client.get("/preferences/99999999999999999999/x").status_code == 404
    assert client.get("/api/preferences/" + "9" * 5000 + "/x").status_code == 422
    json_type = {"content-type": "application/json"}
    for raw in (
        b'{"email": NaN}',
        b'{"email": "a@example.org", "topics": [Infinity]}',
        b'{"email": "a@example.org", "keywords": [1e999]}',
        b'{"email": "\\ud800@example.org"}',
        b'{"email": ',
    ):
        answer = client.post("/api/subscribe", content=raw, headers=json_type)
        assert answer.status_code == 400, (raw, answer.text)
        assert "ud800" not in answer.text and "NaN" not in answer.text
    huge = client.post("/api/subscribe", json={"email": "a" * 1_000_000 + "@example.org"})
    assert huge.status_code == 413 and len(huge.content) < 200
    long = client.post("/api/subscribe", json={"email": "b" * 300 + "@example.org"})
    assert long.status_code == 422 and "bbbb" not in long.text
    assert long.json()["detail"][0]["field"] == "email"
    wrong = client.post("/api/subscribe", json={"email": {"secret": "s3cr3t"}})
    assert wrong.status_code == 422 and "s3cr3t" not in wrong.text


def test_no_redirect_or_page_is_built_from_the_host_header(site: Site) -> None:
    forged = {"host": "evil.test"}
    for path in ("/archive/", "/healthz/", "/metrics/", "/api/docs/", "/archive", "/"):
        answer = site.client.get(path, headers=forged, follow_redirects=False)
        assert "evil.test" not in answer.text
        assert "evil.test" not in " ".join(answer.headers.values()), (path, answer.headers)
        if answer.is_redirect:
            assert answer.headers["location"].startswith("/") and not answer.headers[
                "location"
            ].startswith("//")
    assert site.client.get("/archive/", follow_redirects=False).headers["location"] == "/archive"


def test_metrics_need_the_token_health_names_nothing_and_docs_load_no_cdn(
    make_settings: Callable[..., Settings], tmp_path: object
) -> None:
    port = free_port()
    settings = make_settings(base_url=f"http://127.0.0.1:{port}", metrics_token="t0ken-x")
    Newsletter(settings).store.upgrade()
    with serve(create_app(settings), port) as base, httpx.Client(base_url=base) as client:
        assert client.get("/metrics").status_code == 401
        bad = {"authorization": "Bearer t0ken-y"}
        assert client.get("/metrics", headers=bad).status_code == 401
        good = client.get("/metrics", headers={"authorization": "Bearer t0ken-x"})
        assert good.status_code == 200 and "newsletter_deliveries" in good.text
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/api/docs").status_code == 404
        assert "/api/subscribe" in client.get("/api/openapi.json").json()["paths"]
    open_settings = make_settings(
        base_url=f"http://127.0.0.1:{port}", database_url=f"sqlite:///{tmp_path}/gone/x.db"
    )
    with serve(create_app(open_settings), port) as base:
        assert httpx.get(f"{base}/metrics").status_code == 404  # no token: no endpoint
        health = httpx.get(f"{base}/healthz")
        assert health.status_code == 503 and health.json() == {"status": "unavailable"}


class Loads(HTMLParser):
    """Every URL a page makes the browser fetch by itself (not the links a reader clicks)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "link":
            self.urls.append(values.get("href", ""))
        for name in ("src", "srcset", "poster", "background", "data"):
            if name in values and tag != "a":
                self.urls.append(values[name])
        self.urls += re.findall(r"url\(([^)]*)\)", values.get("style", ""))

    def handle_data(self, data: str) -> None:
        self.urls += re.findall(r"@import\s+(?:url\()?['\"]?([^'\");]+)", data)
        self.urls += re.findall(r"url\(([^)]*)\)", data)


def third_party_loads(html: str, base: str) -> list[str]:
    parser = Loads()
    parser.feed(html)
    found = [u.strip("'\" ") for u in parser.urls]
    return [u for u in found if re.match(r"(https?:)?//", u) and not u.startswith(base)]


def test_the_digest_and_every_page_load_nothing_from_a_third_party(
    site: Site, tmp_path: object
) -> None:
    record = site.newsletter.store.subscribers.upsert("looker@example.org", [], [])
    site.publish(DAY_ONE, tmp_path)
    digest = site.wait_for_mail(1)[0].parsed().get_body(preferencelist=("html",))
    assert digest is not None
    html = digest.get_content()
    assert "fonts.googleapis" not in html and "@import" not in html
    assert third_party_loads(html, site.base) == []
    links = site.newsletter.links
    pages = [
        "/",
        "/archive",
        f"/archive/{DAY_ONE}",
        links.preferences(record.id, record.token_salt),
        links.unsubscribe(record.id, record.token_salt),
        links.view(record.id, record.token_salt, DAY_ONE),
        "/confirm/1.1.x",
    ]
    for page in pages:
        answer = site.client.get(page.replace(site.base, ""))
        assert answer.status_code in (200, 400), page
        assert third_party_loads(answer.text, site.base) == [], page

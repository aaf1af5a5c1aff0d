"""The subscriber journey over plain HTTP against the real app, with mail read at a real SMTP
server: sign up, confirm, receive, unsubscribe with one click; and the abuse protections."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date

import httpx
import pytest

from newsletter.capture import CapturedMessage, CaptureServer
from newsletter.config import Settings
from newsletter.root import Newsletter
from newsletter.states import SubscriberStatus
from newsletter.web import create_app
from tests.fixtures import shapes
from tests.web_server import free_port, serve

# Two days of papers this suite made up (not the bundled sample), overlapping by one paper.
DAY_ONE, DAY_TWO = date(2026, 3, 2), date(2026, 3, 3)


def item(paper_id: str, title: str, upvotes: int, listed: date) -> dict[str, object]:
    return {
        "paper": {
            "id": paper_id,
            "title": title,
            "summary": f"{title}. An abstract.",
            "authors": [{"name": "Ann Author"}],
            "upvotes": upvotes,
        },
        "publishedAt": f"{listed}T06:00:00.000Z",
        "numComments": 1,
    }


DAYS = {
    DAY_ONE: [
        item("2603.01001", "A Compiler for Sparse Tensors", 40, DAY_ONE),
        item("2603.01002", "Diffusion Models Dream of Sheep", 30, DAY_ONE),
        item("2603.01003", "Quantization-Aware Training at Scale", 20, DAY_ONE),
    ],
    DAY_TWO: [
        item("2603.01003", "Quantization-Aware Training at Scale", 25, DAY_TWO),
        item("2603.02001", "Compilers Meet Large Language Models", 50, DAY_TWO),
        item("2603.02002", "Robots That Start Over", 10, DAY_TWO),
    ],
}


@dataclass
class Site:
    base: str
    smtp: CaptureServer
    newsletter: Newsletter
    client: httpx.Client

    def wait_for_mail(self, count: int, timeout: float = 10) -> list[CapturedMessage]:
        deadline = time.monotonic() + timeout
        while len(self.smtp.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.smtp.messages

    def publish(self, day: date, tmp_path: object) -> None:
        path = f"{tmp_path}/{day}.json"
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(DAYS[day], handle)
        self.newsletter.fetch(day, path)
        report = asyncio.run(self.newsletter.send(day))
        assert report.drain.stopped is None


@pytest.fixture
def site(make_settings: Callable[..., Settings], smtp_server: CaptureServer) -> Iterator[Site]:
    port = free_port()
    settings = make_settings(
        base_url=f"http://127.0.0.1:{port}",
        smtp_port=smtp_server.port,
        confirm_cooldown_seconds=600,
    )
    newsletter = Newsletter(settings)
    newsletter.store.upgrade()
    with serve(create_app(settings), port) as base, httpx.Client(base_url=base) as client:
        yield Site(base, smtp_server, newsletter, client)
    newsletter.close()


def form_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "form has no CSRF field"
    return match.group(1)


def sign_up(client: httpx.Client, email: str, **fields: object) -> httpx.Response:
    home = client.get("/")
    assert home.status_code == 200
    assert re.search(r'<input[^>]+name="email"', home.text)
    data = {"email": email, "csrf_token": form_token(home.text), **fields}
    return client.post("/subscribe", data=data)


def link_in(message: CapturedMessage, pattern: str) -> str:
    body = message.parsed().get_body(preferencelist=("plain",))
    assert body is not None
    match = re.search(pattern, body.get_content())
    assert match, f"no link matching {pattern}"
    return match.group(0)


def test_sign_up_confirm_receive_and_one_click_unsubscribe(site: Site, tmp_path: object) -> None:
    answer = sign_up(
        site.client, "reader@example.org", topics=["compilers"], keywords="quantization"
    )
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    confirmation = site.wait_for_mail(1)[0]
    assert confirmation.recipients == ["reader@example.org"]
    confirm_url = link_in(confirmation, rf"{re.escape(site.base)}/confirm/\S+")

    # A GET (what a mail scanner does) only shows the button.
    page = site.client.get(confirm_url)
    assert page.status_code == 200 and "<form" in page.text
    assert site.newsletter.store.subscribers.by_email("reader@example.org").status == "pending"
    confirmed = site.client.post(confirm_url, data={"csrf_token": form_token(page.text)})
    assert confirmed.status_code == 303
    assert site.newsletter.store.subscribers.by_email("reader@example.org").status == "active"

    site.publish(DAY_ONE, tmp_path)
    digest = site.wait_for_mail(2)[1].parsed()
    text = digest.get_body(preferencelist=("plain",)).get_content()
    assert "A Compiler for Sparse Tensors" in text and "Quantization-Aware" in text
    assert "Diffusion Models" not in text
    unsubscribe_url = digest["List-Unsubscribe"].strip("<>")
    assert unsubscribe_url.startswith(site.base + "/unsubscribe/")
    assert digest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # RFC 8058: a bare POST, no cookie, answered 2xx without a redirect.
    one_click = httpx.post(
        unsubscribe_url, data={"List-Unsubscribe": "One-Click"}, follow_redirects=False
    )
    assert one_click.status_code == 200
    assert site.newsletter.store.subscribers.by_email("reader@example.org").status == "unsubscribed"
    site.publish(DAY_TWO, tmp_path)
    assert len(site.wait_for_mail(3, timeout=1)) == 2, "mail sent after unsubscribing"


def test_one_click_accepts_multipart_bodies(site: Site) -> None:
    record = site.newsletter.store.subscribers.upsert("multi@example.org", [], [])
    url = site.newsletter.links.unsubscribe(record.id, record.token_salt)
    answer = httpx.post(
        url, files={"List-Unsubscribe": (None, "One-Click")}, follow_redirects=False
    )
    assert answer.status_code == 200
    assert site.newsletter.store.subscribers.by_email("multi@example.org").status == "unsubscribed"


def test_get_on_unsubscribe_link_changes_nothing_and_offers_resubscribe(site: Site) -> None:
    record = site.newsletter.store.subscribers.upsert("keep@example.org", [], [])
    url = site.newsletter.links.unsubscribe(record.id, record.token_salt)
    page = site.client.get(url)
    assert page.status_code == 200 and "<form" in page.text
    assert site.newsletter.store.subscribers.by_email("keep@example.org").status == "active"
    done = site.client.post(url, data={"csrf_token": form_token(page.text)})
    assert "Resubscribe" in done.text
    resubscribe = re.search(r'action="([^"]+/resubscribe/[^"]+)"', done.text)
    assert resubscribe
    site.client.post(resubscribe.group(1), data={"csrf_token": form_token(done.text)})
    assert site.newsletter.store.subscribers.by_email("keep@example.org").status == "active"


def test_forged_links_and_tokens_are_refused(site: Site) -> None:
    record = site.newsletter.store.subscribers.upsert("victim@example.org", [], [])
    forged = f"{site.base}/unsubscribe/{record.id}/AAAAAAAAAAAAAAAAAAAAAAAA"
    assert httpx.post(forged, data={"List-Unsubscribe": "One-Click"}).status_code == 404
    assert site.client.get(f"/preferences/{record.id}/nope").status_code == 404
    assert site.client.get(f"/confirm/{record.id}.1.forged").status_code == 400
    assert site.newsletter.store.subscribers.by_email("victim@example.org").status == "active"


def test_known_addresses_answer_exactly_like_new_ones(site: Site) -> None:
    store = site.newsletter.store
    store.subscribers.upsert("active@example.org", ["compilers"], [])
    store.subscribers.upsert("gone@example.org", [], [])
    store.subscribers.set_status("gone@example.org", SubscriberStatus.UNSUBSCRIBED)
    sign_up(site.client, "pending@example.org")

    def answer(email: str) -> tuple[int, str]:
        response = sign_up(httpx.Client(base_url=site.base), email)
        return response.status_code, re.sub(r'value="[^"]{43}"', "", response.text)

    new = answer("new@example.org")
    for email in ("active@example.org", "gone@example.org", "pending@example.org"):
        assert answer(email) == new, email
    # The active subscriber's interests were not changed by a stranger's sign-up.
    assert store.subscribers.by_email("active@example.org").topics == ("compilers",)


def test_host_header_never_reaches_a_link(site: Site) -> None:
    evil = {"Host": "evil.example"}
    home = site.client.get("/", headers=evil)
    assert "evil.example" not in home.text
    sign = site.client.post(
        "/subscribe",
        headers=evil,
        data={"email": "hosted@example.org", "csrf_token": form_token(home.text)},
    )
    assert "evil.example" not in sign.text
    mail = site.wait_for_mail(1)[0]
    assert b"evil.example" not in mail.data
    assert site.base.encode() in mail.data


def test_thirty_sign_ups_of_one_address_send_at_most_three_mails(site: Site) -> None:
    for _ in range(30):
        sign_up(site.client, "target@example.org")
    site.wait_for_mail(1)
    time.sleep(0.5)  # give any further (wrong) mails time to arrive
    to_target = [m for m in site.smtp.messages if m.recipients == ["target@example.org"]]
    assert 1 <= len(to_target) <= 3


def test_honeypot_sign_ups_send_nothing(site: Site) -> None:
    answer = sign_up(site.client, "bot@example.org", website="https://spam.example")
    assert "Check your inbox" in answer.text
    time.sleep(0.3)
    assert site.smtp.messages == []
    assert site.newsletter.store.subscribers.by_email("bot@example.org") is None


def test_missing_csrf_token_is_refused(site: Site) -> None:
    answer = site.client.post("/subscribe", data={"email": "nocsrf@example.org"})
    assert answer.status_code == 400
    assert site.newsletter.store.subscribers.by_email("nocsrf@example.org") is None


def test_per_ip_limit(make_settings: Callable[..., Settings], smtp_server: CaptureServer) -> None:
    port = free_port()
    settings = make_settings(
        base_url=f"http://127.0.0.1:{port}", smtp_port=smtp_server.port, signups_per_ip_per_hour=3
    )
    Newsletter(settings).store.upgrade()
    with serve(create_app(settings), port) as base, httpx.Client(base_url=base) as client:
        codes = [sign_up(client, f"ip{i}@example.org").status_code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]


def test_preferences_export_and_delete(site: Site) -> None:
    record = site.newsletter.store.subscribers.upsert("prefs@example.org", [], [])
    url = site.newsletter.links.preferences(record.id, record.token_salt)
    page = site.client.get(url)
    assert page.status_code == 200
    saved = site.client.post(
        url,
        data={
            "csrf_token": form_token(page.text),
            "topics": ["compilers", "llm-inference"],
            "keywords": "MLIR, sparse",
            "frequency": "weekly",
            "paused": "1",
            "timezone": "Europe/Berlin",
            "hour": "7",
            "weekday": "4",
        },
    )
    assert saved.status_code == 303
    after = site.newsletter.store.subscribers.by_email("prefs@example.org")
    assert after.topics == ("compilers", "llm-inference")
    assert after.keywords == ("MLIR", "sparse")  # as typed
    assert after.frequency == "weekly" and after.status == "paused"
    assert (after.timezone, after.delivery_hour, after.weekday) == ("Europe/Berlin", 7, 4)
    page = site.client.get(url)
    assert "<option selected>Europe/Berlin</option>" in page.text
    assert '<option value="7" selected>07:00</option>' in page.text
    bad = site.client.post(
        url,
        data={
            "csrf_token": form_token(page.text),
            "timezone": "Mars/Olympus",
            "frequency": "daily",
        },
    )
    assert bad.status_code == 400 and "unknown time zone" in bad.text
    exported = site.client.get(f"{url}/export").json()
    assert exported["email"] == "prefs@example.org" and exported["frequency"] == "weekly"
    forged = httpx.post(f"{url}/delete", data={"csrf_token": "x" * 43})  # another site's form
    assert forged.status_code == 400 and "session expired" in forged.text
    assert site.newsletter.store.subscribers.by_email("prefs@example.org") is not None
    page = site.client.get(url)
    site.client.post(f"{url}/delete", data={"csrf_token": form_token(page.text)})
    assert site.newsletter.store.subscribers.by_email("prefs@example.org") is None


def test_json_api_journey_and_openapi(site: Site) -> None:
    api = site.client
    assert (
        api.post(
            "/api/subscribe", json={"email": "api@example.org", "topics": ["compilers"]}
        ).status_code
        == 202
    )
    assert api.post("/api/subscribe", json={"email": "not-an-address"}).status_code == 422
    assert (
        api.post("/api/subscribe", json={"email": "x@example.org", "topics": ["nope"]}).status_code
        == 422
    )
    token = link_in(site.wait_for_mail(1)[0], r"/confirm/\S+").rsplit("/", 1)[1]
    confirmed = api.post("/api/confirm", json={"token": token})
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "active"
    assert api.post("/api/confirm", json={"token": token + "x"}).status_code == 400
    record = site.newsletter.store.subscribers.by_email("api@example.org")
    prefs = site.newsletter.links.preferences(record.id, record.token_salt).replace(
        site.base, "/api"
    )
    updated = api.put(
        prefs, json={"topics": ["llm-inference"], "keywords": ["KV cache"], "frequency": "daily"}
    )
    assert updated.json()["topics"] == ["llm-inference"]
    assert updated.json()["keywords"] == ["KV cache"]  # as typed
    scheduled = api.put(prefs, json={"timezone": "Asia/Tokyo", "delivery_hour": 6, "weekday": 2})
    assert scheduled.json()["timezone"] == "Asia/Tokyo" and scheduled.json()["delivery_hour"] == 6
    assert api.put(prefs, json={"timezone": "Nowhere/Land"}).status_code == 422
    unsub = site.newsletter.links.unsubscribe(record.id, record.token_salt).replace(
        site.base, "/api"
    )
    assert api.post(unsub).json()["status"] == "unsubscribed"
    schema = api.get("/api/openapi.json").json()
    assert "/api/subscribe" in schema["paths"] and "/subscribe" not in schema["paths"]


def test_archive_web_version_and_feed(site: Site, tmp_path: object) -> None:
    record = site.newsletter.store.subscribers.upsert("viewer@example.org", ["compilers"], [])
    site.publish(DAY_ONE, tmp_path)
    archive = site.client.get("/archive")
    assert f"/archive/{DAY_ONE}" in archive.text
    day = site.client.get(f"/archive/{DAY_ONE}")
    assert "Diffusion Models Dream of Sheep" in day.text  # the full list, not one person's
    view = site.client.get(
        site.newsletter.links.view(record.id, record.token_salt, DAY_ONE).replace(site.base, "")
    )
    assert view.status_code == 200 and "A Compiler for Sparse Tensors" in view.text
    assert "Diffusion Models" not in view.text
    other = site.newsletter.links.view(record.id + 1, record.token_salt, DAY_ONE).replace(
        site.base, ""
    )
    assert site.client.get(other).status_code == 404
    feed = site.client.get("/archive.atom")
    assert feed.headers["content-type"].startswith("application/atom+xml")
    assert f"{site.base}/archive/{DAY_ONE}" in feed.text
    assert site.client.get("/healthz").json() == {"status": "ok"}


def test_archive_of_an_arxiv_only_day_is_worded_honestly(site: Site, tmp_path: object) -> None:
    path = f"{tmp_path}/cs.LG.xml"
    feed = shapes.rss_feed(
        [
            ("2608.80021", "Fr'echet bounds for $\\nabla^2$ methods", "We bound things."),
            ("2608.80022", "A second paper", "Another abstract."),
        ],
        channel_date="Fri, 21 Aug 2026 00:00:00 -0400",
    )
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(feed)
    day = site.newsletter.fetch(None, path).day
    page = site.client.get(f"/archive/{day}")
    assert page.status_code == 200
    assert "2 papers, in the order they were listed." in page.text
    assert "most upvoted" not in page.text and "▲" not in page.text
    assert (
        '<a href="https://arxiv.org/abs/2608.80021">Fréchet bounds for ∇² methods</a>' in page.text
    )
    assert "huggingface.co/papers" not in page.text

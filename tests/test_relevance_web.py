"""Own words and feedback over real HTTP, on SQLite and PostgreSQL, with the real model: the
digest's "More like this" / "Less like this" links (a GET shows a button, its POST records the
signal, the last per paper wins), the preferences page listing and undoing them, feedback moving
a keyword-only reader's profile, the reasons in the digest, and "what do you work on" on the
form, the API and export with one rule."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from email.utils import parsedate_to_datetime

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from newsletter.capture import CaptureServer
from newsletter.config import Settings
from newsletter.records import ClaimedDelivery, SubscriberRecord
from newsletter.relevance.embedding import MODEL_ID
from newsletter.relevance.profile import ABOUT_LIMIT
from newsletter.root import Newsletter
from newsletter.selection import Interests, Pick, match
from newsletter.send.message import build_message
from newsletter.store.schema import DeliveryRow
from newsletter.web import create_app
from tests.conftest import SAMPLE_DATA
from tests.mime_parts import parts_of
from tests.web_server import free_port, serve

DAY = date(2026, 2, 12)
CLUSTERS = (
    "Keeping big training jobs alive and fast on cheap, unreliable machines: slow workers"
    " and nodes that disappear."
)


@dataclass
class Site:
    base: str
    smtp: CaptureServer
    newsletter: Newsletter
    client: httpx.Client

    def digest_for(self, address: str) -> email.message.EmailMessage:
        found = [m for m in self.smtp.messages if m.recipients == [address]]
        assert found, f"no digest for {address}"
        parsed: email.message.EmailMessage = found[-1].parsed()
        return parsed


@pytest.fixture
def site(
    make_settings: Callable[..., Settings], smtp_server: CaptureServer, database_url: str
) -> Iterator[Site]:
    port = free_port()
    settings = make_settings(
        base_url=f"http://127.0.0.1:{port}", smtp_port=smtp_server.port, database_url=database_url
    )
    newsletter = Newsletter(settings)
    newsletter.store.upgrade()
    newsletter.fetch(DAY, source=str(SAMPLE_DATA / f"{DAY}.json"))
    with serve(create_app(settings), port) as base, httpx.Client(base_url=base) as client:
        yield Site(base, smtp_server, newsletter, client)
    newsletter.close()


def body(message: email.message.EmailMessage, kind: str) -> str:
    part = message.get_body(preferencelist=(kind,))
    assert part is not None
    return str(part.get_content())


def form_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "form has no CSRF field"
    return found.group(1)


def send(site: Site) -> None:
    report = asyncio.run(site.newsletter.send(DAY, now=True))
    assert report.drain.stopped is None


def test_more_like_this_from_the_digest_to_undo_over_http(site: Site) -> None:
    app = site.newsletter
    reader = app.subscriptions.add("ada@example.org", (), (), app.subscriptions.words(CLUSTERS, ()))
    send(site)
    digest = site.digest_for("ada@example.org")
    text, html = body(digest, "plain"), body(digest, "html")
    planned = app.store.outbox.delivery_for(reader.id, DAY)
    assert planned is not None and planned.paper_ids
    # Every paper carries both links, in both parts, under the base URL, naming its arXiv id.
    stem = app.links.feedback_base(reader.id, reader.token_salt)
    for paper_id in planned.paper_ids:
        for kind in ("more", "less"):
            assert f"{stem}/{kind}/{paper_id}" in text
            assert f'href="{stem}/{kind}/{paper_id}"' in html
    assert html.count(">More like this</a>") == len(planned.paper_ids)
    assert html.count(">Less like this</a>") == len(planned.paper_ids)
    # Why each paper is there, as the planner stored it.
    assert "Why: close to your interest in \u201c" in text
    assert "Why: close to your interest in" in html

    first = planned.paper_ids[0]
    more = re.search(rf"More like this: (\S+/more/{re.escape(first)})\s", text)
    assert more is not None, text
    page = site.client.get(more.group(1))
    assert page.status_code == 200 and "<form" in page.text and "More like this" in page.text
    assert app.store.relevance.feedback(reader.id) == []  # a scanner's GET records nothing
    done = site.client.post(more.group(1))
    assert done.status_code == 200 and "Thanks, noted" in done.text
    assert [(f.paper_id, f.liked) for f in app.store.relevance.feedback(reader.id)] == [
        (first, True)
    ]
    # The last signal on a paper wins.
    assert site.client.post(f"{stem}/less/{first}").status_code == 200
    assert [(f.paper_id, f.liked) for f in app.store.relevance.feedback(reader.id)] == [
        (first, False)
    ]

    # Forged, mangled or unknown: a 404 page, nothing recorded.
    other = app.subscriptions.add("bo@example.org", (), ())
    for bad in (
        f"{app.links.feedback_base(other.id, other.token_salt)[:-3]}abc/more/{first}",
        f"{stem}/sideways/{first}",
        f"{stem}/more/2699.99999",
        f"{stem}/more/not a paper",
    ):
        assert site.client.get(bad).status_code == 404
        assert site.client.post(bad).status_code == 404
    assert app.store.relevance.feedback(other.id) == []

    preferences_url = app.links.preferences(reader.id, reader.token_salt)
    prefs = site.client.get(preferences_url)
    title = app.store.papers.by_id([first])[first].title
    assert "You asked for less like" in prefs.text
    assert str(title).replace("'", "&#39;")[:40] in prefs.text
    undone = site.client.post(
        f"{preferences_url}/feedback/undo",
        data={"paper": first, "csrf_token": form_token(prefs.text)},
    )
    assert undone.status_code == 303
    assert app.store.relevance.feedback(reader.id) == []
    # Undo is a form of the preferences page: without its CSRF token it changes nothing.
    site.client.post(f"{stem}/more/{first}")
    site.client.cookies.clear()
    refused = site.client.post(f"{preferences_url}/feedback/undo", data={"paper": first})
    assert refused.status_code == 400
    assert len(app.store.relevance.feedback(reader.id)) == 1


def test_feedback_moves_a_keyword_only_readers_profile(site: Site) -> None:
    app = site.newsletter
    kay = app.subscriptions.add("kay@example.org", (), ("code",))
    send(site)
    planned = app.store.outbox.delivery_for(kay.id, DAY)
    assert planned is not None
    assert app.store.relevance.reasons(kay.id, DAY) is None  # literal, as before
    text = body(site.digest_for("kay@example.org"), "plain")
    assert f"{app.links.feedback_base(kay.id, kay.token_salt)}/more/" in text
    # A paper the keyword did not find: liking it must pull the profile towards it.
    others = [p for p in app.store.papers.day_papers(DAY) if p.id not in planned.paper_ids]
    liked = others[0]
    assert (
        site.client.post(app.links.feedback(kay.id, kay.token_salt, liked.id, True)).status_code
        == 200
    )

    setups = app.profiles.readers([app.store.subscribers.by_id(kay.id)])  # type: ignore[list-item]
    profile = setups[kay.id].profile
    assert profile is not None
    vector = app.store.relevance.paper_vectors([liked.id], MODEL_ID)[liked.id]
    assert float(profile.vector @ vector) > float(profile.anchor @ vector) + 0.05
    stored = app.store.relevance.profiles([kay.id], MODEL_ID)[kay.id]
    assert stored.current and stored.profile is not None
    assert np.allclose(stored.profile.vector, profile.vector)


def test_the_cached_digest_with_reasons_is_the_message_rendered_alone(site: Site) -> None:
    app = site.newsletter
    reader = app.subscriptions.add("cy@example.org", (), (), app.subscriptions.words(CLUSTERS, ()))
    app.plan(DAY, immediately=True)
    planned = app.store.outbox.delivery_for(reader.id, DAY)
    assert planned is not None
    reasons = app.store.relevance.reasons(reader.id, DAY)
    assert reasons and len(reasons) == len(planned.paper_ids)
    record: SubscriberRecord = app.store.subscribers.by_id(reader.id)  # type: ignore[assignment]
    with app.store.session() as s:
        delivery_id = s.scalar(select(DeliveryRow.id).where(DeliveryRow.subscriber_id == reader.id))
    assert delivery_id is not None
    delivery = ClaimedDelivery(
        id=delivery_id,
        digest_date=DAY,
        message_id=app.links.message_id(reader.id, DAY),
        paper_ids=list(planned.paper_ids),
        attempts=1,
        subscriber=record,
    )
    envelope = app.composer.compose(delivery)
    interests = Interests.of(record)
    papers = app.composer.papers(delivery.paper_ids)
    rendered = app.composer.renderer.render(
        subscriber_id=record.id,
        salt=record.token_salt,
        email=record.email,
        day=DAY,
        interests=interests,
        picks=[Pick(p, match(p, interests, app.taxonomy)) for p in papers],
        reasons=reasons,
    )
    plain = build_message(
        from_address=app.settings.from_address,
        to_address=record.email,
        subject=rendered.subject,
        message_id=delivery.message_id,
        list_id=app.settings.list_id,
        list_name=app.settings.newsletter_name,
        unsubscribe_url=app.links.unsubscribe(record.id, record.token_salt),
        text=rendered.text,
        html=rendered.html,
        date=parsedate_to_datetime(email.message_from_bytes(envelope.data)["Date"]),
    )
    assert parts_of(envelope.data) == parts_of(plain.data)
    assert "Why: close to your interest in" in rendered.text
    assert len(rendered.html.encode()) < 100_000


def test_own_words_on_the_form_the_api_and_export_with_one_rule(site: Site) -> None:
    app, client = site.newsletter, site.client
    home = client.get("/")
    assert 'name="about"' in home.text and 'name="exclude"' in home.text
    too_long = client.post(
        "/subscribe",
        data={
            "email": "dee@example.org",
            "about": "x" * (ABOUT_LIMIT + 1),
            "csrf_token": form_token(home.text),
        },
    )
    assert too_long.status_code == 400 and f"at most {ABOUT_LIMIT}" in too_long.text
    assert "x" * (ABOUT_LIMIT + 1) in too_long.text  # what was typed is kept in the form

    reader = app.subscriptions.add("eve@example.org", (), ("agents",))
    token = app.links.preferences(reader.id, reader.token_salt).rsplit("/", 1)[1]
    api = f"/api/preferences/{reader.id}/{token}"
    put = client.put(api, json={"keywords": ["agents"], "about": CLUSTERS, "exclude": ["Quantum"]})
    assert put.status_code == 200
    assert put.json()["about"] == " ".join(CLUSTERS.split()) and put.json()["exclude"] == [
        "Quantum"
    ]
    # Unset leaves them; too long is a 422 naming the limit and changes nothing.
    assert client.put(api, json={"keywords": ["agents"]}).json()["about"] == CLUSTERS
    bad = client.put(api, json={"about": "y" * (ABOUT_LIMIT + 5)})
    assert bad.status_code == 422 and str(ABOUT_LIMIT) in bad.text
    assert client.get(api).json()["about"] == CLUSTERS

    prefs_url = app.links.preferences(reader.id, reader.token_salt)
    page = client.get(prefs_url)
    assert CLUSTERS.split(":")[0] in page.text and 'value="Quantum"' in page.text
    saved = client.post(
        prefs_url,
        data={
            "about": "Robot learning from videos.",
            "exclude": "survey, quantum",
            "keywords": "agents",
            "csrf_token": form_token(page.text),
        },
    )
    assert saved.status_code == 303
    exported = client.get(f"{prefs_url}/export").json()
    assert exported["about"] == "Robot learning from videos."
    assert exported["exclude"] == ["survey", "quantum"]
    assert exported["feedback"] == []
    signed_up = app.subscriptions.sign_up_request("fay@example.org", (), (), "  Graph   learning ")
    assert signed_up.words is not None and signed_up.words.about == "Graph learning"

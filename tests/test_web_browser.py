"""The subscriber journey in real headless Chromium (Debian's, driven by Playwright), with mail
read at a real SMTP server: subscribe, confirm, change topics, read the digest and its web
version, unsubscribe, and receive nothing more. Every page is screenshotted at phone and desktop
width and checked for overflow, labels and contrast on the way.

NEWSLETTER_UPDATE_DOCS=1 also refreshes the two screenshots the README shows.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from newsletter.capture import CapturedMessage, CaptureServer
from newsletter.config import Settings
from newsletter.render.digest import day_label
from newsletter.root import Newsletter
from newsletter.web import create_app
from tests.browser import ARTIFACTS, chromium
from tests.web_server import free_port, serve

SHOTS = Path(ARTIFACTS) / "web"
DOCS = Path(__file__).resolve().parent.parent / "docs"
# Read at import: the autouse clean_environment fixture removes NEWSLETTER_* before each test.
UPDATE_DOCS = os.environ.get("NEWSLETTER_UPDATE_DOCS") == "1"
DOC_SHOTS = {
    "home-phone": "web-home-phone.png",
    "preferences-desktop": "web-preferences-desktop.png",
}
# Every page is local: a missing element should fail fast, not after Playwright's 30 s.
BROWSER_TIMEOUT_MS = 5000
PAGES = (
    "home",
    "check-inbox",
    "confirm",
    "preferences",
    "preferences-saved",
    "web-version",
    "archive",
    "archive-day",
    "unsubscribe",
    "unsubscribed",
)

# Shown on the home page as "today's sample"; never sent to the subscriber of these tests.
DAY_ZERO, DAY_ONE, DAY_TWO = date(2026, 4, 6), date(2026, 4, 7), date(2026, 4, 8)
COMPILERS, DIFFUSION, DATABASES = (
    "Compilers & code optimization",
    "Diffusion & flow models",
    "Databases & query processing",
)
KEYWORDS = "speculative decoding"
COMPILER_PAPER = "A Compiler for Sparse Tensor Algebra"
DIFFUSION_PAPER = "Diffusion Models Dream of Electric Sheep"
DATABASE_PAPER = "Learned Cardinality Estimation for Join Queries"
KEYWORD_PAPER = "Speculative Decoding Without a Draft"
UNRELATED_PAPER = "A Census of Lighthouse Keepers"


def item(paper_id: str, title: str, upvotes: int, listed: date) -> dict[str, object]:
    """One entry in the shape of Hugging Face's /api/daily_papers."""
    return {
        "paper": {
            "id": paper_id,
            "title": title,
            "summary": f"{title}. We study it\n  carefully and report results.",
            "authors": [{"name": "Ann Author", "hidden": False}, {"name": "Bo Writer"}],
            "publishedAt": f"{listed}T00:00:00.000Z",
            "upvotes": upvotes,
        },
        "title": title,
        "publishedAt": f"{listed}T06:00:00.000Z",
        "numComments": 2,
    }


DAYS = {
    DAY_ZERO: [
        item("2604.00001", "Scaling Laws for Tiny Recurrent Networks", 31, DAY_ZERO),
        item("2604.00002", "Protein Folding With Fewer Flops", 22, DAY_ZERO),
        item("2604.00003", "Benchmarks That Do Not Leak", 12, DAY_ZERO),
    ],
    DAY_ONE: [
        item("2604.01001", COMPILER_PAPER, 50, DAY_ONE),
        item("2604.01002", DIFFUSION_PAPER, 45, DAY_ONE),
        item("2604.01003", DATABASE_PAPER, 40, DAY_ONE),
        item("2604.01004", KEYWORD_PAPER, 35, DAY_ONE),
        item("2604.01005", UNRELATED_PAPER, 30, DAY_ONE),
    ],
    # Matches the subscriber's topics: anything sent after unsubscribing would show up.
    DAY_TWO: [
        item("2604.02001", "Polyhedral Compilation for Everyone", 44, DAY_TWO),
        item("2604.02002", "Query Optimization With Learned Join Order", 33, DAY_TWO),
        item("2604.02003", "Speculative Decoding at the Edge", 21, DAY_TWO),
        item("2604.02004", "Flow Matching for Diffusion Samplers", 19, DAY_TWO),
    ],
}


@dataclass(frozen=True)
class Viewport:
    name: str
    width: int
    height: int


PHONE, DESKTOP = Viewport("phone", 375, 812), Viewport("desktop", 1280, 900)

# In the page: labels, overflow and contrast (WCAG 2 relative luminance) of every visible text.
AUDIT_JS = """
() => {
  const parse = (c) => {
    const m = c.match(/^rgba?\\(([^)]+)\\)$/);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, bottom) =>
    [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3])).concat([1]);
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    return layers.reverse().reduce((below, layer) => over(layer, below), [255, 255, 255, 1]);
  };
  const luminance = (c) => {
    const [r, g, b] = c.slice(0, 3).map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const hidden = (el) =>
    el.closest('.honeypot, [aria-hidden="true"]') !== null ||
    el.getClientRects().length === 0 ||
    getComputedStyle(el).visibility === 'hidden';
  const kind = (el) =>
    el.closest('button, .button') ? 'button' : el.closest('a') ? 'link' :
    el.closest('.lead') ? 'lead' : 'text';

  const checked = { text: 0, lead: 0, button: 0, link: 0 };
  const lowContrast = [];
  for (const el of document.body.querySelectorAll('*')) {
    const ownText = [...el.childNodes].some(
      (n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim() !== '');
    if (!ownText || hidden(el) || ['SCRIPT', 'STYLE'].includes(el.tagName)) continue;
    const style = getComputedStyle(el);
    const fg = parse(style.color);
    if (!fg) { lowContrast.push(`${el.tagName}: unreadable color ${style.color}`); continue; }
    const bg = background(el);
    const [hi, lo] = [luminance(over(fg, bg)), luminance(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    checked[kind(el)] += 1;
    if (ratio < (large ? 3 : 4.5)) {
      const text = el.textContent.trim().slice(0, 40);
      lowContrast.push(`${el.tagName}.${el.className} "${text}": ${ratio.toFixed(2)}:1`);
    }
  }
  const unlabelled = [...document.querySelectorAll('input, select, textarea')]
    .filter((el) => el.type !== 'hidden' && !el.closest('.honeypot'))
    .filter((el) => el.labels === null || el.labels.length === 0)
    .map((el) => el.outerHTML.slice(0, 80));
  return {
    scrollWidth: document.documentElement.scrollWidth,
    checked, lowContrast, unlabelled,
  };
}
"""


def audit_page(page: Any) -> dict[str, Any]:
    result = page.evaluate(AUDIT_JS)
    assert isinstance(result, dict)
    return result


@dataclass
class Site:
    base: str
    smtp: CaptureServer
    newsletter: Newsletter
    data_dir: Path

    def wait_for_mail(self, count: int, timeout: float = 10) -> list[CapturedMessage]:
        deadline = time.monotonic() + timeout
        while len(self.smtp.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        messages = self.smtp.messages
        assert len(messages) >= count, f"expected {count} mails, got {len(messages)}"
        return messages

    def store_day(self, day: date) -> None:
        path = self.data_dir / f"{day}.json"
        path.write_text(json.dumps(DAYS[day]), encoding="utf-8")
        self.newsletter.fetch(day, str(path))

    def send(self, day: date) -> int:
        """Store and send `day`; the number of digests queued."""
        self.store_day(day)
        # Playwright's sync API keeps an event loop running in this thread.
        with ThreadPoolExecutor(1) as pool:
            report = pool.submit(asyncio.run, self.newsletter.send(day)).result()
        assert report.drain.stopped is None
        return report.plan.queued

    def status(self, email: str) -> str | None:
        record = self.newsletter.store.subscribers.by_email(email)
        return None if record is None else str(record.status)


@dataclass
class Camera:
    """Screenshots each page and audits it in place; remembers which pages it saw."""

    page: Any
    viewport: Viewport
    seen: list[str] = field(default_factory=list)

    def shoot(self, name: str) -> None:
        self.page.wait_for_load_state("load")
        audit = audit_page(self.page)
        width = self.viewport.width
        where = f"{name} at {width}px"
        assert audit["scrollWidth"] <= width, f"{where}: {audit['scrollWidth']}px wide"
        assert audit["unlabelled"] == [], f"{where}: no label for {audit['unlabelled']}"
        assert audit["lowContrast"] == [], f"{where}: low contrast: {audit['lowContrast']}"
        assert audit["checked"]["text"] + audit["checked"]["lead"] > 0, f"{where}: no text"
        assert audit["checked"]["link"] > 0, f"{where}: no links checked"
        if self.page.locator("button").count():
            assert audit["checked"]["button"] > 0, f"{where}: buttons not checked"
        path = SHOTS / f"{name}-{self.viewport.name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        docs_name = DOC_SHOTS.get(f"{name}-{self.viewport.name}")
        if UPDATE_DOCS and docs_name:
            shutil.copyfile(path, DOCS / docs_name)
        self.seen.append(name)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Opens a page in a fresh browser context (its own cookies); closed after the test."""
    contexts: list[Any] = []

    def open_(viewport: Viewport, *, javascript: bool = True) -> Any:
        context = browser.new_context(
            viewport={"width": viewport.width, "height": viewport.height},
            java_script_enabled=javascript,
        )
        contexts.append(context)
        context.set_default_timeout(BROWSER_TIMEOUT_MS)
        return context.new_page()

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture
def site(
    make_settings: Callable[..., Settings], smtp_server: CaptureServer, tmp_path: Path
) -> Iterator[Site]:
    port = free_port()
    settings = make_settings(base_url=f"http://127.0.0.1:{port}", smtp_port=smtp_server.port)
    newsletter = Newsletter(settings)
    newsletter.store.upgrade()
    with serve(create_app(settings), port) as base:
        yield Site(base, smtp_server, newsletter, tmp_path)
    newsletter.close()


def body(message: CapturedMessage | EmailMessage, kind: str) -> str:
    parsed = message.parsed() if isinstance(message, CapturedMessage) else message
    part = parsed.get_body(preferencelist=(kind,))
    assert part is not None, f"no text/{kind} part"
    return str(part.get_content())


def href(html: str, text: str) -> str:
    match = re.search(rf'<a href="([^"]+)"[^>]*>\s*{re.escape(text)}\s*</a>', html)
    assert match, f"no link {text!r} in the mail"
    return match.group(1).replace("&amp;", "&")


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=lambda v: v.name)
def test_whole_journey_in_the_browser(
    open_page: Callable[..., Any], site: Site, viewport: Viewport
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    email = f"{viewport.name}-reader@example.org"
    site.store_day(DAY_ZERO)
    page = open_page(viewport)
    camera = Camera(page, viewport)

    # Subscribe from the home page, which shows a sample of the latest day.
    page.goto(site.base + "/")
    assert page.get_by_role("link", name="Scaling Laws for Tiny Recurrent Networks").is_visible()
    camera.shoot("home")
    page.fill("input[name=email]", email)
    page.get_by_label(COMPILERS, exact=True).check()
    page.get_by_label(DIFFUSION, exact=True).check()
    page.get_by_label("Keywords").fill(KEYWORDS)
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()
    camera.shoot("check-inbox")

    confirmation = site.wait_for_mail(1)[0]
    assert confirmation.recipients == [email]
    for kind in ("plain", "html"):  # nothing the visitor typed
        assert KEYWORDS not in body(confirmation, kind)
    match = re.search(rf"{re.escape(site.base)}/confirm/\S+", body(confirmation, "plain"))
    assert match, "no confirmation link"

    # Opening the link only shows a button; pressing it confirms.
    page.goto(match.group(0))
    assert page.get_by_role("heading", name="Confirm your subscription").is_visible()
    assert site.status(email) == "pending"
    camera.shoot("confirm")
    page.get_by_role("button", name="Confirm my subscription").click()
    page.wait_for_url(re.compile(r"/preferences/\d+/[^/?]+\?welcome=1$"))
    assert site.status(email) == "active"
    assert page.get_by_text("You are subscribed.").is_visible()
    assert page.get_by_text("Saved.").count() == 0
    assert page.get_by_label(COMPILERS, exact=True).is_checked()
    assert page.get_by_label(DIFFUSION, exact=True).is_checked()
    assert not page.get_by_label(DATABASES, exact=True).is_checked()
    assert page.get_by_label("Keywords").input_value() == KEYWORDS
    camera.shoot("preferences")

    # Change topics: drop diffusion, add databases.
    page.get_by_label(DIFFUSION, exact=True).uncheck()
    page.get_by_label(DATABASES, exact=True).check()
    page.get_by_role("button", name="Save preferences").click()
    page.wait_for_url(re.compile(r"\?saved=1$"))
    assert page.get_by_text("Saved.").is_visible()
    assert page.get_by_label(DATABASES, exact=True).is_checked()
    assert not page.get_by_label(DIFFUSION, exact=True).is_checked()
    record = site.newsletter.store.subscribers.by_email(email)
    assert record is not None and record.topics == ("compilers", "databases")
    camera.shoot("preferences-saved")

    # The next digest follows the new topics (and the keywords), not the removed one.
    assert site.send(DAY_ONE) == 1
    digest_mail = site.wait_for_mail(2)[1]
    assert digest_mail.recipients == [email]
    digest = digest_mail.parsed()
    text, html = body(digest, "plain"), body(digest, "html")
    sent = [COMPILER_PAPER, DATABASE_PAPER, KEYWORD_PAPER]
    for title in sent:
        assert title in text and title in html, title
    for title in (DIFFUSION_PAPER, UNRELATED_PAPER):
        assert title not in text and title not in html, title

    page.goto(href(html, "View in browser"))
    web_titles = page.locator(".paper-title a").all_inner_texts()
    assert sorted(t.strip() for t in web_titles) == sorted(sent)
    camera.shoot("web-version")

    # The public archive has the whole day, not one person's selection.
    page.goto(site.base + "/archive")
    camera.shoot("archive")
    page.get_by_role("link", name=day_label(DAY_ONE)).click()
    page.get_by_role("heading", name=re.compile("Trending on")).wait_for()
    for title in [*sent, DIFFUSION_PAPER, UNRELATED_PAPER]:
        assert page.get_by_role("link", name=title).is_visible(), title
    camera.shoot("archive-day")

    # Leave: by the page's button on the phone, by an RFC 8058 one-click POST on the desktop.
    unsubscribe_url = href(html, "Unsubscribe")
    assert digest["List-Unsubscribe"] == f"<{unsubscribe_url}>"
    assert digest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    page.goto(unsubscribe_url)
    assert page.get_by_role("heading", name="Unsubscribe?").is_visible()
    assert site.status(email) == "active"
    camera.shoot("unsubscribe")
    if viewport is PHONE:
        page.get_by_role("button", name="Unsubscribe").click()
    else:
        # A mail client's POST: no cookie, no CSRF field, and no redirect in the answer.
        one_click = httpx.post(
            unsubscribe_url, data={"List-Unsubscribe": "One-Click"}, follow_redirects=False
        )
        assert one_click.status_code == 200
        page.reload()
    page.get_by_role("heading", name="You are unsubscribed").wait_for()
    assert page.get_by_role("button", name="Resubscribe").is_visible()
    assert site.status(email) == "unsubscribed"
    camera.shoot("unsubscribed")

    assert site.send(DAY_TWO) == 0
    time.sleep(0.3)
    assert len(site.smtp.messages) == 2, "mail sent after unsubscribing"
    assert sorted(camera.seen) == sorted(PAGES)


def test_subscribe_works_without_javascript_and_the_honeypot_is_hidden(
    open_page: Callable[..., Any], site: Site
) -> None:
    page = open_page(PHONE, javascript=False)
    page.set_content('<p id="js">off</p><script>js.textContent = "on"</script>')
    assert page.locator("#js").inner_text() == "off", "JavaScript is still running"
    page.goto(site.base + "/")
    assert page.locator("input[name=website]").count() == 1
    assert not page.locator("input[name=website]").is_visible()
    assert not page.get_by_text("Leave this empty").is_visible()
    page.fill("input[name=email]", "no-js@example.org")
    page.get_by_label(DATABASES, exact=True).check()
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()
    assert site.wait_for_mail(1)[0].recipients == ["no-js@example.org"]
    record = site.newsletter.store.subscribers.by_email("no-js@example.org")
    assert record is not None and record.topics == ("databases",)
    assert record.status == "pending"


def test_digest_web_version_text_contrast(
    browser: Any, make_newsletter: Callable[..., Newsletter], tmp_path: Path
) -> None:
    app = make_newsletter()
    path = tmp_path / "day.json"
    path.write_text(json.dumps(DAYS[DAY_ONE]), encoding="utf-8")
    app.fetch(DAY_ONE, str(path))
    app.store.subscribers.upsert("contrast@example.org", ["compilers"], [])
    page = browser.new_page(viewport={"width": PHONE.width, "height": PHONE.height})
    page.set_content(app.preview("contrast@example.org", DAY_ONE).html, wait_until="load")
    audit = audit_page(page)
    page.close()
    assert audit["checked"]["link"] > 0 and audit["checked"]["text"] > 0
    assert audit["lowContrast"] == []


def test_more_like_this_clicked_from_a_digest_to_undo_without_javascript(
    open_page: Callable[..., Any], site: Site
) -> None:
    """A digest's "More like this" end to end: the link opens a page with one button (what a
    mail scanner fetches records nothing), the button records the signal, the preferences page
    lists the paper and undoes it."""
    email = "liker@example.org"
    record = site.newsletter.subscriptions.add(
        email, ("compilers",), (), site.newsletter.subscriptions.words("", ("census",))
    )
    assert site.send(DAY_ONE) == 1
    html = body(site.wait_for_mail(1)[0].parsed(), "html")
    assert html.count(">More like this</a>") == html.count('class="paper-title"') > 0
    more = href(html, "More like this")  # the first paper's: the compiler paper
    assert more.startswith(site.base + "/feedback/") and more.endswith("/more/2604.01001")
    relevance = site.newsletter.store.relevance

    page = open_page(DESKTOP, javascript=False)
    page.goto(more)
    assert page.get_by_role("heading", name="More papers like this one?").is_visible()
    assert page.get_by_text(COMPILER_PAPER).is_visible()
    assert relevance.feedback(record.id) == []
    page.get_by_role("button", name="More like this").click()
    page.get_by_role("heading", name="Thanks, noted").wait_for()
    assert [(f.paper_id, f.liked) for f in relevance.feedback(record.id)] == [("2604.01001", True)]

    page.get_by_role("link", name="See or undo your feedback").click()
    page.get_by_role("heading", name="More and less like this").wait_for()
    assert page.get_by_text("You asked for more like").is_visible()
    assert page.get_by_label("Never show me papers about").input_value() == "census"
    page.get_by_role("button", name=f"Undo: {COMPILER_PAPER}").click()
    page.wait_for_url(re.compile(r"\?saved=1$"))
    assert relevance.feedback(record.id) == []
    assert page.get_by_role("button", name=re.compile("^Undo")).count() == 0

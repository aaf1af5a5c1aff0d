"""The rendered digest in real headless Chromium: fits a phone, links go where they should."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import date

from newsletter.root import Newsletter
from tests.browser import ARTIFACTS, chromium
from tests.conftest import SAMPLE_DATA

DAY = date(2026, 2, 12)


def test_digest_fits_a_phone_and_links_only_to_https(
    make_newsletter: Callable[..., Newsletter],
) -> None:
    app = make_newsletter()
    app.fetch(DAY, str(SAMPLE_DATA / f"{DAY}.json"))
    app.store.subscribers.upsert("reader@example.org", ["compilers", "code-generation"], [])
    subscriber = app.store.subscribers.by_email("reader@example.org")
    assert subscriber is not None
    expected = len(app.planner.selection_for(subscriber, app.planner.day_papers(DAY), set()).picks)
    assert expected > 1
    html = app.preview("reader@example.org", DAY).html
    os.makedirs(ARTIFACTS, exist_ok=True)

    with chromium() as browser:
        for name, width in (("phone", 375), ("desktop", 1024)):
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.set_content(html, wait_until="load")
            overflow = page.evaluate("document.documentElement.scrollWidth")
            assert overflow <= width, f"{name}: content is {overflow}px wide in a {width}px view"
            hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
            assert hrefs and all(h.startswith("https://") for h in hrefs), hrefs
            titles = page.eval_on_selector_all(".paper-title a", "els => els.length")
            assert titles == expected
            page.screenshot(path=os.path.join(ARTIFACTS, f"digest-{name}.png"), full_page=True)
            page.close()

"""Render a sample digest with the demo and photograph it in headless Chromium for the README.

Usage: python scripts/screenshot_digest.py [CHROMIUM] (default /usr/bin/chromium, Debian's package).
Writes docs/digest-phone.png and docs/digest-desktop.png.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from newsletter.demo import run_demo
from tests.browser import CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    chromium = sys.argv[1] if len(sys.argv) > 1 else "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as tmp:
        result = run_demo(Path(tmp) / "demo", echo=lambda _line: None)
        page_file = result.workdir / "mail" / "20260211" / "marie_at_example.org.html"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            for name, width, height in (("phone", 390, 1400), ("desktop", 900, 1100)):
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(page_file.as_uri())
                target = ROOT / "docs" / f"digest-{name}.png"
                target.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(target))
                print(f"wrote {target}")
            browser.close()


if __name__ == "__main__":
    main()

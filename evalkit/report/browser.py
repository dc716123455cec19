"""Headless Chromium for screenshots of a report (and for the report's browser tests).

Debian's ``chromium`` package is used (``make setup`` installs it), driven by playwright;
playwright's own browser download is never used (it needs the internet).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI containers run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
]


def chromium_path() -> str:
    path = os.environ.get("EVALKIT_CHROMIUM", CHROMIUM)
    if not Path(path).is_file():
        raise EvalkitError(
            f"Chromium not found at {path}: run `make setup` (it installs Debian's chromium "
            "package: apt-get install -y chromium) or point EVALKIT_CHROMIUM at a Chromium binary"
        )
    return path


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (playwright ``Browser``)."""
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise EvalkitError(
            "screenshots need playwright: pip install playwright (never `playwright install`; "
            "evalkit drives the system Chromium)"
        ) from exc
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Path, out: Path, *, width: int = 1280, height: int = 1500) -> Path:
    """PNG of the top of a report page (verdict, changes, table), as a reviewer first sees it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        tab = browser.new_page(viewport={"width": width, "height": height})
        tab.goto(page.resolve().as_uri())
        tab.wait_for_selector(".examples[data-ready='1']", state="attached")
        tab.screenshot(path=str(out))
    return out

"""Real headless Chromium (Debian's chromium package) driven by Playwright for Python.

``tests/setup_machine.py`` installs the package; Playwright never downloads a browser
here (``executable_path`` points at /usr/bin/chromium). Missing: a skip with the reason,
a failure under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

CHROMIUM = "/usr/bin/chromium"
#: where the README's pictures of the page live
PICTURES = Path(__file__).resolve().parents[2] / "docs" / "ui"


def picture_path(name: str, tmp_path: Path) -> Path:
    """Where a test writes its screenshot ``name``: ``docs/ui/`` (the README's pictures)
    with ``FIFOFLOW_UPDATE_PICTURES=1``, else ``tmp_path`` (a test run leaves the
    checkout as it was)."""
    folder = PICTURES if os.environ.get("FIFOFLOW_UPDATE_PICTURES") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


# Flags that keep Chromium off the closed network here (background services would try).
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def live_browser() -> Iterator[Any]:
    """One Chromium per test module (a live_* fixture: the leftover guard lets it run
    between tests; it is closed, and its processes reaped, when the module ends)."""
    if not os.path.exists(CHROMIUM) or shutil.which("chromium") is None:
        why = f"no {CHROMIUM} (Debian: apt-get install chromium; make test installs it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(live_browser: Any) -> Iterator[Any]:
    context = live_browser.new_context()
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()

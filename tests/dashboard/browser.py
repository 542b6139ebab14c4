"""Debian's Chromium for the dashboard tests: where it is, how it is started, and skipping
without it (CI installs it; no browser is ever downloaded)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("STREAMQL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def skip_without_a_browser() -> None:
    """Skip (the calling test module) when there is no Chromium or no Playwright to drive it."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"the dashboard tests drive Debian's Chromium, and {CHROMIUM} does not exist "
                    "(apt-get install chromium; CI installs it)", allow_module_level=True)
    pytest.importorskip("playwright.sync_api", reason="the Python package playwright is not installed")

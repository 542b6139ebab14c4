"""Fixtures for the dashboard tests: one real federation with a simulated fleet for the session
(tests/dashboard/fleet.py), Debian's Chromium driven by Playwright (never a downloaded browser),
and a fresh browser context per test whose page must log no error."""
from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.dashboard.browser import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="module")
def fleet():
    from tests.dashboard.fleet import DashboardFleet

    # a directory of our own: pytest's numbered temporary directories are removed by other pytest
    # sessions that start meanwhile (only the newest three are kept), data directory and all
    directory = Path(tempfile.mkdtemp(prefix="streamql-dashboard-test-"))
    made = DashboardFleet(directory)
    try:
        made.start()
        yield made
    finally:
        made.stop()
        shutil.rmtree(directory, ignore_errors=True)


# Module scope, not session: while Playwright's sync API is open its event loop counts as running
# in this thread, and every asyncio test after it would fail to start its own (and the fleet's
# processes would outlive the dashboard tests).
@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class PageErrors(list):
    def check(self) -> None:
        assert not self, "the page logged errors:\n" + "\n".join(self)


@pytest.fixture
def page(browser, fleet, request, tmp_path):
    """A page in a new context (empty localStorage) at 1440 × 900; logged errors fail the test, and
    every request must stay on the federation's origin."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(15000)
    made = context.new_page()
    errors = PageErrors()
    made.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    made.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}")
            if msg.type == "error" and not _expected(msg.text) else None)
    requests: list[str] = []
    made.on("request", lambda r: requests.append(r.url))
    made.on("websocket", lambda ws: requests.append(ws.url))
    made.errors, made.requests = errors, requests
    yield made
    try:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            shot = tmp_path / "failure.png"
            made.screenshot(path=str(shot), full_page=True)
            print(f"the page when the test failed: {shot}")
        origin = fleet.url.split("://", 1)[1]
        strangers = [u for u in requests if u.split("://", 1)[-1].split("/", 1)[0] != origin]
        assert not strangers, f"requests left the federation's origin: {strangers}"
        errors.check()
    finally:
        context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report


def _expected(text: str) -> bool:
    # the browser logs every 4xx the API answers (a refused token, a statement that does not
    # parse over plain HTTP); the page shows them itself
    return re.search(r"Failed to load resource: the server responded with a status of 40[013]", text) is not None

"""The operations console with 10,000 registered devices (and three live edges), in headless Chromium.

    /work/main/.venv/bin/python bench/bench_dashboard.py [--devices 10000] [--loads 7] [--keys 20]

Measures, in one run:
- first render: from navigation to the devices page's first 50 rows drawn (and the overview's
  tiles), median of several loads (target < 1 s);
- a filter keystroke: from the keystroke to the filtered page drawn, including the 40 ms the
  page waits for the next key, median (target < 100 ms);
- a refresh: the bytes and time of one `since=` poll of the devices page;
- the baseline in the same run: what the page did before, every 5 s: fetch every device
  (`GET /v1/edges?limit=10000`, full rows), its time and size.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import ROOT, machine, table  # noqa: F401  (ROOT puts the repository on sys.path)

from tests.dashboard.big_fleet import BigFleet
from tests.dashboard.browser import CHROMIUM, CHROMIUM_ARGS

# records when the devices table first has its 50 rows, and when the overview's tiles appear
RENDER_PROBE = """
window.__rendered = {};
new MutationObserver(() => {
  const now = performance.now();
  if (!window.__rendered.devices && document.querySelectorAll('table#devices tbody tr').length >= 50) window.__rendered.devices = now;
  if (!window.__rendered.overview && document.querySelector('#tile-total')) window.__rendered.overview = now;
}).observe(document, {subtree: true, childList: true});
"""


def until(page, expression: str, timeout: float = 30.0):
    """Poll a JavaScript expression until it is truthy (wait_for_function evaluates strings, which
    the page's Content-Security-Policy refuses)."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(expression)
        page.wait_for_timeout(5)


def fetch(url: str, token: str) -> tuple[float, int]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as resp:
        size = len(resp.read())
    return time.perf_counter() - start, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=7)
    parser.add_argument("--keys", type=int, default=20)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    directory = Path(tempfile.mkdtemp(prefix="streamql-bench-dashboard-"))
    fleet = BigFleet(directory, n=args.devices, live=3)
    rows = []
    try:
        started = time.perf_counter()
        fleet.start()
        print(f"{machine()}; {args.devices:,} registered devices + 3 live, ready in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1440, "height": 900})
            context.add_init_script(f"localStorage.setItem('streamql.token', {fleet.read!r});")
            context.add_init_script(RENDER_PROBE)
            page = context.new_page()
            devices_ms, overview_ms = [], []
            for _ in range(args.loads):
                page.goto(f"{fleet.url}/#devices")
                until(page, "window.__rendered && window.__rendered.devices")
                devices_ms.append(page.evaluate("window.__rendered.devices"))
                page.goto(f"{fleet.url}/?v={time.time()}#overview")
                until(page, "window.__rendered && window.__rendered.overview")
                overview_ms.append(page.evaluate("window.__rendered.overview"))
            # filter keystrokes: each types one more character of a device id
            page.goto(f"{fleet.url}/#devices")
            until(page, "window.__rendered && window.__rendered.devices")
            filter_ms = []
            box = page.locator("#device-filter")
            for i in range(args.keys):
                box.fill("")
                until(page, "!window.streamqlDashboard.devices.params.get('q')")
                target = f"big-{(i * 37) % args.devices:05d}"[:6 + i % 4]
                box.fill(target[:-1])
                page.wait_for_timeout(150)
                page.evaluate("window.streamqlDashboard.devices.lastFilterMs = null")
                box.press(target[-1])
                until(page, "window.streamqlDashboard.devices.lastFilterMs !== null", 10)
                filter_ms.append(page.evaluate("window.streamqlDashboard.devices.lastFilterMs"))
            # one refresh of the devices page: a `since=` poll
            box.fill("")
            page.wait_for_timeout(300)
            polls = []
            page.on("response", lambda r: polls.append(r) if "since=" in r.url else None)
            page.wait_for_timeout(11_000)
            poll_sizes = [len(r.body()) for r in polls]
            poll_ms = [r.request.timing["responseEnd"] for r in polls]
            browser.close()
        cursor = fleet.api("GET", "/v1/edges?limit=0&fields=compact", token=fleet.read)["cursor"]
        since_s = statistics.median(fetch(f"{fleet.url}/v1/edges?fields=compact&limit=50&since={cursor}", fleet.read)[0]
                                    for _ in range(20))
        old = [fetch(f"{fleet.url}/v1/edges?limit=10000", fleet.read) for _ in range(5)]
        old_s, old_bytes = statistics.median(t for t, _ in old), old[0][1]
    finally:
        fleet.stop()
        shutil.rmtree(directory, ignore_errors=True)

    first = statistics.median(devices_ms)
    keystroke = statistics.median(filter_ms)
    rows += [
        ("devices page, first 50 rows drawn", f"median {first:.0f} ms (of {args.loads} loads; min {min(devices_ms):.0f})", "< 1,000 ms"),
        ("overview tiles drawn", f"median {statistics.median(overview_ms):.0f} ms", ""),
        ("filter keystroke to the filtered page drawn", f"median {keystroke:.0f} ms, p90 {sorted(filter_ms)[int(len(filter_ms) * .9)]:.0f} ms (40 ms of it waiting for the next key)", "< 100 ms"),
        ("refresh: one since= poll of the page", f"{statistics.median(poll_sizes) if poll_sizes else 0:,.0f} bytes, "
         f"{statistics.median(poll_ms) if poll_ms else 0:.0f} ms in the browser, {since_s * 1000:.1f} ms from Python", "~1.2 KB"),
        ("baseline: the old page's poll, every device (full)", f"{old_s * 1000:,.0f} ms, {old_bytes / 1e6:.1f} MB", ""),
        ("ratio", f"poll {old_bytes / max(1, statistics.median(poll_sizes) if poll_sizes else 1):,.0f}× smaller", ""),
    ]
    print(table(f"The console with {args.devices:,} devices", rows, ("measure", "figure", "target")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The dashboard as an operations console, in real headless Chromium against a real federation and
simulated fleet (tests/dashboard/fleet.py). Counts the page shows are checked against the summary
endpoint and both against an oracle computed from `registry.sqlite3` itself. Covered: the overview
and its links; filters from the address; a refresh that sends only `since=` requests; failed and
partial statements; a deploy that selects nobody; preflight then cancel; roles; models, flows and
alerts; tokens and provisioning; saved links and exports; charts; the 390 px layout; stale data
(requests blocked, then the federation stopped with SIGSTOP). Screenshots of the overview,
devices, a query with a chart, a failed statement and a deployment at 1440 and 390 px go to
build/dashboard-screenshots/ (not committed) for a person to look at."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tests.dashboard.browser import skip_without_a_browser

skip_without_a_browser()

from playwright.sync_api import expect  # noqa: E402

from tests.dashboard.fleet import EDGES, OFFLINE, ROOT, UNTRUSTING  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SHOTS = ROOT / "build" / "dashboard-screenshots"
FAILS_EVERYWHERE = ("select id(e), x from Edge e, Integer x\n"
                    "where x = ([1, 2, 3][cast(signal_value('battery') as Integer) + 50])@e;")
BATTERY = "select id(e), signal_value('battery')@e from Edge e;"
GROUPED = "select region(e), count(e) from Edge e group by region(e);"


def shoot(page, name: str) -> None:
    """The page at 1440 and at 390 px wide, for a person to look at."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    for width in (1440, 390):
        page.set_viewport_size({"width": width, "height": 900})
        time.sleep(0.4)
        page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size(size)


def open_view(page, fleet, view: str, token: str | None = None):
    page.goto(f"{fleet.url}/?token={token or fleet.read}#{view}")
    expect(page.locator("#conn")).to_contain_text("online")


def wait_for(predicate, timeout: float = 15.0, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def device_ids(page) -> list[str]:
    return page.locator("table#devices tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")


def run_query(page, text: str):
    page.locator("#query-text").fill(text)
    page.locator("#query-text").press("Control+Enter")


# --- the oracle: straight from the registry's database file ------------------------------------------
def registry_rows(fleet) -> list[dict]:
    conn = sqlite3.connect(fleet.dir / "fed" / "registry.sqlite3")
    try:
        models: dict[str, dict] = {}
        for device_id, model, version in conn.execute("SELECT device_id, model, version FROM device_models"):
            models.setdefault(device_id, {})[model] = version
        return [{"id": i, "metadata": json.loads(m), "online": bool(o), "last_seen": s, "models": models.get(i, {})}
                for i, m, o, s in conn.execute("SELECT id, metadata, online, last_seen FROM devices ORDER BY id")]
    finally:
        conn.close()


def status_of(row: dict) -> str:
    if row["online"]:
        return "online"
    return "missing" if row["last_seen"] is None or time.time() - row["last_seen"] > 3600 else "offline"


def count_of(page, selector: str) -> int:
    return int(page.locator(selector).get_attribute("data-count"))


# --- the tests --------------------------------------------------------------------------------------
def test_the_overview_counts_what_the_summary_and_the_registry_count(page, fleet):
    open_view(page, fleet, "overview")
    expect(page.locator("#tile-online")).to_be_visible()
    rows = registry_rows(fleet)
    summary = fleet.api("GET", "/v1/edges/summary", token=fleet.read)
    oracle = {s: sum(status_of(r) == s for r in rows) for s in ("online", "offline", "missing")}
    assert summary["status"] == oracle and summary["total"] == len(rows) == len(EDGES) + 2
    wait_for(lambda: all(count_of(page, f"#tile-{s}") == n for s, n in oracle.items()), what="the tiles")
    assert count_of(page, "#tile-total") == len(rows)
    for key, box in (("region", "#by-region"), ("kind", "#by-kind")):
        expected = {}
        for r in rows:
            expected[r["metadata"][key]] = expected.get(r["metadata"][key], 0) + 1
        shown = {tr.get_attribute("data-value"): int(tr.locator("a").get_attribute("data-count"))
                 for tr in page.locator(f"{box} tr").all()}
        assert shown == expected == summary["metadata"][key]
    # every number links to the devices it counts
    page.locator("#tile-online").click()
    expect(page.locator("#device-status")).to_have_value("online")
    wait_for(lambda: device_ids(page) == sorted(r["id"] for r in rows if status_of(r) == "online"), what="online devices")
    page.goto(f"{fleet.url}/#overview")
    region = rows[0]["metadata"]["region"]
    page.locator(f'#by-region tr[data-value="{region}"] a').click()
    wait_for(lambda: device_ids(page) == sorted(r["id"] for r in rows if r["metadata"]["region"] == region), what="a region")
    assert "meta.region=" in page.url
    page.goto(f"{fleet.url}/#overview")
    expect(page.locator("#tile-online")).to_be_visible()
    shoot(page, "overview")


def test_filters_come_from_the_address_and_a_refresh_sends_only_changes(page, fleet):
    rows = registry_rows(fleet)
    region = registry_rows(fleet)[0]["metadata"]["region"]
    where = f"region(e) = '{region}' or kind(e) = 'dumper'"
    page.goto(f"{fleet.url}/?token={fleet.read}#devices?where={where}&sort=-id")
    expected = sorted((r["id"] for r in rows if r["metadata"]["region"] == region or r["metadata"]["kind"] == "dumper"),
                      reverse=True)
    wait_for(lambda: device_ids(page) == expected, what="the view in the address")
    expect(page.locator("#device-where")).to_have_value(where)
    expect(page.locator("#device-total")).to_have_attribute("data-total", str(len(expected)))
    # the periodic refresh: only `since=` requests, small ones
    responses = []
    page.on("response", lambda r: responses.append(r) if "/v1/" in r.url else None)
    page.wait_for_timeout(11000)   # (Playwright hears of requests only while it is called: no time.sleep)
    sizes = [(r.url, len(r.body())) for r in responses]
    assert sizes, "no refresh in 11 s"
    assert all("since=" in url for url, _ in sizes), [u for u, _ in sizes]
    assert max(size for _, size in sizes) < 6000, sizes
    # a bad `where` shows its error under its own text, with a caret
    page.locator("#device-where").fill("region(e) = = 'US'")
    page.locator("#device-where").press("Enter")
    expect(page.locator("#device-where-error")).to_contain_text("ParseError")
    excerpt = page.locator("#where-excerpt").inner_text().split("\n")
    assert excerpt[0] == "region(e) = = 'US'" and excerpt[1].index("^") == 12
    page.locator("#device-where").fill("signal_value('battery')@e > 5")
    page.locator("#device-where").press("Enter")
    expect(page.locator("#device-where-error")).to_contain_text("@")
    shoot(page, "devices")


def test_failed_and_partial_statements_say_so(page, fleet):
    open_view(page, fleet, "query")
    run_query(page, FAILS_EVERYWHERE)
    expect(page.locator("#query-info .pill").first).to_have_text("failed")
    expect(page.locator("#query-error")).to_contain_text("RuntimeError")
    expect(page.locator("#query-error")).to_contain_text("index")
    excerpt = page.locator("#error-excerpt").inner_text().split("\n")
    assert excerpt[1].index("^") - excerpt[1].index("│ ") - 2 == FAILS_EVERYWHERE.split("\n")[1].index("([1, 2, 3]") + 1
    assert "done" not in page.locator("#query-info").inner_text()
    shoot(page, "failed-statement")
    # one device is offline: a partial answer, and it says which
    run_query(page, BATTERY)
    expect(page.locator("#query-info .pill").first).to_have_text("partial")
    expect(page.locator("#status-partial")).to_contain_text(OFFLINE)
    expect(page.locator(f'#status-table tr[data-device="{OFFLINE}"]')).to_contain_text("offline")


def test_a_partial_answer_shows_the_first_device_error_under_its_position(page, fleet):
    """A device that failed with a positioned error (as the federation reports it in the status)."""
    page.add_init_script("localStorage.setItem('streamql.transport', 'http')")
    text = "select id(e), x from Edge e, Real x\nwhere x = sqrt(signal_value('battery'))@e;"
    status = {"complete": False, "selected": 2, "counts": {"answered": 1, "failed": 1}, "incomplete": ["wl-9"],
              "registry_only": False, "devices": {
                  "dt-1": {"outcome": "answered", "rows": 1, "reason": None},
                  "wl-9": {"outcome": "failed", "rows": 0, "reason": "the sensor bus is down",
                           "error": {"kind": "RuntimeError", "message": "the sensor bus is down", "line": 2, "column": 16}}}}
    body = json.dumps(["dt-1", 2.0]) + "\n" + json.dumps({"status": status, "complete": False, "rows": 1}) + "\n"
    page.route("**/v1/query", lambda route: route.fulfill(status=200, body=body, headers={
        "Content-Type": "application/x-ndjson", "X-StreamQL-Columns": '["id(e)", "x"]',
        "X-StreamQL-Types": '["Charstring", "Real"]', "X-StreamQL-Kind": "bag"}))
    open_view(page, fleet, "query")
    run_query(page, text)
    expect(page.locator("#query-info .pill").first).to_have_text("partial")
    error = page.locator("#query-error")
    expect(error).to_contain_text("first device error, wl-9")
    expect(error).to_contain_text("line 2, column 16")
    excerpt = page.locator("#error-excerpt").inner_text().split("\n")
    assert excerpt[1].index("^") - excerpt[1].index("│ ") - 2 == 15


def upload_bundle(fleet, version: str) -> None:
    from federation.testing import make_bundle

    data = make_bundle(fleet.dir / "bundles", "console-model", version, private_key=fleet.private)
    fleet.api("POST", "/v1/models", raw=data, content_type="application/octet-stream")


def test_nothing_selected_and_a_preflight_then_cancel(page, fleet):
    upload_bundle(fleet, "1.0.0")
    page.on("dialog", lambda dialog: dialog.accept())
    open_view(page, fleet, "deployments", token=fleet.admin)
    form = page.locator("#deploy-form")
    form.locator("select[name=model]").select_option("console-model")
    form.locator("input[name=where]").fill("region(e) = 'nowhere'")
    expect(page.locator("#deploy-start")).to_be_disabled()          # startable only after a preflight
    page.locator("#deploy-preflight").click()
    expect(page.locator('#preflight li[data-k="selected"]')).to_contain_text("0 selected")
    expect(page.locator("#preflight")).to_contain_text("nothing selected")
    page.locator("#deploy-start").click()
    expect(page.locator("#deployment-state")).to_have_text("nothing selected")
    expect(page.locator("#nothing-selected")).to_be_visible()
    deployment = page.url.rsplit("/", 1)[1]
    assert fleet.api("GET", f"/v1/deployments/{deployment}")["state"] == "nothing_selected"
    # a preflight of the offline device: it would wait; started, then cancelled
    form.locator("input[name=where]").fill(f"id(e) = '{OFFLINE}'")
    expect(page.locator("#deploy-start")).to_be_disabled()          # the form changed: preflight again
    page.locator("#deploy-preflight").click()
    expect(page.locator('#preflight li[data-k="wait"]')).to_contain_text("1 wait")
    expect(page.locator('#preflight li[data-k="install"]')).to_contain_text("0 install")
    page.locator("#deploy-start").click()
    expect(page.locator("#deployment-state")).to_have_text("running")
    deployment = page.url.rsplit("/", 1)[1]
    shoot(page, "deployment")
    page.locator("#deployment-cancel").click()
    expect(page.locator("#deployment-state")).to_have_text("cancelled")
    conn = sqlite3.connect(fleet.dir / "fed" / "registry.sqlite3")
    (state,) = conn.execute("SELECT state FROM deployments WHERE id = ?", (int(deployment),)).fetchone()
    targets = conn.execute("SELECT device_id, state, reason FROM deployment_targets WHERE deployment_id = ?",
                           (int(deployment),)).fetchall()
    conn.close()
    assert state == "cancelled" and len(targets) == 1 and targets[0][:2] == (OFFLINE, "skipped")
    expect(page.locator(f'#deployment-devices tr[data-device="{OFFLINE}"]')).to_contain_text("cancelled by")


def test_a_token_sees_only_what_it_may_use(page, fleet):
    open_view(page, fleet, "deployments")
    expect(page.locator("#role")).to_have_text("read")
    expect(page.locator("#tab-admin")).to_be_hidden()
    expect(page.locator("#deploy-form-box")).to_be_hidden()
    expect(page.locator("#deployment-cancel, #deployment-abort, #deployment-retry, #deployment-rollback")).to_have_count(0)
    page.goto(f"{fleet.url}/#models")
    expect(page.locator("#model-upload")).to_have_count(0)
    page.locator("#token").fill(fleet.admin)
    page.locator("#token").press("Enter")
    expect(page.locator("#role")).to_have_text("admin")
    expect(page.locator("#tab-admin")).to_be_visible()
    expect(page.locator("#model-upload")).to_have_count(1)
    # an upload from the page: the signed bundle is checked and lands in the catalogue
    from federation.testing import make_bundle

    path = fleet.dir / "uploaded.bundle"
    path.write_bytes(make_bundle(fleet.dir / "bundles", "uploaded-model", "0.9.0", private_key=fleet.private))
    page.locator("#model-upload").set_input_files(str(path))
    expect(page.locator("#upload-result")).to_contain_text("uploaded-model 0.9.0 uploaded")
    expect(page.locator('#model-catalogue tr[data-model="uploaded-model"][data-version="0.9.0"]')).to_be_visible()
    path.write_bytes(b"PK not a bundle")
    page.locator("#model-upload").set_input_files(str(path))
    expect(page.locator("#upload-result")).to_contain_text("Error")


def test_models_flows_and_alerts(page, fleet):
    upload_bundle(fleet, "2.0.0")
    # a device that publishes alerts (a scripted edge in a thread of its own)
    token = fleet.api("POST", "/v1/edges", {"id": "pub-1", "metadata": {"region": "EU", "kind": "dumper"}})["token"]

    async def publish():
        from federation.testing import FakeEdge

        edge = FakeEdge(fleet.url, token, "pub-1")
        await edge.connect()
        for i in range(3):
            edge.publish("alerts", [float(i) + 0.5])
        await edge.send_health(time=time.time(), uptime_s=5.0, cpu_percent=3.0, memory_kb=2048, restarts=0,
                               link={"connected": True, "reconnects": 0, "rtt_ms": 4.0})
        for _ in range(100):
            if edge.acked == 3:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)   # the heartbeat buffer is written once a second
        await edge.shutdown()
    worker = threading.Thread(target=lambda: asyncio.run(publish()))
    worker.start()
    worker.join(20)
    open_view(page, fleet, "models")
    rows = registry_rows(fleet)
    uploaded = [b["version"] for b in fleet.api("GET", "/v1/models?name=console-model")["models"]]
    assert "2.0.0" in uploaded
    for version in uploaded:
        expect(page.locator(f'#model-catalogue tr[data-model="console-model"][data-version="{version}"]')).to_be_visible()
    running = {}
    for r in rows:
        for model, version in r["models"].items():
            running[(model, version)] = running.get((model, version), 0) + 1
    for (model, version), n in running.items():
        cell = page.locator(f'#model-catalogue tr[data-model="{model}"][data-version="{version}"] [data-count]')
        expect(cell).to_have_attribute("data-count", str(n))
    page.goto(f"{fleet.url}/#flows/alerts")
    expect(page.locator("#flow-records tbody tr")).to_have_count(3)
    expect(page.locator("#flow-records")).to_contain_text("pub-1")
    page.goto(f"{fleet.url}/#overview")
    expect(page.locator("#recent-alerts tr")).to_have_count(3)
    expect(page.locator("#recent-alerts")).to_contain_text("2.5")
    # pub-1 reported its link connected, then went away: neither the API nor the page says connected
    assert fleet.api("GET", "/v1/edges/pub-1")["health"]["link"]["connected"] is False
    page.goto(f"{fleet.url}/#devices/pub-1")
    link = page.locator("#device-health").locator("xpath=.//dt[text()='link']/following-sibling::dd[1]")
    expect(link).to_have_text("disconnected, 0 reconnects")


def test_tokens_and_provisioning(page, fleet):
    from edge_engine.config import load_config

    page.on("dialog", lambda dialog: dialog.accept())
    open_view(page, fleet, "admin", token=fleet.admin)
    page.locator("#token-create select[name=role]").select_option("read")
    page.locator("#token-create input[name=label]").fill("console test")
    page.locator("#token-create button[type=submit]").click()
    secret = page.locator("#token-made pre.secret").inner_text().strip()
    assert fleet.api("GET", "/v1/me", token=secret)["role"] == "read"
    made = page.locator("#tokens tr", has_text="console test")
    expect(made).to_have_count(1)
    assert not page.locator("#tokens").inner_text().count("device ")  # the devices' tokens are not listed
    made.locator("button[data-revoke]").click()
    expect(page.locator("#tokens tr", has_text="console test")).to_have_count(0)
    with pytest.raises(AssertionError, match="401"):
        fleet.api("GET", "/v1/me", token=secret)
    # provisioning gives an edge.toml the edge itself reads
    form = page.locator("#provision")
    form.locator("input[name=id]").fill("new-0001")
    form.locator("textarea[name=metadata]").fill("region=EU\nkind=dumper\nmodel_year=2021")
    form.locator("input[name=ram]").fill("512")
    form.locator("button[type=submit]").click()
    text = page.locator("#edge-config").inner_text()
    path = fleet.dir / "new-edge.toml"
    path.write_text(text)
    config = load_config(path, environ={})
    assert config.id == "new-0001" and config.federation == fleet.url and config.token.startswith("sqf_")
    assert config.metadata == {"region": "EU", "kind": "dumper", "model_year": 2021}
    assert config.capabilities.ram_kb == 512 * 1024
    assert "new-0001" in {r["id"] for r in registry_rows(fleet)}


def test_a_saved_query_by_link_and_exports(page, fleet, tmp_path):
    page.on("dialog", lambda dialog: dialog.accept("regions"))
    open_view(page, fleet, "query")
    page.locator("#query-text").fill(GROUPED)
    page.locator("#save-query").click()
    expect(page.locator("#saved-link")).to_contain_text("#query/saved/regions")
    assert fleet.api("GET", "/v1/saved-queries/regions")["text"] == GROUPED
    page.locator("#query-text").fill("select 1;")
    page.goto(f"{fleet.url}/#query/saved/regions")
    page.reload()
    expect(page.locator("#query-text")).to_have_value(GROUPED)
    run_query(page, GROUPED)
    expect(page.locator("#query-info .pill").first).to_have_text("done")
    rows = registry_rows(fleet)
    regions = {}
    for r in rows:
        regions[r["metadata"]["region"]] = regions.get(r["metadata"]["region"], 0) + 1
    with page.expect_download() as download:
        page.locator("#export-csv").click()
    lines = Path(download.value.path()).read_bytes().decode().strip().split("\r\n")
    assert lines[0] == "region(e),count(e)"
    assert {tuple(line.split(",")) for line in lines[1:]} == {(k, str(v)) for k, v in regions.items()}
    with page.expect_download() as download:
        page.locator("#export-json").click()
    exported = json.loads(Path(download.value.path()).read_text())
    assert {(x["region(e)"], x["count(e)"]) for x in exported} == set(regions.items())


def test_charts_of_grouped_results_have_bars_axis_titles_and_zoom(page, fleet):
    open_view(page, fleet, "query")
    run_query(page, GROUPED)
    expect(page.locator("#query-info .pill").first).to_have_text("done")
    page.locator("button.seg-button[data-view=chart]").click()
    chart = page.locator("#chart svg.chart")
    rows = registry_rows(fleet)
    regions = sorted({r["metadata"]["region"] for r in rows})
    expect(chart.locator("rect.bar")).to_have_count(len(regions))
    labels = chart.locator(".x-axis text").all_text_contents()
    assert sorted(labels) == regions
    ticks = chart.locator(".y-axis text").all_text_contents()
    assert all(re.fullmatch(r"\d+", t) for t in ticks), ticks      # counts have whole ticks
    expect(chart.locator(".axis-title.y")).to_have_text("count(e)")
    expect(chart.locator(".axis-title.x")).to_have_text("region(e)")
    shoot(page, "query-chart")
    # a live line chart zooms by dragging, and resets
    run_query(page, "select stream of id(e), x from Edge e, Real x where x in signal_stream('engine_speed')@e;")
    wait_for(lambda: page.locator("#chart svg.chart path.line").count() > 0, what="lines")
    page.wait_for_timeout(2000)
    box = page.locator("#chart .chart-figure").bounding_box()   # (the svg inside is redrawn as rows come)
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5, steps=5)
    page.mouse.up()
    expect(page.locator("#chart-reset")).to_be_visible()
    page.locator("#chart-reset").click()
    expect(page.locator("#chart-reset")).to_be_hidden()
    page.locator("#stop").click()


def test_below_800_px_rows_are_cards_and_details_a_sheet(page, fleet):
    page.set_viewport_size({"width": 390, "height": 844})
    for view in ("overview", "devices", "query", "deployments", "models", "flows"):
        page.goto(f"{fleet.url}/?token={fleet.read}#{view}")
        expect(page.locator("#conn")).to_contain_text("online")
        time.sleep(0.5)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, view
    page.goto(f"{fleet.url}/#devices")
    first = page.locator("table#devices tbody tr").first
    expect(first).to_be_visible()
    assert first.evaluate("tr => getComputedStyle(tr).display") == "grid"
    assert page.locator("table#devices thead").evaluate("t => getComputedStyle(t).display") == "none"
    first.locator("a").click()
    sheet = page.locator("#device-details")
    expect(sheet).to_be_visible()
    box = sheet.bounding_box()
    assert box["x"] == 0 and box["width"] == 390 and box["height"] >= 800
    head = page.locator("#device-details .drawer-head")
    sheet.evaluate("s => s.scrollTop = 400")
    assert head.bounding_box()["y"] <= 1          # the header stays at the top while it scrolls
    expect(head.locator(".pill")).to_be_visible()   # status always visible
    page.locator("#device-details .back").click()
    expect(sheet).to_be_hidden()


def test_stale_data_is_greyed_when_requests_hang_and_when_the_federation_stops(page, fleet):
    open_view(page, fleet, "devices")
    expect(page.locator("table#devices tbody tr").first).to_be_visible()
    expect(page.locator("#stale-banner")).to_be_hidden()
    page.route("**/v1/**", lambda route: None)        # nothing answers (the requests hang)
    expect(page.locator("#stale-banner")).to_contain_text("Not live", timeout=25000)
    assert page.evaluate("document.body.classList.contains('stale')")
    green = page.locator("table#devices .dot.on").first.evaluate("d => getComputedStyle(d).backgroundColor")
    assert green == "rgb(156, 163, 175)"              # online dots lose their green
    page.unroute("**/v1/**")
    expect(page.locator("#stale-banner")).to_be_hidden(timeout=15000)
    # the federation itself stops (SIGSTOP): requests time out, the page says so
    federation = fleet.procs[0]
    os.kill(federation.pid, signal.SIGSTOP)
    try:
        expect(page.locator("#stale-banner")).to_contain_text("Not live", timeout=30000)
        expect(page.locator("#conn")).to_contain_text("not answering", timeout=15000)
    finally:
        os.kill(federation.pid, signal.SIGCONT)
    expect(page.locator("#stale-banner")).to_be_hidden(timeout=20000)


def test_retry_the_failed_devices_from_the_deployment_page(page, fleet):
    upload_bundle(fleet, "3.0.0")
    lines = fleet.api("POST", "/v1/query", {"query": f"deploy model 'console-model' version '3.0.0' to Edge e "
                                                      f"where id(e) in ('{UNTRUSTING}', '{EDGES[0]}') over 1 waves;"})
    first = str(lines[-1]["deployment_id"])
    progress = fleet.api("GET", f"/v1/deployments/{first}?wait=30")
    assert progress["counts"]["failed"] == 1 and progress["counts"]["done"] == 1, progress
    page.on("dialog", lambda dialog: dialog.accept())
    open_view(page, fleet, f"deployments/{first}", token=fleet.admin)
    expect(page.locator("#deployment-retry")).to_have_text("Retry 1 failed")
    expect(page.locator("#deployment-rollback")).to_be_visible()      # a device runs what it brought
    expect(page.locator("#deployment-cancel")).to_have_count(0)       # it is not running
    page.locator("#deployment-retry").click()
    newest = lambda: page.evaluate("location.hash").rsplit("/", 1)[1]  # noqa: E731  (page.url lags behind)
    retry = wait_for(lambda: (n := newest()) != first and n, what="the new deployment")
    expect(page.locator(f'#deployment-devices tr[data-device="{UNTRUSTING}"]')).to_be_visible()
    expect(page.locator("#deployment-devices tbody tr")).to_have_count(1)   # only the device that failed
    conn = sqlite3.connect(fleet.dir / "fed" / "registry.sqlite3")
    targets = [d for (d,) in conn.execute("SELECT device_id FROM deployment_targets WHERE deployment_id = ?", (int(retry),))]
    conn.close()
    assert targets == [UNTRUSTING]

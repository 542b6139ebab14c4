"""The dashboard in real headless Chromium against a real federation and a simulated fleet
(tests/dashboard/fleet.py): the token, devices (filters, details), a continuous query drawn live
and stopped, a bag query as a table, errors with their position, deployments per device, and
the NDJSON transport. Every page must log no error and fetch nothing from another origin."""
from __future__ import annotations

import re
import time

import pytest

from tests.dashboard.browser import skip_without_a_browser

skip_without_a_browser()

from playwright.sync_api import expect  # noqa: E402

from tests.dashboard.fleet import EDGES, OFFLINE, UNTRUSTING  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

VIBRATION = ("select stream of id(e), mean(w) from Edge e, Vector of Real w\n"
             "where w in winagg(signal_stream('vibration'), 64, 64)@e;")


def open_dashboard(page, fleet, view: str = "devices", token: str | None = None):
    page.goto(f"{fleet.url}/?token={token or fleet.read}#{view}")
    expect(page.locator("#conn")).to_contain_text("online")


def device_ids(page) -> list[str]:
    return page.locator("table#devices tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")


def wait_for(predicate, timeout: float = 15.0, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def run_query(page, text: str):
    page.locator("#query-text").fill(text)
    page.locator("#query-text").press("Control+Enter")


def ids_where(edges: dict, predicate) -> list[str]:
    return sorted(i for i, e in edges.items() if predicate(e))


def words_of(edge: dict) -> str:
    """What the page's text filter looks at (id, metadata, models, signals, CPU), lower case."""
    caps = edge["capabilities"]
    parts = [edge["id"]] + [f"{k}={v}\n{v}" for k, v in edge["metadata"].items()]
    parts += [f"{m}\n{m}@{v['version']}" for m, v in edge["models"].items()] + caps.get("signals", [])
    parts += [str(caps["cpu"])] if caps.get("cpu") else []
    return "\n".join(parts).lower()


def ram_text(kb: int) -> str:
    return f"{kb / 1048576:g} GB" if kb >= 1048576 else f"{kb / 1024:g} MB"


def rows_shown(page) -> int:
    return int(page.locator("#row-count").get_attribute("data-rows"))


def test_the_token_from_the_address_and_the_page_headers(page, fleet):
    response = page.goto(f"{fleet.url}/?token={fleet.read}#devices")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and response.headers["referrer-policy"] == "no-referrer"
    expect(page.locator("table#devices tbody tr").first).to_be_visible()
    assert "token" not in page.url and page.url.endswith("/#devices")  # taken out of the address bar
    assert page.evaluate("localStorage.getItem('streamql.token')") == fleet.read
    page.reload()  # kept in this browser
    expect(page.locator("table#devices tbody tr")).to_have_count(len(EDGES) + 2)


def test_without_a_token_or_with_a_refused_one(page, fleet):
    page.goto(f"{fleet.url}/#devices")
    banner = page.locator("#auth-banner")
    expect(banner).to_contain_text("A token is needed")
    page.locator("#token").fill("sqf_" + "x" * 43)
    page.locator("#token").press("Enter")
    expect(banner).to_contain_text("refused (401)")
    expect(page.locator("#conn")).to_contain_text("Unauthorized")
    page.locator("#token").fill(fleet.read)
    page.locator("#token").press("Enter")
    expect(banner).to_be_hidden()
    expect(page.locator("table#devices tbody tr")).to_have_count(len(EDGES) + 2)
    # an empty token forgets it, and what came with it
    page.locator("#token").fill("")
    page.locator("#token").press("Enter")
    expect(banner).to_contain_text("A token is needed")
    expect(page.locator("table#devices")).to_have_count(0)
    assert page.evaluate("localStorage.getItem('streamql.token')") is None


def test_devices_are_listed_filtered_and_shown_in_detail(page, fleet):
    edges = fleet.edges()  # the simulation chooses regions and RAM: read them, do not assume them
    open_dashboard(page, fleet)
    everyone = sorted(edges)
    assert len(everyone) == len(EDGES) + 2
    wait_for(lambda: device_ids(page) == everyone, what="every device")
    page.locator("body").press("/")  # the keyboard: / filters, Alt+2 is the query view, Alt+1 back
    expect(page.locator("#device-filter")).to_be_focused()
    page.keyboard.press("Alt+2")
    expect(page.locator("#view-query")).to_be_visible()
    expect(page.locator("#query-text")).to_be_focused()
    page.keyboard.press("Alt+1")
    expect(page.locator("#view-devices")).to_be_visible()
    expect(page.locator("#devices-summary")).to_have_text(f"{len(EDGES) + 1}/{len(EDGES) + 2}")
    offline = page.locator(f'tr[data-id="{OFFLINE}"]')
    expect(offline).to_have_class(re.compile(r"\boffline\b"))
    expect(offline).to_contain_text("never")
    one = EDGES[1]
    online = page.locator(f'tr[data-id="{one}"]')
    expect(online).to_contain_text(edges[one]["metadata"]["region"])
    expect(online).to_contain_text(edges[one]["metadata"]["kind"])
    expect(online.locator("td.col-battery")).to_contain_text("%")  # battery, from the edge's health
    expect(online).to_contain_text("MB")                      # memory

    # the text filter looks at ids and metadata, every word
    wheel = ids_where(edges, lambda e: "wheel" in words_of(e))
    page.locator("#device-filter").fill("wheel")
    wait_for(lambda: device_ids(page) == wheel, what="the text filter")
    expect(page.locator("#device-count")).to_contain_text(f"{len(wheel)} of {len(everyone)} devices")
    region = edges[EDGES[0]]["metadata"]["region"]
    page.locator("#device-filter").fill(f"wheel {region}")
    wait_for(lambda: device_ids(page) == ids_where(edges, lambda e: "wheel" in words_of(e) and region.lower() in words_of(e)),
             what="two words")
    page.locator("#device-filter").fill("")
    # quick filters by region and kind, and status online (OFFLINE shares EDGES[1]'s region)
    region = edges[one]["metadata"]["region"]
    page.locator("#quick-region").select_option(region)
    in_region = ids_where(edges, lambda e: e["metadata"].get("region") == region)
    assert OFFLINE in in_region and one in in_region
    wait_for(lambda: device_ids(page) == in_region, what=f"region = {region}")
    page.locator("#device-status").select_option("online")
    wait_for(lambda: device_ids(page) == [i for i in in_region if i != OFFLINE], what="online only")
    page.locator("#device-clear").click()
    kind = edges[EDGES[2]]["metadata"]["kind"]
    page.locator("#quick-kind").select_option(kind)
    wait_for(lambda: device_ids(page) == ids_where(edges, lambda e: e["metadata"].get("kind") == kind), what=f"kind = {kind}")
    page.locator("#device-clear").click()
    wait_for(lambda: device_ids(page) == everyone, what="cleared filters")
    # sorting by a column
    page.locator("th button.sort", has_text="device").click()
    wait_for(lambda: device_ids(page) == everyone[::-1], what="descending ids")

    # a device's details: metadata, health, signals, capabilities
    shown = EDGES[3]
    page.locator(f'tr[data-id="{shown}"] a').click()
    drawer = page.locator("#device-details")
    expect(page.locator("#device-title")).to_have_text(shown)
    assert page.url.endswith(f"#devices/{shown}")
    for value in edges[shown]["metadata"].values():
        expect(drawer).to_contain_text(str(value))
    expect(drawer.locator("#device-health")).to_contain_text("uptime")
    expect(drawer.locator("#device-signals")).to_contain_text("vibration")
    expect(drawer.locator("#device-signals")).to_contain_text("outside_temperature")
    expect(drawer).to_contain_text("ram_kb")
    expect(drawer).to_contain_text(ram_text(edges[shown]["capabilities"]["ram_kb"]))
    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()
    assert re.search(r"#devices(\?sort=-id)?$", page.url), page.url   # the view's filters stay in the address
    # the details of the offline device say so; a device link also opens by address
    page.goto(f"{fleet.url}/#devices/{OFFLINE}")
    expect(page.locator("#device-title")).to_have_text(OFFLINE)
    expect(drawer).to_contain_text("offline")
    expect(drawer).to_contain_text("no health report yet")


def test_a_continuous_query_draws_a_live_chart_until_stopped(page, fleet):
    open_dashboard(page, fleet, "query")
    run_query(page, VIBRATION)
    chart = page.locator("#chart svg.chart")
    expect(page.locator("#chart")).to_be_visible()  # a stream of numbers per device: the chart
    points = lambda: int(chart.get_attribute("data-points") or 0)  # noqa: E731
    first = wait_for(lambda: points() >= 5 and points(), what="the first points")
    path_length = len(chart.locator("path.line").first.get_attribute("d"))
    wait_for(lambda: points() >= first + 10, what="the chart to grow")
    assert len(chart.locator("path.line").first.get_attribute("d")) > path_length
    # one series per device that answers
    wait_for(lambda: int(chart.get_attribute("data-series")) == len(EDGES) + 1, what="a series per online device")
    legend = page.locator(".legend")
    for device in EDGES + [UNTRUSTING]:
        expect(legend).to_contain_text(device)
    expect(page.locator("#query-info")).to_contain_text("running")
    expect(page.locator("#query-info")).to_contain_text("stream")
    assert any(url.startswith(fleet.url.replace("http", "ws") + "/v1/query/ws?") for url in page.requests)

    page.locator("#stop").click()
    expect(page.locator("#query-info")).to_contain_text("stopped")
    status = page.locator("#status-table")
    expect(status.locator("tbody tr")).to_have_count(len(EDGES) + 2)
    expect(status.locator(f'tr[data-device="{OFFLINE}"]')).to_contain_text("offline")
    expect(status.locator(f'tr[data-device="{EDGES[1]}"]')).to_contain_text("cancelled")
    expect(page.locator("#run")).to_be_enabled()
    stopped_at = rows_shown(page)
    # the cancel reached the federation: nothing runs there any more
    wait_for(lambda: "streamql_queries_running 0" in page.request.get(f"{fleet.url}/metrics").text(),
             what="the statement to end on the federation")
    time.sleep(0.5)
    assert rows_shown(page) == stopped_at
    # the legend hides a series; a double click keeps only that one
    lines = chart.locator("path.line")
    expect(lines).to_have_count(len(EDGES) + 1)
    legend_item = lambda device: page.locator(f'.legend-item[data-key="series:{device}"]')  # noqa: E731
    legend_item(EDGES[1]).click()
    expect(lines).to_have_count(len(EDGES))
    expect(legend_item(EDGES[1])).to_have_attribute("aria-pressed", "false")
    legend_item(EDGES[3]).dblclick()
    expect(lines).to_have_count(1)
    assert lines.get_attribute("data-series") == EDGES[3]
    # the table view of the same rows, newest first
    page.locator("button[data-view=table]").click()
    expect(page.locator("#result-table table.rows thead")).to_contain_text("mean(w)")
    assert page.locator("#result-table table.rows tbody tr").count() == min(stopped_at, 500)


def test_a_bag_query_is_a_table_and_errors_show_where(page, fleet):
    open_dashboard(page, fleet, "query")
    run_query(page, "select id(e), region(e), kind(e) from Edge e;")
    table = page.locator("#result-table table.rows")
    expect(table.locator("tbody tr")).to_have_count(len(EDGES) + 2)
    expect(page.locator("#chart")).to_be_hidden()
    expect(table.locator("thead")).to_contain_text("region(e)")
    expect(table.locator("tbody")).to_contain_text(fleet.edges()[EDGES[2]]["metadata"]["kind"])
    expect(page.locator("#query-info")).to_contain_text("done")
    expect(page.locator("#status-none")).to_be_visible()  # the registry answered alone
    page.locator("button[data-view=chart]").click()  # the toggle: nothing numeric here
    expect(page.locator("#chart")).to_contain_text("nothing numeric to plot")
    page.locator("button[data-view=table]").click()

    # a parse error: kind, position and a caret under it
    run_query(page, "select id(e),\n   from Edge e;")
    error = page.locator("#query-error")
    expect(error).to_contain_text("ParseError")
    expect(error).to_contain_text("line 2, column 9")
    excerpt = page.locator("#error-excerpt").inner_text().split("\n")
    assert excerpt[0].endswith("   from Edge e;")
    text_start = excerpt[0].index("   from")
    assert excerpt[1].index("^") == text_start + 8  # under the E of Edge
    expect(page.locator("#query-gutter .err")).to_have_text("2")
    expect(page.locator("#query-info")).to_contain_text("failed")
    page.locator("#query-error button.link").click()  # puts the cursor there
    assert page.evaluate("document.getElementById('query-text').selectionStart") == len("select id(e),\n   from ")

    # running a selection: the position is still the one in the editor
    page.locator("#query-text").fill("select 1;\nselect nosuch(2);")
    page.evaluate("() => { const t = document.getElementById('query-text'); t.focus(); t.setSelectionRange(10, t.value.length); }")
    page.locator("#query-text").press("Control+Enter")
    expect(error).to_contain_text("NameError")
    expect(error).to_contain_text("line 2, column 8")
    # a good statement clears the error
    run_query(page, "select 1 + 2;")
    expect(error).to_be_hidden()
    expect(page.locator("#result-table")).to_contain_text("3")


def test_a_plot_directive_and_how_results_are_charted(page, fleet):
    open_dashboard(page, fleet, "query")
    # //plot: Line plot charts even a bag
    run_query(page, "//plot: Line plot\nselect id(e), capability(e, 'ram_kb') from Edge e where online(e);")
    expect(page.locator("#chart")).to_be_visible()
    expect(page.locator("#query-info")).to_contain_text("done")
    assert int(page.locator("#chart svg.chart").get_attribute("data-series")) == len(EDGES) + 1
    # //plot: Bar, one bar per region (the text column names the series)
    run_query(page, "//plot: Bar\nselect region(e), count(e) from Edge e group by region(e);")
    expect(page.locator("#query-info")).to_contain_text("done")
    regions = {e["metadata"]["region"] for e in fleet.edges().values()}
    expect(page.locator("#chart svg.chart rect[data-series]")).to_have_count(len(regions))
    for region in regions:
        expect(page.locator(".legend")).to_contain_text(region)
    plans = page.evaluate("""async () => {
        const { planChart } = await import('/static/chart.js');
        const { plotDirective } = await import('/static/query.js');
        return {
            vector: planChart(['id(e)', 'w'], ['Charstring', 'Vector of Real'], []),
            timeval: planChart(['id(e)', 'v'], ['Charstring', 'Timeval of Real'], []),
            keyless: planChart(['t', 'x', 'label'], ['Time', 'Real', 'Charstring'], []),
            text: planChart(['id(e)', 'region(e)'], ['Charstring', 'Object'], [['a', 'EU']]),
            grouped: planChart(['region(e)', 'count(e)'], ['Object', 'Integer'], [['EU', 2]]),
            directives: [plotDirective('//plot: Line plot\\nselect 1;'), plotDirective('-- plot: Scatter\\nselect 1;'),
                         plotDirective('select 1; // a comment'), plotDirective('  //PLOT:bar chart\\nselect 1;')],
        };
    }""")
    assert plans["vector"]["vector"] and plans["vector"]["key"] == 0 and plans["vector"]["plottable"]
    assert plans["timeval"]["values"][0]["timeval"] and not plans["timeval"]["vector"]
    assert plans["keyless"]["time"] == 0 and plans["keyless"]["key"] == 2 and plans["keyless"]["values"][0]["index"] == 1
    assert not plans["text"]["plottable"]
    assert plans["grouped"]["key"] == 0 and plans["grouped"]["values"][0]["index"] == 1
    assert plans["directives"] == ["line", "scatter", None, "bar"]


def test_a_deployment_shows_its_progress_per_device(page, fleet):
    edges = fleet.edges()
    ram = {device: edges[device]["capabilities"]["ram_kb"] for device in EDGES}
    # a bundle that needs more RAM than the smallest devices have (when their RAM differs)
    least = min(ram.values())
    requirement = least if len(set(ram.values())) > 1 else None
    done = [d for d in EDGES if requirement is None or ram[d] > least]
    skipped = [d for d in EDGES if d not in done]
    deployment = fleet.deploy_bundle("vib-anomaly", "1.0.0", requirements={"ram_kb": requirement} if requirement else None)
    open_dashboard(page, fleet, "deployments")
    # the running deployment opens by itself
    expect(page.locator("#deployment-title")).to_contain_text(f"#{deployment} deploy vib-anomaly 1.0.0")
    targets = page.locator("#deployment-devices tbody")
    row = lambda device: targets.locator(f'tr[data-device="{device}"]')  # noqa: E731
    for device in done:
        expect(row(device)).to_have_attribute("data-state", "done")
    for device in skipped:
        expect(row(device)).to_have_attribute("data-state", "skipped")
        expect(row(device)).to_contain_text("KB of RAM")  # the reason, from the fit check
    expect(row(UNTRUSTING)).to_have_attribute("data-state", "failed")
    expect(row(UNTRUSTING)).to_contain_text("trusts no signing keys")  # the device's own reason
    expect(row(OFFLINE)).to_have_attribute("data-state", "pending")  # sent when it connects
    expect(page.locator("#deployment-detail")).to_contain_text("1 offline device")
    expect(page.locator(f'#deployments tr[data-id="{deployment}"]')).to_contain_text(f"{len(done)} done")
    page.locator("#deployment-detail button", has_text="failed 1").click()
    expect(targets.locator("tr")).to_have_count(1)
    expect(targets.locator("tr")).to_contain_text(UNTRUSTING)

    # the devices view shows the model version where it runs
    page.goto(f"{fleet.url}/#devices")
    expect(page.locator(f'tr[data-id="{done[0]}"]')).to_contain_text("vib-anomaly1.0.0")
    expect(page.locator(f'tr[data-id="{UNTRUSTING}"]')).not_to_contain_text("vib-anomaly")

    # a deployment statement from the query box (a deploy-capable token) leads to its progress
    page.locator("#token").fill(fleet.admin)
    page.locator("#token").press("Enter")
    page.goto(f"{fleet.url}/#query")
    run_query(page, f"undeploy model 'vib-anomaly' from Edge e where id(e) = '{done[-1]}';")
    expect(page.locator("#query-message")).to_contain_text("show deployment")
    page.locator("#query-message button").click()
    expect(page.locator("#deployment-title")).to_contain_text("undeploy vib-anomaly")
    expect(page.locator(f'#deployment-devices tr[data-device="{done[-1]}"]')).to_have_attribute("data-state", "done")


def test_statements_also_run_over_plain_http(page, fleet):
    page.add_init_script("localStorage.setItem('streamql.transport', 'http')")
    open_dashboard(page, fleet, "query")
    run_query(page, VIBRATION)
    chart = page.locator("#chart svg.chart")
    wait_for(lambda: int(chart.get_attribute("data-points") or 0) >= 10, what="points over NDJSON")
    page.locator("#query-text").press("Escape")  # Esc in the editor stops
    expect(page.locator("#query-info")).to_contain_text("stopped")
    expect(page.locator("#query-status")).to_contain_text("the connection was closed")
    run_query(page, "select id(e) from Edge e where online(e);")
    expect(page.locator("#result-table table.rows tbody tr")).to_have_count(len(EDGES) + 1)
    run_query(page, "select 1 +;")
    expect(page.locator("#query-error")).to_contain_text("line 1, column 11")
    assert not any("/v1/query/ws" in url for url in page.requests)

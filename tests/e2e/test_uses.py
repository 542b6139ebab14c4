"""The four ways to use StreamQL end to end on a running demo: the shell in a pseudo-terminal
on the federation, the HTTP API with a plain HTTP client, the edge daemons as processes (the
demo's fleet), and the fleet example scripts through `streamql query`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import msgpack
import pytest

from demo_process import ROOT

pytestmark = pytest.mark.timeout(300)


def _post(url: str, token: str, query: str, accept: str = "application/x-ndjson"):
    request = urllib.request.Request(f"{url}/v1/query", data=json.dumps({"query": query}).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Accept": accept,
                                              "Content-Type": "application/json"})
    return urllib.request.urlopen(request, timeout=60)


def test_the_http_api_streams_ndjson_with_each_devices_outcome(demo):
    with _post(demo.url, demo.read_token, "select id(e), region(e), signal_value('engine_speed')@e from Edge e;") as response:
        assert response.status == 200
        lines = [json.loads(line) for line in response.read().decode().splitlines()]
    rows, last = lines[:-1], lines[-1]
    assert len(rows) == demo.edges and all(len(row) == 3 and 600 <= row[2] <= 2400 for row in rows)
    status = last["status"]
    assert last["complete"] is True and status["complete"] is True and status["incomplete"] == []
    assert status["counts"] == {"answered": demo.edges} and status["selected"] == demo.edges
    assert set(status["devices"]) == {row[0] for row in rows}
    assert all(s["outcome"] == "answered" and s["rows"] == 1 for s in status["devices"].values())


def test_the_http_api_streams_a_continuous_query_until_the_client_goes(demo):
    response = _post(demo.url, demo.read_token, "select stream of id(e), x from Edge e, Real x "
                                                "where x in signal_stream('engine_speed')@e;")
    first = []
    while len(first) < 20:   # rows; a device coming or going is a {"status_change": …} line between them
        line = json.loads(response.readline())
        if isinstance(line, list):
            first.append(line)
    response.close()  # the client goes away: the fragments are cancelled
    assert all(600 <= row[1] <= 2400 for row in first)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        metrics = urllib.request.urlopen(f"{demo.url}/metrics", timeout=10).read().decode()
        running = [line for line in metrics.splitlines() if line.startswith("streamql_queries_running")]
        if running and running[0].split()[-1] in ("0", "0.0"):
            break
        time.sleep(0.2)
    assert running and running[0].split()[-1] in ("0", "0.0"), running


def test_the_http_api_speaks_msgpack_and_reports_errors_with_positions(demo):
    with _post(demo.url, demo.read_token, "select id(e), capability(e, 'ram_kb') from Edge e;",
               accept="application/x-msgpack") as response:
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(response.read())
        items = list(unpacker)
    assert len(items) == demo.edges + 1 and all(isinstance(row[1], int) for row in items[:-1])
    bad = "select id(e) from Edge e where region(e) = ;"
    with pytest.raises(urllib.error.HTTPError) as caught:
        _post(demo.url, demo.read_token, bad)
    assert caught.value.code == 400
    error = json.loads(caught.value.read())["error"]
    assert (error["kind"], error["line"], error["column"]) == ("ParseError", 1, bad.index(";") + 1)


def test_the_dashboard_and_the_openapi_document_are_served(demo):
    page = urllib.request.urlopen(f"{demo.url}/", timeout=10).read().decode()
    assert "<html" in page.lower() and "http://" not in page.replace(demo.url, "")
    request = urllib.request.Request(f"{demo.url}/v1/openapi.json", headers={"Authorization": f"Bearer {demo.read_token}"})
    document = json.loads(urllib.request.urlopen(request, timeout=10).read())
    assert {"/v1/query", "/v1/edges", "/v1/deployments/{id}", "/v1/models"} <= set(document["paths"])


@pytest.mark.parametrize("script, expect", [
    ("vibration_by_region.sql", "fragment (stream) on each selected edge"),
    ("aggregates_by_region.sql", "partial aggregates from the edges, merged here"),
    ("drift.sql", None),
    ("deadband.sql", None),
    ("deploy.sql", "1.2.0"),
    ("rollback.sql", "1.1.0"),
])
def test_the_fleet_examples_run_through_streamql_query(demo, script, expect):
    run = subprocess.run([sys.executable, "-m", "streamql.cli", "query", "--federation", demo.url, "--token", demo.admin,
                          "-f", str(ROOT / "examples" / "fleet" / script)], capture_output=True, text=True,
                         timeout=240, cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip()
    if expect:
        assert expect in run.stdout


def test_the_python_client_example_runs(demo):
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "fleet" / "client.py"), demo.url, demo.read_token],
                         capture_output=True, text=True, timeout=120, cwd=str(ROOT),
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"{demo.edges} edges" in run.stdout


def test_the_shell_on_the_federation_in_a_terminal(demo, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=str(ROOT), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1",
               COLUMNS="120", LINES="40")
    child = pexpect.spawn(sys.executable, ["-m", "streamql.cli", "shell", "--federation", demo.url, "--token",
                                           demo.admin], env=env, cwd=str(ROOT), encoding="utf-8", timeout=60,
                          dimensions=(40, 120))
    prompt = r"127\.0\.0\.1:\d+>"
    try:
        child.expect(prompt)
        child.send("select region(e), count(e) from Edge e group by region(e) order by region(e);\r")
        child.expect(r"\(\d+ rows?\)")
        child.send("select stream of id(e), x from Edge e, Real x where x in signal_stream('engine_speed')@e;\r")
        child.expect(r"(wl|dt|ex)-\d{4} +\| +\d+\.\d+")       # rows keep coming
        child.expect(r"(wl|dt|ex)-\d{4} +\| +\d+\.\d+")
        time.sleep(0.3)
        child.sendintr()                                        # Ctrl-C stops the fleet query
        child.expect(r"cancelled")
        child.expect(prompt)
        child.send("\\edges\r")
        child.expect(r"wl-0001")
        child.expect(prompt)
        child.send("deploy model 'vib-anomaly' version '1.2.0' to Edge e where kind(e) = 'excavator';\r")
        excavators = sum(1 for i in range(1, demo.edges + 1) if i % 3 == 0)
        child.expect(rf"{excavators}/{excavators} +done {excavators} ")   # the rollout's progress, to the end
        child.expect(r"complete")
        child.expect(prompt)
        child.send("select 'the session survived';\r")
        child.expect(r"the session survived\r\n\(1 row\)")
        # Ctrl-D typed before the prompt is back would be the terminal's end-of-file in cooked mode
        child.expect(prompt)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0

"""The fleet-query shapes, run as the user runs them: `streamql federation` and `streamql edge`
processes with constant signals, asked over POST /v1/query and the `streamql query` command, each
answer compared with an oracle computed from tests/fleet/processes.py alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict

import numpy as np
import pytest

from processes import DEVICES, ROOT, TRANSPORTS, start_fleet

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
ONLINE = [d for d in DEVICES if d.online]
OFFLINE = [d.id for d in DEVICES if not d.online]
T = "signal_value('outside_temperature')@e"


@pytest.fixture(scope="module", params=TRANSPORTS)
def fleet(request, tmp_path_factory):
    fleet = start_fleet(tmp_path_factory.mktemp(f"constant-fleet-{request.param}"), request.param, two_nodes=True)
    try:
        yield fleet
    finally:
        fleet.stop()


def answer(fleet, statement: str, **fields):
    status, rows, last = fleet.post(statement, **fields)
    assert status == 200, last
    return rows, last


def assert_incomplete_by_offline(last):
    status = last["status"]
    assert last["complete"] is False and status["incomplete"] == OFFLINE
    assert status["devices"][OFFLINE[0]]["outcome"] == "offline"
    assert status["counts"] == {"answered": len(ONLINE), "offline": len(OFFLINE)}


# ------------------------------------------------------------------------ the table
def test_count_of_edges_with_a_live_condition(fleet):
    rows, last = answer(fleet, f"select count(e) from Edge e where {T} < -20;")
    assert rows == [[sum(1 for d in ONLINE if d.temperature < -20)]]
    assert_incomplete_by_offline(last)


def test_avg_min_max_sum(fleet):
    temperatures = [d.temperature for d in ONLINE]
    rows, _ = answer(fleet, f"select avg({T}) from Edge e;")
    assert rows == [[pytest.approx(np.mean(temperatures))]]
    rows, _ = answer(fleet, f"select min({T}), max({T}), sum({T}) from Edge e;")
    assert rows == [[min(temperatures), max(temperatures), pytest.approx(sum(temperatures))]]


def test_group_by_region_with_count_and_max(fleet):
    rows, _ = answer(fleet, f"select region(e), count(e), max({T}) from Edge e group by region(e);")
    groups = defaultdict(list)
    for d in ONLINE:
        groups[d.region].append(d.temperature)
    assert sorted(rows) == sorted([r, len(t), max(t)] for r, t in groups.items())


def test_having(fleet):
    rows, _ = answer(fleet, f"select region(e), count(e) from Edge e where {T} < -20 group by region(e) "
                            "having count(e) >= 2;")
    counts = defaultdict(int)
    for d in ONLINE:
        counts[d.region] += d.temperature < -20
    assert sorted(rows) == sorted([r, n] for r, n in counts.items() if n >= 2) and rows


def test_stdev_by_kind(fleet):
    rows, _ = answer(fleet, f"select kind(e), stdev({T}) from Edge e group by kind(e);")
    groups = defaultdict(list)
    for d in ONLINE:
        groups[d.kind].append(d.temperature)
    expected = {k: (np.std(v, ddof=1) if len(v) > 1 else None) for k, v in groups.items()}
    assert {k: v for k, v in rows} == pytest.approx(expected)


def test_a_variable_bound_on_the_edge(fleet):
    rows, _ = answer(fleet, f"select count(e), avg(t) from Edge e, Real t where t = {T};")
    assert rows == [[len(ONLINE), pytest.approx(np.mean([d.temperature for d in ONLINE]))]]


def test_limit_among_many_registered_edges_half_offline_answers_at_once(fleet):
    for i in range(300):   # registered, never connected
        fleet.api("POST", "/v1/edges", {"id": f"spare-{i:04}", "metadata": {"region": "EU", "kind": "spare"}})
    started = time.monotonic()
    rows, last = answer(fleet, "select id(e), signal_value('battery')@e from Edge e where region(e) = 'EU' limit 3;")
    assert time.monotonic() - started < 30           # offline devices are never waited for
    eu = {d.id: d.battery for d in ONLINE if d.region == "EU"}
    assert len(rows) == len(eu) and all(eu[device] == battery for device, battery in rows)
    assert last["status"]["counts"]["offline"] == 301 and last["complete"] is False


# ------------------------------------------------------------------------ more
def test_aggregates_over_each_edges_rows(fleet):
    rows, last = answer(fleet, "select region(e), count(x), avg(x), stdev(x), median(x), count(distinct x) "
                               "from Edge e, Real x where x in vectorof(first_n(signal_stream('load'), 50))@e "
                               "group by region(e);")
    groups = defaultdict(list)
    for d in ONLINE:
        groups[d.region] += [d.battery / 10] * 50
    assert {r[0]: r[1:] for r in rows} == {
        region: [len(v), pytest.approx(np.mean(v)), pytest.approx(np.std(v, ddof=1), abs=1e-9),
                 pytest.approx(np.median(v)), len(set(v))] for region, v in groups.items()}


def test_a_standing_stream_over_http_reaches_a_device_that_connects_later(fleet):
    late = next(d for d in DEVICES if not d.online)
    body = json.dumps({"query": "select stream of id(e), x from Edge e, Real x "
                                "where x in signal_stream('battery')@e and kind(e) = 'dumper';"}).encode()
    request = urllib.request.Request(fleet.url + "/v1/query", data=body, method="POST", headers={
        "Authorization": f"Bearer {fleet.read}", "Content-Type": "application/json"})
    response = urllib.request.urlopen(request, timeout=120)
    seen, changes = set(), []
    try:
        edge = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and late.id not in seen:
            line = json.loads(response.readline())
            if isinstance(line, list):
                seen.add(line[0])
                assert line[1] == next(d.battery for d in DEVICES if d.id == line[0])
                if edge is None and seen >= {d.id for d in ONLINE if d.kind == "dumper"}:
                    edge = fleet.start_edge(late)          # the late one connects now
            else:
                changes.append(line["status_change"])
        assert late.id in seen
        assert [c["outcome"] for c in changes if c["device"] == late.id][-1] == "running"
    finally:
        response.close()
        if late.id in fleet.procs:
            fleet.procs.pop(late.id).terminate()


# ------------------------------------------------------------------------ errors and status
@pytest.mark.parametrize("statement, kind, at", [
    (f"select id(e) from Edge e where {T} < 'cold';", "TypeError", T),
    ("select count(e) from Edge e where signal_value('outside_temprature')@e < -20;", "NameError",
     "'outside_temprature'"),
    ("select signal_value('battery') from Edge e;", "NameError", "signal_value("),
])
def test_mistakes_are_4xx_errors_at_their_position(fleet, statement, kind, at):
    status, rows, error = fleet.post(statement)
    assert status == 400 and error["error"]["kind"] == kind
    assert (error["error"]["line"], error["error"]["column"]) == (1, statement.index(at) + 1)


def test_a_statement_that_fails_on_every_device_is_an_error_at_the_users_position(fleet):
    statement = "select id(e), ([1, 2, 3][cast(signal_value('battery') as Integer)])@e from Edge e;"
    status, rows, error = fleet.post(statement)
    assert status == 400 and error["error"]["kind"] == "RuntimeError", error
    assert error["error"]["line"] == 1 and statement.index("[1, 2, 3]") < error["error"]["column"] <= \
        statement.index(")@e") + 1


def test_the_cli_says_when_an_answer_is_incomplete(fleet):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STREAMQL_TOKEN": fleet.read}
    base = [sys.executable, "-m", "streamql.cli", "query", "--federation", fleet.url]
    whole = subprocess.run([*base, f"select id(e), {T} from Edge e where kind(e) != 'spare';"], capture_output=True,
                           text=True, env=env, timeout=120)
    assert whole.returncode == 4, whole.stderr
    assert f"{len(ONLINE)} answered · 1 offline ({OFFLINE[0]}) · 0 failed" in whole.stderr
    us = subprocess.run([*base, f"select id(e), {T} from Edge e where region(e) = 'US';"], capture_output=True,
                        text=True, env=env, timeout=120)
    assert us.returncode == 0, us.stderr
    assert sorted(us.stdout.split()) == sorted(x for d in ONLINE if d.region == "US" for x in (d.id, str(d.temperature)))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_functions_defined_at_the_federation_survive_a_restart_and_run_on_the_edges(tmp_path, transport):
    fleet = start_fleet(tmp_path, transport, DEVICES[:2], two_nodes=True)
    try:
        headers = {"Authorization": f"Bearer {fleet.admin}", "Content-Type": "application/json"}

        def admin(statement: str):
            request = urllib.request.Request(fleet.url + "/v1/query", method="POST", headers=headers,
                                             data=json.dumps({"query": statement}).encode())
            with urllib.request.urlopen(request, timeout=60) as response:
                return [json.loads(line) for line in response.read().decode().splitlines()]

        admin("create function fahrenheit(Number c) -> Real as c * 9 / 5 + 32;")
        fleet.restart_federation()
        listed = {f["name"]: f for f in fleet.api("GET", "/v1/functions", token=fleet.read)["functions"]}
        assert listed["fahrenheit"]["signature"] == "fahrenheit(Number c) -> Real"
        assert "region" in listed and "signal_value" in listed          # fleet and library functions too
        rows, _ = answer(fleet, "select id(e), fahrenheit(signal_value('outside_temperature'))@e from Edge e;")
        assert sorted(rows) == sorted([d.id, d.temperature * 9 / 5 + 32] for d in DEVICES[:2])
    finally:
        fleet.stop()


def test_the_scale_out_fleet_is_the_real_configuration(fleet):
    """On "scale-out" the fleet must really be two nodes with their own data directories, the registry
    in PostgreSQL and a nats-server that lets in only what the callout authorizes: a fixture that fell
    back to SQLite or an open server would pass every other test here."""
    if not hasattr(fleet, "infra"):
        pytest.skip("the scale-out configuration only")
    import asyncio

    import nats
    import psycopg

    data = {name: fleet.node_data(name) for name in fleet.node_names}
    assert len(set(data.values())) == 2
    for directory in data.values():
        assert (directory / "nats-security.json").exists()
        assert not list(directory.glob("registry*.sqlite3")), sorted(p.name for p in directory.iterdir())
    with psycopg.connect(fleet.infra.registry_url) as conn:
        ids = {row[0] for row in conn.execute("select id from devices")}
    assert ids >= {d.id for d in DEVICES}

    async def refused(**credentials) -> str:
        try:
            nc = await nats.connect(fleet.server.url, allow_reconnect=False, connect_timeout=3,
                                    max_reconnect_attempts=0, **credentials)
        except Exception as error:   # noqa: BLE001 - the refusal is what we want to see
            return str(error) or type(error).__name__
        await nc.close()
        return ""

    assert asyncio.run(refused()), "the nats-server let in a connection without credentials"
    assert asyncio.run(refused(token="not-a-device-token")), "the nats-server let in a made-up token"
    for node in fleet.node_names:      # either node answers for every edge
        rows, _ = answer(fleet.on(node), f"select id(e), {T} from Edge e;")
        assert sorted(rows) == sorted([d.id, d.temperature] for d in ONLINE)
    fleet.on("A")

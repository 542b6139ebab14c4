"""Statements at the federation run in its worker pool, never on its event loop: clients that
leave cancel them, a statement that works hard does not stall the others or the edges' links,
and SIGTERM stops the federation within 10 s whatever runs. Real processes, generous bounds."""
from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request

import pytest

from processes import TRANSPORTS, Device, start_fleet

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
DEVICES = [Device("wl-1", "US", "wheel loader", -25.0, 80.0), Device("dt-1", "EU", "dumper", -30.0, 40.0),
           Device("ex-1", "AU", "excavator", 10.0, 20.0)]
ENDLESS = ["select stream of x from Real x where x in heartbeat(60);",
           "select stream of x from Real x where x in simstream(0.01);",
           "select stream of x from Object x where x in subscribe('nobody-publishes');",
           "select stream of id(e), x from Edge e, Real x where x in signal_stream('battery')@e;"]


@pytest.fixture(scope="module", params=TRANSPORTS)
def fleet(request, tmp_path_factory):
    fleet = start_fleet(tmp_path_factory.mktemp(f"resources-{request.param}"), request.param, DEVICES)
    try:
        yield fleet
    finally:
        fleet.stop()


def open_stream(fleet, statement: str):
    body = json.dumps({"query": statement}).encode()
    request = urllib.request.Request(fleet.url + "/v1/query", data=body, method="POST", headers={
        "Authorization": f"Bearer {fleet.read}", "Content-Type": "application/json"})
    return urllib.request.urlopen(request, timeout=60)


def running(fleet) -> float:
    metrics = urllib.request.urlopen(fleet.url + "/metrics", timeout=10).read().decode()
    line = next(l for l in metrics.splitlines() if l.startswith("streamql_queries_running"))
    return float(line.split()[-1])


def timed(fleet, statement: str) -> tuple[float, list]:
    started = time.monotonic()
    status, rows, last = fleet.post(statement)
    assert status == 200, last
    return time.monotonic() - started, rows


def test_clients_that_leave_cancel_their_statements(fleet):
    streams = [open_stream(fleet, ENDLESS[i % len(ENDLESS)]) for i in range(12)]   # under the token's limit
    assert all(s.status == 200 for s in streams)
    assert timed(fleet, "select 1;")[1] == [[1]]       # the others still answer while 12 streams run
    for stream in streams:
        stream.close()                                   # the clients go away
    fleet.wait(lambda: running(fleet) == 0, 30, "every abandoned statement to be cancelled")
    for _ in range(3):
        seconds, rows = timed(fleet, "select 1;")
        assert rows == [[1]] and seconds < 5
    assert fleet.online() == {d.id for d in DEVICES}


def test_a_statement_that_works_hard_does_not_stall_the_others(fleet):
    outcome = {}

    def heavy():
        outcome["answer"] = fleet.post("select count(x) from Integer x where x in iota(1, 3000000000);",
                                       limits={"seconds": 3, "memory_mb": 64})

    worker = threading.Thread(target=heavy)
    worker.start()
    time.sleep(0.5)
    slowest = max(timed(fleet, "select 1;")[0] for _ in range(5))
    answer = timed(fleet, "select id(e), signal_value('battery')@e from Edge e;")[1]
    worker.join(60)
    assert slowest < 3 and sorted(answer) == sorted([d.id, d.battery] for d in DEVICES)
    status, _, error = outcome["answer"]
    assert status == 400 and error["error"]["kind"] == "LimitError"    # stopped by its own limit, before any row
    assert fleet.online() == {d.id for d in DEVICES}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_statements_past_the_pool_are_refused_not_queued(tmp_path, transport):
    fleet = start_fleet(tmp_path, transport, DEVICES[:1], federation_args=["--statement-workers", "4"])
    try:
        streams = [open_stream(fleet, ENDLESS[0]) for _ in range(4)]        # streams have a lane of their own
        assert timed(fleet, "select 1;")[1] == [[1]]
        # one token holds at most a quarter of the workers: while its slow statement runs, its next
        # one waits, and is refused after the short wait
        slow = threading.Thread(target=fleet.post, args=("select count(iota(1, 1000000000000));",),
                                kwargs={"limits": {"seconds": 12}})
        slow.start()
        time.sleep(1.0)
        status, _, error = fleet.post("select id(e), signal_value('battery')@e from Edge e;")
        assert status == 503 and error["error"]["kind"] == "Busy"           # refused after the short wait
        status, rows, _ = fleet.post("explain select 1;")
        assert status == 200 and rows                                       # planning has threads of its own
        assert timed(fleet, "select 1;")[1] == [[1]]                        # the fast lane
        slow.join(30)
        fleet.wait(lambda: fleet.post("select id(e) from Edge e;")[0] == 200, 30, "the token's worker to free")
        for stream in streams:
            stream.close()
    finally:
        fleet.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sigterm_stops_the_federation_within_ten_seconds_whatever_runs(tmp_path, transport):
    fleet = start_fleet(tmp_path, transport, DEVICES[:1])
    try:
        streams = [open_stream(fleet, statement) for statement in ENDLESS]
        federation = fleet.procs["federation"]
        started = time.monotonic()
        federation.send_signal(signal.SIGTERM)
        federation.wait(30)
        assert time.monotonic() - started < 10, fleet.log("federation")[-2000:]
        for stream in streams:
            stream.close()
    finally:
        fleet.stop()

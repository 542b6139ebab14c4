"""Nothing one statement or one client does takes a device or the federation down: the rows of the
issue's table, against a real `streamql federation` and a real `streamql edge`.

Files belong to the operator (the federation reads none; an edge only its files directory), a
statement's memory, time and cancellation hold inside one library call on an edge and at the
federation, a client cannot raise an edge's memory limit, a read token gets its role's limits,
and after each statement `select 1;` and a fleet query still answer, with both processes' peak
memory (VmHWM) bounded. Real processes, generous bounds."""
from __future__ import annotations

import http.client
import json
import os
import time
from pathlib import Path

import pytest

from processes import TRANSPORTS, Device, start_fleet

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
DEVICE = Device("wl-1", "US", "wheel loader", -25.0, 80.0)
READ_MEMORY_MB = 64     # the read role's limits (defaults and ceiling) at this federation
PEAK_MB = 600           # neither process may ever hold more than this


@pytest.fixture(scope="module", params=TRANSPORTS)
def fleet(request, tmp_path_factory):
    fleet = start_fleet(tmp_path_factory.mktemp(f"safety-{request.param}"), request.param, [DEVICE],
                        federation_args=["--query-limits", f"read:memory_mb={READ_MEMORY_MB}"])
    files = fleet.dir / "edges" / DEVICE.id / "files"
    files.mkdir(parents=True, exist_ok=True)
    (files / "readings.csv").write_text("1,2\n3,4\n")
    (files / "passwd").symlink_to("/etc/passwd")
    try:
        yield fleet
    finally:
        fleet.stop()


def status_of(fleet, name: str, field: str) -> int:
    """A /proc/PID/status field of a process of the fleet, in kB."""
    for line in Path(f"/proc/{fleet.procs[name].pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {name}")


def cpu_seconds(fleet, name: str) -> float:
    fields = Path(f"/proc/{fleet.procs[name].pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def assert_idle(fleet, name: str) -> None:
    """The process is not still working on a stopped statement: under half a core over 2 s (its
    signals and heartbeats cost a little); a worker left counting would take a whole core."""
    time.sleep(1.0)
    before = cpu_seconds(fleet, name)
    time.sleep(2.0)
    assert cpu_seconds(fleet, name) - before < 1.0, f"{name} still busy"


def assert_alive(fleet) -> None:
    """Both processes answer, neither ever held more than PEAK_MB."""
    status, rows, _ = fleet.post("select 1;")
    assert (status, rows) == (200, [[1]])
    status, rows, last = fleet.post("select id(e), count(iota(1, 10))@e from Edge e;")
    assert (status, rows) == (200, [[DEVICE.id, 10]]), last
    for name in ("federation", DEVICE.id):
        assert fleet.procs[name].poll() is None, fleet.log(name)[-2000:]
        assert status_of(fleet, name, "VmHWM") < PEAK_MB * 1024, f"{name} peaked past {PEAK_MB} MB"


def post(fleet, statement: str, token: str, **fields) -> tuple[int, list, dict]:
    """POST /v1/query with `token`: (HTTP status, rows, the last line or the error)."""
    connection = http.client.HTTPConnection("127.0.0.1", int(fleet.url.rsplit(":", 1)[1]), timeout=120)
    try:
        connection.request("POST", "/v1/query", json.dumps({"query": statement, **fields}),
                           {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = connection.getresponse()
        lines = [json.loads(line) for line in response.read().decode().splitlines() if line.strip()]
    finally:
        connection.close()
    return response.status, [line for line in lines if isinstance(line, list)], lines[-1]


def refused(fleet, statement: str, kind: str, token: str | None = None, **fields) -> str:
    status, rows, last = post(fleet, statement, token or fleet.read, **fields)
    assert status == 400 and not rows, (statement, last)
    assert last["error"]["kind"] == kind, last
    return last["error"]["message"]


# --- files ------------------------------------------------------------------------------------------
def test_the_federation_reads_no_files(fleet):
    message = refused(fleet, "select x from Object x where x in csv:file_stream('/etc/passwd') limit 2;",
                      "RuntimeError")
    assert "no files directory" in message and "root:" not in message
    message = refused(fleet, "select json:file_stream('/etc/hostname');", "RuntimeError")
    assert "no files directory" in message
    # create model … from 'file' reads a file too: refused to a read token (403), and to an admin
    assert fleet.post("create model m from '/etc/passwd';")[0] == 403
    message = refused(fleet, "create model m from '/etc/passwd';", "RuntimeError", token=fleet.admin)
    assert "no files directory" in message
    assert_alive(fleet)


def test_an_edge_reads_only_its_files_directory(fleet):
    rows = fleet.post("select vectorof(csv:file_stream('readings.csv'))@e from Edge e;")[1]
    assert rows == [[[[1, 2], [3, 4]]]]
    for path in ("/etc/passwd", "../../../../../../etc/passwd", "passwd"):   # absolute, `..`, a symlink out
        message = refused(fleet, f"select vectorof(csv:file_stream('{path}'))@e from Edge e;", "RuntimeError")
        assert "reads only files inside" in message and str(Path("edges") / DEVICE.id / "files") in message
        assert "root:" not in message
    # outside, a file that exists and one that does not are refused alike
    missing = refused(fleet, "select vectorof(json:file_stream('/no/such/file'))@e from Edge e;", "RuntimeError")
    present = refused(fleet, "select vectorof(json:file_stream('/etc/hostname'))@e from Edge e;", "RuntimeError")
    assert missing == present.replace("/etc/hostname", "/no/such/file")
    assert_alive(fleet)


# --- limits on an edge ------------------------------------------------------------------------------
def test_counting_a_trillion_on_an_edge_stops_at_its_time_limit(fleet):
    started = time.monotonic()
    message = refused(fleet, "select count(iota(1, 1000000000000))@e from Edge e;", "LimitError",
                      limits={"seconds": 1, "memory_mb": 16})
    assert "time limit" in message and time.monotonic() - started < 10
    assert_idle(fleet, DEVICE.id)
    assert_alive(fleet)


def test_a_client_that_leaves_stops_the_edge_counting(fleet):
    connection = http.client.HTTPConnection("127.0.0.1", int(fleet.url.rsplit(":", 1)[1]), timeout=1.5)
    statement = "select count(iota(1, 1000000000000))@e from Edge e;"
    connection.request("POST", "/v1/query", json.dumps({"query": statement}),
                       {"Authorization": f"Bearer {fleet.read}", "Content-Type": "application/json"})
    with pytest.raises(OSError):   # no answer for hours: the client gives up and closes
        connection.getresponse()
    connection.close()
    assert_idle(fleet, DEVICE.id)
    assert_alive(fleet)


def test_an_edge_counts_a_large_bag_without_holding_it_and_refuses_a_huge_vector(fleet):
    status, rows, last = fleet.post("select count(iota(1, 300000000))@e from Edge e;", limits={"memory_mb": 16})
    assert (status, rows) == (200, [[300000000]]), last
    message = refused(fleet, "select sum(zeros(100000000) + 1)@e from Edge e;", "LimitError")
    assert "zeros(100000000) would take 800 MB" in message
    assert_alive(fleet)


def test_a_client_cannot_raise_an_edges_memory_limit(fleet):
    # 400 MB asked for with a limit of 100 GB: the edge's own 256 MB is the ceiling
    message = refused(fleet, "select dim(zeros(50000000))@e from Edge e;", "LimitError",
                      limits={"memory_mb": 100000})
    assert "memory limit of" in message and "100000" not in message
    assert_alive(fleet)


# --- limits at the federation -----------------------------------------------------------------------
def test_the_federation_refuses_a_huge_vector_by_its_default_limit(fleet):
    message = refused(fleet, "select zeros(50000000);", "LimitError")
    assert f"memory limit of {READ_MEMORY_MB} MB" in message     # the read role's limit
    assert_alive(fleet)


def test_a_read_token_cannot_raise_its_roles_limit_but_an_admin_has_its_own(fleet):
    message = refused(fleet, "select count(x) from Integer x where x in iota(1, 3000000000);", "LimitError",
                      limits={"memory_mb": 200})
    assert f"memory limit of {READ_MEMORY_MB} MB" in message
    # the admin role has no limits of its own here: the federation's default (256 MB) allows 160 MB
    status, rows, last = post(fleet, "select dim(zeros(20000000));", fleet.admin)
    assert (status, rows) == (200, [[20000000]]), last
    assert_alive(fleet)


def test_a_huge_count_at_the_federation_stops_at_its_memory_limit(fleet):
    started = time.monotonic()
    message = refused(fleet, "select count(x) from Integer x where x in iota(1, 3000000000);", "LimitError",
                      limits={"memory_mb": 32, "seconds": 30})
    assert "memory limit of 32 MB" in message and time.monotonic() - started < 30
    message = refused(fleet, "select count(x) from Integer x where x in iota(1, 3000000000);", "LimitError",
                      limits={"seconds": 1})
    assert "time limit" in message or "memory limit" in message
    assert_idle(fleet, "federation")
    assert_alive(fleet)

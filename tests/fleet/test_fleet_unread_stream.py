"""A client that stops reading a fleet stream (issue 12): the federation's writes to it stop after a
bounded amount (the kernel keeps at most about 64 KiB on the federation's side of a stream's
connection, not the megabytes it grows to by itself), the edges then pause (their credit follows
what the client takes), nothing piles up in the federation's memory, and when the client reads
again the rows flow again, in order. Real `streamql federation` and `streamql edge` processes with
a fast constant signal (5,000 rows a second per edge)."""
from __future__ import annotations

import json
import re
import socket
import time
import urllib.request

import pytest

from processes import ConstantFleet, Device

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
DEVICES = [Device("wl-1", "US", "wheel loader", -25.0, 80.0), Device("dt-1", "EU", "dumper", -30.0, 40.0)]
STREAM = "select stream of id(e), x from Edge e, Real x where x in signal_stream('fast')@e;"
ROW = len(b'["wl-1",8.0]\n')        # a row's line: 12–13 bytes


class FastFleet(ConstantFleet):
    def start_edge(self, device):
        self._env[device.id] = {"STREAMQL_EDGE_TOKEN": self.tokens[device.id]}
        return self.spawn(device.id, "edge", "--id", device.id, "--federation", self.url,
                          "--store", str(self.dir / "edges" / device.id), "--heartbeat", "2",
                          "--log-level", "warning",
                          "--signal", "name=fast,shape=constant,offset=8,rate_hz=5000")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    fleet = FastFleet(tmp_path_factory.mktemp("unread"), DEVICES).start()
    try:
        yield fleet
    finally:
        fleet.stop()


def metric(fleet, name: str) -> float:
    with urllib.request.urlopen(fleet.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(rf"^{name} (\S+)", text, re.M)
    return float(found.group(1)) if found else 0.0


def until_still(read, seconds: float, timeout: float) -> float | None:
    """read() once it stayed the same for `seconds`, or None when it still moved after timeout."""
    began = time.monotonic()
    last, since = read(), time.monotonic()
    while time.monotonic() - began < timeout:
        time.sleep(0.5)
        value = read()
        if value != last:
            last, since = value, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return value
    return None


def rss_kb(fleet) -> int:
    status = open(f"/proc/{fleet.procs['federation'].pid}/status").read()
    return int(status.split("VmRSS:")[1].split()[0])


def test_a_stream_nobody_reads_stops_the_writes_and_the_edges_then_flows_again(fleet):
    client = socket.create_connection(("127.0.0.1", fleet.port))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)    # what an unread client holds
    body = json.dumps({"query": STREAM}).encode()
    client.sendall(b"POST /v1/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + fleet.read.encode()
                   + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                   + b"\r\n\r\n" + body)
    try:
        written_before = metric(fleet, "streamql_query_rows_total")
        # 10,000 rows a second, and nobody reads: the writes stop, then the edges' rows
        written = until_still(lambda: metric(fleet, "streamql_query_rows_total"), 3.0, 90)
        assert written is not None, "the federation went on writing to a client that reads nothing"
        assert (written - written_before) * ROW < 1_500_000, \
            f"{written - written_before:.0f} rows written to a client that read nothing"
        received = until_still(lambda: metric(fleet, "streamql_fragment_rows_total"), 3.0, 60)
        assert received is not None, "the edges went on sending rows nobody reads"
        rss = rss_kb(fleet)
        time.sleep(3)
        assert metric(fleet, "streamql_fragment_rows_total") == received
        assert rss_kb(fleet) < rss + 20_000

        # the client reads again: the head, then rows in order, more than the buffers held
        client.settimeout(30)
        data = b""
        deadline = time.monotonic() + 30
        while data.count(b"\n") < 20_000 + 60_000 and time.monotonic() < deadline:
            chunk = client.recv(1 << 16)
            assert chunk, "the stream ended"
            data += chunk
        assert data.startswith(b"HTTP/1.1 200")
        assert metric(fleet, "streamql_fragment_rows_total") > received    # the edges go on
        # whole lines only: the last recv may end inside a row (the chunks' size lines are skipped)
        rows = [json.loads(line) for line in data.split(b"\r\n\r\n", 1)[1].split(b"\n")[:-1]
                if line.startswith(b"[")]
        assert len(rows) > 20_000 and {row[1] for row in rows} == {8.0}
    finally:
        client.close()

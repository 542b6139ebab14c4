"""A client that leaves a fleet stream stops its fragments on the edges at once (issue 12): the
federation closes the statement's feeds from its event loop as soon as it sees the client gone,
so the edges get `cancel` within about a second — not when a worker thread gets round to closing
the statement, and not after the edge's own time limit. Real `streamql federation` and `streamql
edge` processes; what an edge runs is read from its store's `running/` directory (one file per
running fragment, kept under the process guard: `--watchdog`), so the test sees the edge's view."""
from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request

import aiohttp
import pytest

from processes import ConstantFleet, Device

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
DEVICES = [Device("wl-1", "US", "wheel loader", -25.0, 80.0), Device("dt-1", "EU", "dumper", -30.0, 40.0)]
STREAMS = ["select stream of id(e), x from Edge e, Real x where x in signal_stream('load')@e;",
           "select stream of id(e), x from Edge e, Real x where x in signal_stream('battery')@e;"]
GONE_WITHIN_S = 3.0     # the goal is ~1 s (0.25 s to notice the client left, then one frame); a busy box


class GuardedFleet(ConstantFleet):
    """Edges under the process guard, which writes down every running fragment."""

    def spawn(self, name, *args):
        return super().spawn(name, *args, "--watchdog") if args[0] == "edge" else super().spawn(name, *args)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    fleet = GuardedFleet(tmp_path_factory.mktemp("abandoned"), DEVICES).start()
    try:
        yield fleet
    finally:
        fleet.stop()


def running_on_edges(fleet) -> int:
    total = 0
    for device in DEVICES:
        directory = fleet.dir / "edges" / device.id / "running"
        total += len(list(directory.iterdir())) if directory.exists() else 0
    return total


def wait_for(predicate, timeout: float) -> float | None:
    """Seconds until predicate() holds, or None after timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def test_the_running_directory_is_the_edges_view(fleet):
    """The check below means something: a running stream is listed there, one file per edge."""
    body = json.dumps({"query": STREAMS[0]}).encode()
    request = urllib.request.Request(fleet.url + "/v1/query", data=body, method="POST", headers={
        "Authorization": f"Bearer {fleet.read}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.readline())   # a row came
        assert wait_for(lambda: running_on_edges(fleet) == len(DEVICES), 10) is not None
    assert wait_for(lambda: running_on_edges(fleet) == 0, 10) is not None


def test_a_client_that_closes_its_streams_stops_their_fragments_at_once(fleet):
    sockets = []
    for i in range(4):   # raw sockets: closing one is exactly a client going away
        body = json.dumps({"query": STREAMS[i % 2]}).encode()
        sock = socket.create_connection(("127.0.0.1", fleet.port), timeout=30)
        sock.sendall(b"POST /v1/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + fleet.read.encode() +
                     b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
                     b"\r\n\r\n" + body)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sockets.append(sock)
    assert wait_for(lambda: running_on_edges(fleet) == 4 * len(DEVICES), 15) is not None
    for sock in sockets:
        sock.close()
    seconds = wait_for(lambda: running_on_edges(fleet) == 0, 15)
    assert seconds is not None and seconds < GONE_WITHIN_S, seconds
    assert fleet.post("select 1;")[1] == [[1]]


def test_a_dropped_websocket_stops_its_fragments_at_once(fleet):
    async def drop() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(fleet.url + "/v1/query/ws",
                                          headers={"Authorization": f"Bearer {fleet.read}"})
            for i, text in enumerate(STREAMS):
                await ws.send_json({"type": "query", "id": f"s{i}", "query": text})
            seen = set()
            while len(seen) < 2:
                message = json.loads((await ws.receive(timeout=30)).data)
                if message["type"] == "rows":
                    seen.add(message["id"])
            assert running_on_edges(fleet) == 2 * len(DEVICES)
            ws._response.connection.transport.abort()    # gone, no close frame

    asyncio.run(drop())
    seconds = wait_for(lambda: running_on_edges(fleet) == 0, 15)
    assert seconds is not None and seconds < GONE_WITHIN_S, seconds

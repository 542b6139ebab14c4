"""Fragment leases on NATS while the node's event loop is busy: a node in-process against a real
nats-server, a NATS client in a thread of its own playing the edge. The renewals (pings) must keep
coming while the node's loop is held for several leases (a node that is slow, not dead), and stop
once it has been held past the stall bound (a wedged node leaves no orphans either)."""
from __future__ import annotations

import asyncio
import threading
import time

import nats
import pytest

from federation import nats_subjects as subjects
from federation.app import create_app
from federation.auth import provision
from federation.config import FederationConfig
from federation.keys import HUB, REGISTRY
from tests.nats_servers import module_nats_server  # noqa: F401  (the fixture `server`)
from streamql import wire

pytestmark = pytest.mark.timeout(120)
LEASE_S = 1.5


class EdgeThread:
    """A NATS client on its own loop and thread, noting when each ping for `edge` reaches it (the
    test's loop is the node's, and is held on purpose)."""

    def __init__(self, url: str, edge: str):
        self.url, self.edge, self.pings = url, edge, []
        self.ready, self.done = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    async def _main(self):
        nc = await nats.connect(self.url)

        async def on_down(msg):
            if wire.decode(msg.data, accept=wire.FROM_FEDERATION).t == "ping":
                self.pings.append(time.monotonic())

        await nc.subscribe(subjects.down(self.edge), cb=on_down)
        await nc.flush()
        self.ready.set()
        while not self.done.is_set():
            await asyncio.sleep(0.05)
        await nc.close()

    def longest_gap(self, start: float, end: float) -> float:
        marks = [start, *[t for t in self.pings if start <= t <= end], end]
        return max(b - a for a, b in zip(marks, marks[1:]))


async def _node_with_a_fragment(aiohttp_client, tmp_path, server, edge):
    config = FederationConfig(data_dir=tmp_path / "fed", announce=False, nats=(server.url,), nats_node="L",
                              heartbeat_s=30.0, nats_lease_s=LEASE_S)
    client = await aiohttp_client(create_app(config))
    app = client.app
    provision(app[REGISTRY], edge, {}, {})
    nc = await nats.connect(server.url)
    fields = {"edge": edge, "software": "test", "metadata": {}, "capabilities": {"signals": ["x"]}, "models": {},
              "restarts": 0, "versions": list(wire.SUPPORTED_VERSIONS)}
    reply = await nc.request(subjects.up_all(edge), wire.encode(wire.make("hello", **fields)), timeout=5)
    assert wire.decode(reply.data, accept=wire.FROM_FEDERATION)["accepted"]
    await nc.close()
    app[HUB]._connections[edge].fragments["q-held"] = object()   # a fragment of this node runs there
    return app


async def test_a_busy_node_loop_keeps_renewing_its_leases(aiohttp_client, tmp_path, server):
    app = await _node_with_a_fragment(aiohttp_client, tmp_path, server, "lease-1")
    edge = EdgeThread(server.url, "lease-1")
    try:
        await asyncio.sleep(LEASE_S)        # the renewal knows the fragment
        held = time.monotonic()
        time.sleep(4 * LEASE_S)             # the node's loop does nothing else for four leases
        released = time.monotonic()
        await asyncio.sleep(0.5)
        gap = edge.longest_gap(held, released)
        assert gap < LEASE_S, f"the edge heard nothing from the node for {gap:.1f} s (lease {LEASE_S} s)"
    finally:
        edge.done.set()
        app[HUB]._connections["lease-1"].fragments.clear()


async def test_a_node_loop_stalled_past_the_bound_lets_its_leases_run_out(aiohttp_client, tmp_path, server):
    app = await _node_with_a_fragment(aiohttp_client, tmp_path, server, "lease-2")
    app[HUB]._renewer.max_stall_s = 1.0
    edge = EdgeThread(server.url, "lease-2")
    try:
        await asyncio.sleep(LEASE_S)
        held = time.monotonic()
        time.sleep(1.0 + 3 * LEASE_S)
        released = time.monotonic()
        await asyncio.sleep(0.2)
        assert edge.longest_gap(held, released) > 2 * LEASE_S   # a wedged node falls silent
        assert any(t > released for t in edge.pings) or await _pinged_again(edge, released)
    finally:
        edge.done.set()
        app[HUB]._connections["lease-2"].fragments.clear()


async def _pinged_again(edge: EdgeThread, since: float) -> bool:
    deadline = time.monotonic() + 3 * LEASE_S
    while time.monotonic() < deadline:
        if any(t > since for t in edge.pings):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_the_edge_reads_waiting_frames_before_it_gives_a_lease_up():
    """An edge whose own loop is behind (frames from the nodes wait unread in its subscription) does
    not cancel a fragment for silence: one of those frames may be the renewal."""
    from edge_engine.nats_link import NatsConnection, NatsLink

    cancelled = []

    class Handler:
        async def handle(self, conn, frame):
            cancelled.append(frame["qid"])

    class Sub:
        pending_msgs = 3

    link = NatsLink(Handler(), ["nats://127.0.0.1:1"], "e", None)
    conn = NatsConnection(link, wire.make("welcome", accepted=True, server_time=0.0, heartbeat_s=1.0, publish_acked=0))
    conn.routes["q1"], conn.leases["q1"], conn.owners["q1"] = "sql.up.e.n", 0.5, "sql.up.e.n r"
    link._heard["sql.up.e.n r"] = time.monotonic() - 10
    link._down_sub = Sub()
    task = asyncio.create_task(link._leases(conn))
    try:
        await asyncio.sleep(2.3)
        assert not cancelled and "q1" in conn.routes     # frames wait: not yet
        Sub.pending_msgs = 0
        await asyncio.sleep(1.2)
        assert cancelled == ["q1"]                       # read them all, still silent: cancelled
    finally:
        conn.closed = True
        task.cancel()

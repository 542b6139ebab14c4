"""A NATS edge is closed as silent only when it is: its health frames waiting unread on the node's
subscription (the node's loop held, or behind a backlog of 10,000 edges' frames) do not make it
silent. At 10,000 edges node A counted thousands of connected edges offline in a fan-out. A node in
process against a real nats-server; the edges are NATS clients in a thread of their own (the
test's loop is the node's, held on purpose), sending health every HEARTBEAT_S / 2."""
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
from federation.testing import until
from tests.nats_servers import module_nats_server  # noqa: F401  (the fixture `server`)
from streamql import wire

pytestmark = pytest.mark.timeout(120)
HEARTBEAT_S = 0.5          # the node closes an edge silent for 3 × this


def _hello(edge: str) -> bytes:
    return wire.encode(wire.make("hello", edge=edge, software="test", metadata={}, capabilities={"signals": ["x"]},
                                 models={}, restarts=0, versions=list(wire.SUPPORTED_VERSIONS)))


class BeatingEdges:
    """Edges on their own loop and thread: each says hello, then sends health until told to stop
    (`stop(edge)`: it goes quiet without a bye, as a device that lost power)."""

    def __init__(self, url: str, edges: list[str]):
        self.url, self.edges = url, edges
        self.quiet: set[str] = set()
        self.welcomed = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()

    async def _main(self):
        nc = await nats.connect(self.url)
        for edge in self.edges:
            reply = await nc.request(subjects.up_all(edge), _hello(edge), timeout=10)
            assert wire.decode(reply.data, accept=wire.FROM_FEDERATION)["accepted"]
        self.welcomed.set()
        while not self.done.is_set():
            for edge in self.edges:
                if edge not in self.quiet:
                    await nc.publish(subjects.up_all(edge), wire.encode(wire.make("health", time=time.time(), uptime_s=1.0, restarts=0)))
            await asyncio.sleep(HEARTBEAT_S / 2)
        await nc.close()

    def stop(self, edge: str):
        self.quiet.add(edge)


async def test_edges_whose_health_waits_unread_are_not_closed_and_a_quiet_one_is(aiohttp_client, tmp_path, server):
    config = FederationConfig(data_dir=tmp_path / "fed", announce=False, nats=(server.url,), nats_node="S",
                              heartbeat_s=HEARTBEAT_S)
    app = (await aiohttp_client(create_app(config))).app
    hub = app[HUB]
    edges = ["s1", "s2", "s3"]
    for edge in edges:
        provision(app[REGISTRY], edge, {}, {})
    fleet = BeatingEdges(server.url, edges)
    try:
        await until(fleet.welcomed.is_set, 20, "every edge welcomed")
        await until(lambda: all(hub.is_online(e) for e in edges), 10, "the node to hold every edge")
        await asyncio.sleep(4 * HEARTBEAT_S)
        assert all(hub.is_online(e) for e in edges)

        # the node's loop does nothing else for 8 heartbeats: the edges' health piles up unread
        for _ in range(2):
            time.sleep(4 * HEARTBEAT_S)
            await asyncio.sleep(0)
        await asyncio.sleep(2 * HEARTBEAT_S)          # the backlog read, the sweep run several times
        assert [e for e in edges if not hub.is_online(e)] == [], "edges closed though they kept beating"

        # one edge really goes quiet: it is closed within a few sweeps, the others stay
        fleet.stop("s2")
        await until(lambda: not hub.is_online("s2"), 10 * HEARTBEAT_S + 5, "the quiet edge to be closed")
        assert hub.is_online("s1") and hub.is_online("s3")
    finally:
        fleet.done.set()
        fleet.thread.join(10)


async def test_an_answer_from_an_edge_the_node_closed_still_reaches_the_deployer(aiohttp_client, tmp_path, server):
    config = FederationConfig(data_dir=tmp_path / "fed", announce=False, nats=(server.url,), nats_node="S",
                              heartbeat_s=30.0)
    app = (await aiohttp_client(create_app(config))).app
    hub = app[HUB]
    provision(app[REGISTRY], "u1", {}, {})
    heard = []

    class Deployer:
        def edge_replied(self, edge, frame):
            heard.append((edge, frame.t, frame["did"]))

    hub.add_observer(Deployer())
    nc = await nats.connect(server.url)
    try:
        reply = await nc.request(subjects.up_all("u1"), _hello("u1"), timeout=10)
        assert wire.decode(reply.data, accept=wire.FROM_FEDERATION)["accepted"]
        await hub._connections["u1"].close(1000, "no frame for 90 s")   # as the sweep does after a cut
        assert not hub.is_online("u1")
        ack = wire.make("ack", did="d7-abc", model="m", active={"m": "1.0.0"})
        await nc.publish(subjects.up("u1", "S"), wire.encode(ack))
        await until(lambda: heard, 10, "the deployer to hear the ack")
        assert heard == [("u1", "ack", "d7-abc")]
    finally:
        await nc.close()

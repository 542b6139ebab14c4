"""An edge a NATS node closed as silent is connected again on that node from its next frames. At
10,000 edges node A closed 1,316 edges as silent while their simulator processes were busy, and
~45 s later they were still "not connected" on it though they beat again: it took them back only
through a read of the presence bucket, whose reply waited behind the node's reading backlog past
the request's timeout, at every health again (federation/nats_adopt.py). The edges here do what
edge_engine/nats_link.py does: hello as a request, then every beat health to every node and their
presence entry (hello and health) into the presence bucket. A node in process against a real
nats-server; the edges are NATS clients on a thread of their own; the node's presence reads time
out as under that backlog (`SlowPresence`)."""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import nats
import nats.errors
import pytest

from federation import nats_subjects as subjects
from federation.app import create_app
from federation.auth import provision
from federation.config import FederationConfig
from federation.keys import HUB, REGISTRY
from federation.nats_adopt import TAKE_BACK_PER_S, NatsAdoption
from federation.testing import until
from tests.nats_servers import module_nats_server  # noqa: F401  (the fixture `server`)
from streamql import codec, wire

pytestmark = pytest.mark.timeout(180)
HEARTBEAT_S = 0.5          # the node closes an edge silent for 3 × this; presence expires after 3 × this


def _hello(edge: str) -> bytes:
    return wire.encode(wire.make("hello", edge=edge, software="test", metadata={}, capabilities={"signals": ["x"]},
                                 models={}, restarts=0, versions=list(wire.SUPPORTED_VERSIONS)))


class Edges:
    """Edges as nats_link makes them: each says hello once, then beats health and presence every
    HEARTBEAT_S; `hold(edges)` keeps them quiet (a busy process: no bye, no new hello), `release`
    lets them beat again."""

    def __init__(self, url: str, edges: list[str]):
        self.url, self.edges = url, edges
        self.held: set[str] = set()
        self.welcomed = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()

    async def _main(self):
        nc = await nats.connect(self.url)
        hellos = {edge: _hello(edge) for edge in self.edges}
        replies = await asyncio.gather(*(nc.request(subjects.up_all(e), hellos[e], timeout=30) for e in self.edges))
        assert all(wire.decode(r.data, accept=wire.FROM_FEDERATION)["accepted"] for r in replies)
        self.welcomed.set()
        while not self.done.is_set():
            for edge in self.edges:
                if edge in self.held:
                    continue
                health = wire.encode(wire.make("health", time=time.time(), uptime_s=1.0, restarts=0))
                await nc.publish(subjects.up_all(edge), health)
                await nc.publish(subjects.presence_subject(edge),
                                 codec.pack({"hello": hellos[edge], "health": health, "time": time.time()}))
            await asyncio.sleep(HEARTBEAT_S)
        await nc.close()

    def hold(self, edges):
        self.held |= set(edges)

    def release(self, edges):
        self.held -= set(edges)


class SlowPresence:
    """The presence bucket as a node behind a reading backlog sees it: every read times out."""

    def __init__(self, bucket):
        self.bucket, self.reads = bucket, 0

    async def get(self, key):
        self.reads += 1
        await asyncio.sleep(0.2)
        raise nats.errors.TimeoutError

    def __getattr__(self, name):
        return getattr(self.bucket, name)


async def _node(aiohttp_client, tmp_path, server, edges):
    config = FederationConfig(data_dir=tmp_path / "fed", announce=False, nats=(server.url,), nats_node="R",
                              heartbeat_s=HEARTBEAT_S)
    app = (await aiohttp_client(create_app(config))).app
    registry = app[REGISTRY]
    for edge in edges:
        provision(registry, edge, {}, {})
    return app[HUB]


class _client:
    def __init__(self, url):
        self.url = url

    async def __aenter__(self):
        self.nc = await nats.connect(self.url)
        return self.nc

    async def __aexit__(self, *exc):
        await self.nc.flush(5)
        await self.nc.close()


async def _closed_then_back(hub, fleet, quiet, others):
    fleet.hold(quiet)
    # closed as silent, and quiet past their presence entries' expiry (3 heartbeats)
    await until(lambda: not any(hub.is_online(e) for e in quiet), 60, "the quiet edges to be closed as silent")
    await asyncio.sleep(4 * HEARTBEAT_S)
    assert all(hub.is_online(e) for e in others), "edges that kept beating were closed"
    fleet.release(quiet)
    # a few heartbeats after their frames come back (generous: the box may be loaded)
    await until(lambda: all(hub.is_online(e) for e in quiet), 40 * HEARTBEAT_S + 10,
                "the edges closed as silent to be connected again")


@contextlib.asynccontextmanager
async def _held_fleet(aiohttp_client, tmp_path, server, edges, welcome_s: float = 30, hold_s: float = 10):
    """A node holding every one of `edges`, whose presence reads from now on time out."""
    hub = await _node(aiohttp_client, tmp_path, server, edges)
    fleet = Edges(server.url, edges)
    try:
        await until(fleet.welcomed.is_set, welcome_s, "every edge welcomed")
        await until(lambda: all(hub.is_online(e) for e in edges), hold_s, "the node to hold every edge")
        hub.presence = SlowPresence(hub.presence)
        yield hub, fleet
    finally:
        fleet.done.set()
        fleet.thread.join(10)


async def test_an_edge_closed_as_silent_is_connected_again_from_its_next_frames(aiohttp_client, tmp_path, server):
    async with _held_fleet(aiohttp_client, tmp_path, server, ["r1", "r2", "r3"]) as (hub, fleet):
        # a deployment changed r2's models meanwhile (its ack's copy for every node)
        async with _client(server.url) as nc:
            ack = wire.make("ack", did="d1-abc", model="m", active={"m": "2.0.0"})
            await nc.publish(subjects.up_all("r2"), wire.encode(ack))
        await until(lambda: hub._announced["r2"]["models"] == {"m": "2.0.0"}, 10, "the node to learn the models")
        await _closed_then_back(hub, fleet, ["r2"], ["r1", "r3"])
        # and again: the second time is no different
        await _closed_then_back(hub, fleet, ["r2"], ["r1", "r3"])
        # taken back with what it runs now, not the models of its first hello
        assert hub._announced["r2"]["models"] == {"m": "2.0.0"}


async def test_more_edges_than_the_adopt_cap_closed_at_once_all_come_back(aiohttp_client, tmp_path, server):
    edges = [f"b{i}" for i in range(1300)]        # more than the 1,024 adoptions a node runs at once
    async with _held_fleet(aiohttp_client, tmp_path, server, edges, welcome_s=120, hold_s=60) as (hub, fleet):
        await _closed_then_back(hub, fleet, edges[:1200], edges[1200:])


async def test_a_take_back_that_fails_once_is_tried_again_at_the_next_health(aiohttp_client, tmp_path, server):
    """The registry away during a take-back: logged, and the next health tries again (the worker
    must not die with edges left in its queue, which would then never be taken back)."""
    async with _held_fleet(aiohttp_client, tmp_path, server, ["f1", "f2", "f3"]) as (hub, fleet):
        accept, failures = hub._accept_hello, []

        def failing_once(*args, **kwargs):
            if not failures:
                failures.append(args[0])
                raise ConnectionError("the registry is away")
            return accept(*args, **kwargs)

        hub._accept_hello = failing_once
        await _closed_then_back(hub, fleet, ["f2", "f3"], ["f1"])   # heard again together: queued together
        assert len(failures) == 1


class _Node(NatsAdoption):
    """Just what `_take_back` reads of a NatsHub: a node whose reading is `behind_s` late."""

    def __init__(self, edges):
        self.stopping, self.behind_s, self.cost = False, 0.0, 0.0
        self.config = type("C", (), {"heartbeat_s": 0.5})()
        self._hellos = {e: (wire.decode(_hello(e), accept=wire.FROM_EDGE), 100) for e in edges}
        self._taking_back = {e: (None, time.monotonic()) for e in edges}
        self._connections, self._announced, self.taken = {}, {}, []
        self.m_adopted = type("M", (), {"inc": lambda *a, **k: None})()

    @property
    def _caught_up_to(self):
        return time.monotonic() - self.behind_s

    def _accept_hello(self, edge, hello, size, *, heard=None):
        time.sleep(self.cost)      # its registry writes, on the loop
        self.taken.append((edge, time.monotonic()))
        self._connections[edge] = object()
        return {"accepted": True}


async def test_a_node_behind_its_reading_takes_nothing_back_and_then_at_a_bounded_rate():
    """A take-back is a hello's registry writes on the loop: a node reading its subscription late
    (a connect storm) reads its backlog first, and a thousand edges come back over seconds, not in
    one burst of loop turns (three 10,000-edge connects failed with the take-back unpaced)."""
    node = _Node([f"e{i:03d}" for i in range(100)])
    node.behind_s = 10.0
    worker = asyncio.get_running_loop().create_task(node._take_back())
    await asyncio.sleep(1.5)
    assert node.taken == [], "taken back while the node was behind its reading"
    node.behind_s = 0.0
    await asyncio.wait_for(worker, 30)
    assert sorted(e for e, _ in node.taken) == sorted(node._hellos)
    span = node.taken[-1][1] - node.taken[0][1]
    assert span >= 99 / TAKE_BACK_PER_S * 0.9, f"100 edges taken back in {span:.3f} s"


async def test_slow_take_backs_leave_the_loop_three_quarters_of_its_time():
    """Each take-back waits for PostgreSQL's device-change lock, on the loop (at 10,000 edges such
    waits held a node's loop 15 s): whatever one costs, the next waits three times as long."""
    node = _Node([f"e{i:02d}" for i in range(12)])
    node.cost = 0.05
    await asyncio.wait_for(node._take_back(), 30)
    gaps = [b - a for (_, a), (_, b) in zip(node.taken, node.taken[1:])]
    assert len(node.taken) == 12 and min(gaps) >= 0.05 * 4 * 0.9, gaps

"""A federation node on NATS and PostgreSQL answers hellos with the registry's work in threads of
its own (federation/nats_hellos.py): at 10,000 edges each hello's round trips on the event loop
held a node's loop 6–7 s and hellos went unanswered. Here another node holds PostgreSQL's
device-change lock, which a hello announcing new metadata must wait for."""
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
from federation.keys import FLEET, HUB, REGISTRY
from federation.registry_pg import _CHANGE_LOCK_SQL, PgRegistry
from federation.testing import until
from tests.nats_servers import module_nats_server  # noqa: F401  (the fixture `server`)
from streamql import wire

pytestmark = pytest.mark.timeout(120)


def hello(edge: str, metadata: dict) -> bytes:
    return wire.encode(wire.make("hello", edge=edge, software="test", metadata=metadata,
                                 capabilities={"signals": ["x"]}, models={}, restarts=0,
                                 versions=list(wire.SUPPORTED_VERSIONS)))


async def _ask(nc, edge: str, metadata: dict, timeout: float = 20) -> wire.Frame:
    reply = await nc.request(subjects.up_all(edge), hello(edge, metadata), timeout=timeout)
    return wire.decode(reply.data, accept=wire.FROM_FEDERATION)


class _ChangeLock:
    """Another node's transaction holding the device-change lock until released."""

    def __init__(self, url: str):
        self.other = PgRegistry(url, watch=False)
        self.holding, self.release = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self):
        with self.other.transaction() as conn:
            conn.execute(_CHANGE_LOCK_SQL)
            self.holding.set()
            self.release.wait(30)

    def __enter__(self):
        self.thread.start()
        assert self.holding.wait(10)
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.thread.join(10)
        self.other.close()


@pytest.fixture
async def pg_node(aiohttp_client, tmp_path, server, pg_server):
    url = pg_server.new_database()
    config = FederationConfig(data_dir=tmp_path / "A", announce=False, nats=(server.url,), nats_node="A",
                              heartbeat_s=10.0, registry=url)
    app = (await aiohttp_client(create_app(config))).app
    nc = await nats.connect(server.url)
    try:
        yield app, nc, url
    finally:
        await nc.close()


async def _worst_tick(seconds: float) -> float:
    loop = asyncio.get_running_loop()
    worst, last = 0.0, loop.time()
    end = last + seconds
    while loop.time() < end:   # 10 ms ticks, each timed
        await asyncio.sleep(0.01)
        now = loop.time()
        worst, last = max(worst, now - last), now
    return worst


async def test_a_hello_waiting_for_the_registry_holds_neither_the_loop_nor_other_hellos(pg_node):
    app, nc, url = pg_node
    registry = app[REGISTRY]
    provision(registry, "moved", {"region": "EU"}, {"signals": ["x"]})
    provision(registry, "steady", {"region": "US"}, {"signals": ["x"]})
    with _ChangeLock(url):
        # "moved" announces a new site: its metadata write waits for the lock
        waiting = asyncio.ensure_future(_ask(nc, "moved", {"site": "kiruna"}))
        await asyncio.sleep(0.3)
        # its health meanwhile is handled after its hello (before, it found the edge not held)
        await nc.publish(subjects.up_all("moved"), wire.encode(wire.make(
            "health", restarts=0, time=time.time(), uptime_s=123.0)))
        # "steady" announces nothing new: reads only, answered meanwhile
        assert (await _ask(nc, "steady", {}))["accepted"]
        worst = await _worst_tick(2.0)
        assert worst < 0.5, f"the node's loop was held {worst:.2f} s while a hello waited for the registry"
        assert not waiting.done(), "the hello was answered before its metadata could be written"
        assert registry.get_device("moved").metadata == {"region": "EU"}
    welcome = await waiting
    assert welcome["accepted"] and app[HUB].is_online("moved")
    # the write landed (read afresh from the database) and the node's listeners heard it on the loop
    assert registry.get_device("moved").metadata == {"region": "EU", "site": "kiruna"}
    await until(lambda: app[FLEET].rows["moved"].device.metadata.get("site") == "kiruna", 5,
                "the fleet table to show the announced site")
    await until(lambda: (app[FLEET].rows["moved"].device.health or {}).get("uptime_s") == 123.0, 10,
                "the health sent while the hello waited to be recorded")


async def test_an_edge_that_says_hello_again_while_its_first_waits_is_held_with_the_newest(pg_node):
    app, nc, url = pg_node
    provision(app[REGISTRY], "twice", {}, {"signals": ["x"]})
    with _ChangeLock(url):
        first = asyncio.ensure_future(_ask(nc, "twice", {"site": "a"}))
        await asyncio.sleep(0.5)
        second = asyncio.ensure_future(_ask(nc, "twice", {"site": "b"}))
        await asyncio.sleep(0.5)
        assert not first.done() and not second.done()
    one, two = await first, await second
    assert one["accepted"] and two["accepted"] and one["session"] != two["session"]
    assert app[HUB]._connections["twice"].session == two["session"]
    assert app[REGISTRY].get_device("twice").metadata == {"site": "b"}


async def test_a_hello_superseded_while_it_waits_is_dropped_unanswered_and_the_newest_answered(pg_node, monkeypatch):
    """An edge that gave up on its hello twice: the middle one, still waiting behind the first when
    the third came, costs the registry nothing and gets no answer (its asker is gone)."""
    app, nc, url = pg_node
    provision(app[REGISTRY], "thrice", {}, {"signals": ["x"]})
    from federation import nats_hellos
    recorded = []
    real = nats_hellos.find_and_record

    def find_and_record(registry, edge, announced):
        recorded.append(announced["metadata"].get("site"))
        return real(registry, edge, announced)

    monkeypatch.setattr(nats_hellos, "find_and_record", find_and_record)
    with _ChangeLock(url):
        first = asyncio.ensure_future(_ask(nc, "thrice", {"site": "a"}))
        await asyncio.sleep(0.5)
        second = asyncio.ensure_future(_ask(nc, "thrice", {"site": "b"}, timeout=6))
        await asyncio.sleep(0.3)
        third = asyncio.ensure_future(_ask(nc, "thrice", {"site": "c"}))
        await asyncio.sleep(0.5)
    assert (await first)["accepted"]
    welcome = await third
    assert welcome["accepted"] and app[HUB]._connections["thrice"].session == welcome["session"]
    with pytest.raises((nats.errors.TimeoutError, asyncio.TimeoutError)):
        await second
    assert app[REGISTRY].get_device("thrice").metadata == {"site": "c"}
    assert recorded == ["a", "c"]
    assert app[HUB]._hello_stats.superseded == 1


async def test_a_hello_while_the_registry_is_away_is_refused_and_the_next_one_welcomed(pg_node, monkeypatch):
    app, nc, _url = pg_node
    registry = app[REGISTRY]
    provision(registry, "flaky", {}, {"signals": ["x"]})
    real = PgRegistry.get_device
    failing = {"times": 1}

    def get_device(self, device_id):
        if device_id == "flaky" and failing["times"]:
            failing["times"] -= 1
            raise OSError("the database is away")
        return real(self, device_id)

    monkeypatch.setattr(PgRegistry, "get_device", get_device)
    refused = await _ask(nc, "flaky", {})
    assert not refused["accepted"] and "could not accept" in refused["reason"]
    assert not app[HUB].is_online("flaky")
    assert (await _ask(nc, "flaky", {}))["accepted"] and app[HUB].is_online("flaky")

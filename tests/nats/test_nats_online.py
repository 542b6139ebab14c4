"""Two federation nodes in-process on one PostgreSQL registry and a real nats-server, an edge played by
a NATS client: a node that wrongly writes a NATS edge offline (its loop lagged past three heartbeats,
say) while the other node still hears the edge must not leave it offline everywhere until the edge
reconnects."""
from __future__ import annotations

import asyncio
import time

import nats
import pytest

from federation import nats_subjects as subjects
from federation.app import create_app
from federation.auth import provision
from federation.config import FederationConfig
from federation.keys import FLEET, HUB, REGISTRY
from federation.testing import until
from tests.nats_servers import module_nats_server  # noqa: F401  (the fixture `server`)
from streamql import wire

pytestmark = pytest.mark.timeout(120)


def _fleet_online(app, edge: str) -> bool:
    row = app[FLEET].rows.get(edge)
    return row is not None and row.device.online


async def test_an_edge_written_offline_by_one_node_is_online_again_through_the_other(
        aiohttp_client, tmp_path, server, pg_server):
    url = pg_server.new_database()
    apps = {}
    for name in ("A", "B"):
        config = FederationConfig(data_dir=tmp_path / name, announce=False, nats=(server.url,), nats_node=name,
                                  heartbeat_s=10.0, registry=url)
        apps[name] = (await aiohttp_client(create_app(config))).app
    a, b = apps["A"], apps["B"]
    provision(a[REGISTRY], "w1", {"region": "EU"}, {})
    nc = await nats.connect(server.url)
    try:
        fields = {"edge": "w1", "software": "test", "metadata": {}, "capabilities": {"signals": ["x"]},
                  "models": {}, "restarts": 0, "versions": list(wire.SUPPORTED_VERSIONS)}
        reply = await nc.request(subjects.up_all("w1"), wire.encode(wire.make("hello", **fields)), timeout=5)
        assert wire.decode(reply.data, accept=wire.FROM_FEDERATION)["accepted"]
        await until(lambda: a[HUB].is_online("w1") and b[HUB].is_online("w1"), 10, "both nodes to hold the edge")
        await until(lambda: _fleet_online(a, "w1") and _fleet_online(b, "w1"), 10, "both fleet tables online")

        # node A gives the edge up wrongly (as its sweep does after a long lag): offline in the registry
        await a[HUB]._connections["w1"].close(1000, "no frame for 30 s")
        # B still hears the edge (its last frame is recent): everyone sees it online again
        await asyncio.sleep(1.0)
        await until(lambda: b[REGISTRY].get_device("w1").online, 5, "the registry to say online again")
        await until(lambda: _fleet_online(b, "w1") and _fleet_online(a, "w1"), 5,
                     "both fleet tables to say online again")
        assert b[HUB].is_online("w1")
    finally:
        await nc.close()


async def test_health_heard_by_one_node_reaches_the_other_on_one_sqlite_file(aiohttp_client, tmp_path, server):
    """Two nodes on one data directory (SQLite) and NATS: an edge only node A hears (a WebSocket edge:
    the route stays on a NATS node) has its heartbeats in node B's fleet views too, as on PostgreSQL."""
    from federation.keys import HEARTBEATS
    from federation.registry import Heartbeat

    apps = {}
    for name in ("A", "B"):
        config = FederationConfig(data_dir=tmp_path / "shared", announce=False, nats=(server.url,), nats_node=name,
                                  heartbeat_s=10.0)
        apps[name] = (await aiohttp_client(create_app(config))).app
    a, b = apps["A"], apps["B"]
    provision(a[REGISTRY], "ws-1", {"region": "EU"}, {})
    b[REGISTRY].poll_external_changes()               # B learns of the device (as a hello there would)
    await until(lambda: "ws-1" in b[FLEET].rows, 5, "B to know the device")
    a[REGISTRY].set_online("ws-1", True)              # A holds its WebSocket
    for beat in range(3):
        a[HEARTBEATS].add(Heartbeat("ws-1", time.time(), {"battery": 11.0 + beat, "time": time.time()}, 2))
        await until(lambda: (b[FLEET].rows["ws-1"].device.health or {}).get("battery") == 11.0 + beat, 5,
                     f"B's fleet table to show beat {beat}")
    assert b[FLEET].rows["ws-1"].device.restarts == 2


async def test_one_node_writes_each_nats_edges_heartbeats_and_both_show_them(
        aiohttp_client, tmp_path, server, pg_server):
    """Every node hears every NATS edge's health; the registry gets each beat from one node only (two
    nodes writing the same rows doubled the work and deadlocked), and both fleet tables follow."""
    from federation.nats_peers import PEER_TTL_S

    url = pg_server.new_database()
    apps, written = {}, {}
    for name in ("A", "B"):
        config = FederationConfig(data_dir=tmp_path / name, announce=False, nats=(server.url,), nats_node=name,
                                  heartbeat_s=10.0, registry=url)
        apps[name] = app = (await aiohttp_client(create_app(config))).app
        registry, written[name] = app[REGISTRY], []
        write = registry._write_heartbeats
        registry._write_heartbeats = (lambda beats, write=write, out=written[name]:
                                      out.extend(b.device_id for b in beats if b.health) or write(beats))
    edges = [f"hb-{i}" for i in range(24)]
    for edge in edges:
        provision(apps["A"][REGISTRY], edge, {}, {})
    await until(lambda: all(len(app[HUB].peers.live()) == 2 for app in apps.values()), PEER_TTL_S + 5,
                 "each node to hear the other")
    nc = await nats.connect(server.url)
    try:
        for edge in edges:
            fields = {"edge": edge, "software": "test", "metadata": {}, "capabilities": {"signals": ["x"]},
                      "models": {}, "restarts": 0, "versions": list(wire.SUPPORTED_VERSIONS)}
            await nc.request(subjects.up_all(edge), wire.encode(wire.make("hello", **fields)), timeout=5)
        await until(lambda: all(app[HUB].is_online(e) for app in apps.values() for e in edges), 10, "both to hold all")
        for n, edge in enumerate(edges):
            await nc.publish(subjects.up_all(edge), wire.encode(wire.make(
                "health", time=time.time(), uptime_s=5.0, restarts=0, cpu_percent=float(n))))
        await nc.flush()

        def shown(app):
            return {e: (app[FLEET].rows[e].device.health or {}).get("cpu_percent") for e in edges}
        await until(lambda: all(shown(app) == {e: float(n) for n, e in enumerate(edges)} for app in apps.values()),
                     10, "both fleet tables to show every edge's CPU")
        await asyncio.sleep(1.5)    # a flush more
        by_a, by_b = set(written["A"]), set(written["B"])
        assert by_a | by_b == set(edges) and not by_a & by_b, (sorted(by_a), sorted(by_b))
        assert by_a and by_b        # the work is shared (24 edges: both get some)
        for n, edge in enumerate(edges):
            assert apps["B"][REGISTRY].get_device(edge).health["cpu_percent"] == float(n)
    finally:
        await nc.close()


def test_two_nodes_writing_the_same_devices_do_not_deadlock(pg_server):
    """Node 1 writes several edges offline in one transaction (OfflineWrites) while node 2 writes one
    of them too: the change feed's trigger took its lock after the row locks, so node 2 held a row
    and waited for the lock node 1 held while node 1 waited for that row (PostgreSQL aborted one)."""
    import threading

    from federation.registry_pg import PgRegistry

    url = pg_server.new_database()
    one, two = PgRegistry(url, watch=False), PgRegistry(url, watch=False)
    errors, first_written = [], threading.Event()
    try:
        for edge in ("x", "y"):
            provision(one, edge, {}, {})
            one.set_online(edge, True)

        def node_one():
            try:
                with one.transaction():
                    one.set_online("x", False)
                    first_written.set()
                    time.sleep(0.5)                 # node 2 takes y meanwhile
                    one.set_online("y", False)
            except Exception as error:  # noqa: BLE001
                errors.append(error)

        def node_two():
            first_written.wait(5)
            try:
                two.set_online("y", False)     # a flip: its trigger wants the change lock
            except Exception as error:  # noqa: BLE001
                errors.append(error)

        threads = [threading.Thread(target=node_one), threading.Thread(target=node_two)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, errors
    finally:
        one.close()
        two.close()


def test_heartbeat_writers_split_the_edges_and_take_over_from_a_silent_node():
    """Rendezvous over the nodes heard: each edge has one writer, the same on every node; the edges
    of a node silent past PEER_TTL_S go to the others."""
    from federation.nats_peers import PEER_TTL_S, Peers

    now = [0.0]
    nodes = {name: Peers(name, clock=lambda: now[0]) for name in ("A", "B", "C")}
    for peers in nodes.values():
        for other in nodes:
            peers.heard(other)
    edges = [f"e{i}" for i in range(300)]
    owners = {edge: {peers.writer_of(edge) for peers in nodes.values()} for edge in edges}
    assert all(len(found) == 1 for found in owners.values())          # every node agrees
    share = {name: sum(1 for found in owners.values() if found == {name}) for name in nodes}
    assert all(60 < count < 140 for count in share.values()), share   # about a third each
    now[0] += PEER_TTL_S + 1                                           # C falls silent; A and B go on
    for peers in (nodes["A"], nodes["B"]):
        peers.heard("A")
        peers.heard("B")
    for edge in edges:
        writer = nodes["A"].writer_of(edge)
        assert writer == nodes["B"].writer_of(edge) and writer in ("A", "B")
        if owners[edge] != {"C"}:
            assert {writer} == owners[edge]                            # only C's edges moved

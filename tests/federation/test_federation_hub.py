"""The edge hub against fake edges speaking docs/protocol.md with streamql.wire: handshake, health,
fragments with credit, cancel, offline, replaced connections, bad frames, publish deduplication."""
from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from federation.app import create_app
from federation.auth import Role, create_token, provision
from federation.hub import EdgeOffline, FragmentError, RowBatch
from federation.keys import HEARTBEATS, HUB, INDEX, METRICS, REGISTRY
from streamql.selection import Eq, capability, meta
from federation.testing import FakeEdge, until
from streamql import codec, wire
from streamql.errors import QueryParseError, Span

pytestmark = pytest.mark.timeout(60)


HELLO_CAPS = {"ram_kb": 524288, "cpu": "cortex-a53", "runtimes": {"numpy": "2.1"},
              "signals": [{"name": "vibration", "type": "Real", "kind": "sim", "rate_hz": 100.0}, "temperature"]}


async def test_hello_welcome_and_what_the_registry_learns(fleet):
    edge = fleet.edge("wl-1", provisioned={"metadata": {"region": "US", "site": "a"}, "capabilities": {"flash_kb": 1}},
                      metadata={"kind": "wheel loader", "region": "EU"}, capabilities=HELLO_CAPS,
                      models={"vib": "1.0.0"}, restarts=4, software="edge 0.1")
    hub, registry = fleet.app[HUB], fleet.app[REGISTRY]
    assert not hub.is_online("wl-1") and hub.announced("wl-1") is None
    welcome = await edge.connect()
    assert welcome.t == "welcome" and welcome["accepted"] and welcome["publish_acked"] == 0
    assert welcome["heartbeat_s"] == 5.0
    assert welcome["edge"] == "wl-1" and welcome["max_frame"] >= wire.MAX_FRAME_BYTES
    assert hub.is_online("wl-1") and hub.online_ids() == {"wl-1"}
    device = registry.get_device("wl-1")
    assert device.online and device.metadata == {"region": "EU", "site": "a", "kind": "wheel loader"}  # announced wins
    assert device.capabilities["signals"] == ["vibration", "temperature"] and device.capabilities["flash_kb"] == 1
    assert device.capabilities["ram_kb"] == 524288
    assert registry.model_version("wl-1", "vib").version == "1.0.0"
    assert fleet.app[INDEX].select(Eq(meta("kind"), "wheel loader")) == ["wl-1"]
    assert fleet.app[INDEX].select(Eq(capability("cpu"), "cortex-a53")) == ["wl-1"]
    announced = hub.announced("wl-1")
    assert announced["software"] == "edge 0.1" and announced["models"] == {"vib": "1.0.0"}
    assert announced["signals"][0] == {"name": "vibration", "type": "Real", "kind": "sim", "rate_hz": 100.0}
    assert announced["signals"][1] == {"name": "temperature"} and announced["version"] == 1
    fleet.app[HEARTBEATS].flush()
    assert registry.get_device("wl-1").restarts == 4
    # models the device no longer lists are forgotten at the next hello
    await edge.close()
    await until(lambda: not hub.is_online("wl-1"))
    assert not registry.get_device("wl-1").online and registry.get_device("wl-1").last_seen is not None
    assert hub.announced("wl-1")["software"] == "edge 0.1"  # the last hello stays known
    edge.models = {}
    await edge.connect()
    assert registry.model_version("wl-1", "vib") is None


async def test_a_device_cannot_speak_as_another(fleet):
    fleet.provision("wl-2")
    impostor = fleet.edge("wl-2", token=fleet.provision("wl-1"))  # wl-1's token, hello as wl-2
    welcome = await impostor.connect()
    assert welcome["accepted"] is False and "another device" in welcome["reason"]
    assert impostor.close_code == wire.CLOSE_CODES["unauthorized"]
    assert not fleet.app[HUB].is_online("wl-2") and not fleet.app[REGISTRY].get_device("wl-2").online
    # a wrong token is refused before the upgrade; a read token may not open the edge socket
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await fleet.edge("wl-1", token="sqf_" + "x" * 43).connect()
    assert caught.value.status == 401


async def test_the_first_frame_must_be_a_hello_in_a_version_we_speak(fleet):
    token = fleet.provision("e1")
    edge = fleet.edge("e1", token=token)
    await edge.open()
    await edge.send(wire.make("health", time=1.0, uptime_s=1.0, restarts=0))
    msg = await edge.ws.receive(timeout=5)
    frame = wire.decode(msg.data)
    assert frame.t == "error" and frame["code"] == "no_hello" and frame["fatal"] is True
    assert (await edge.ws.receive(timeout=5)).type is aiohttp.WSMsgType.CLOSE and edge.ws.close_code == 4000

    edge = fleet.edge("e1", token=token)
    await edge.open()
    await edge.send(codec.pack({"v": 7, "t": "hello", "edge": "e1"}))
    frame = wire.decode((await edge.ws.receive(timeout=5)).data)
    assert frame["code"] == "unsupported_version" and frame["supported"] == [1] and frame.v == 1
    await edge.ws.receive(timeout=5)
    assert edge.ws.close_code == 4001

    edge = fleet.edge("e1", token=token, versions=[5, 6])  # no common version
    welcome = await edge.connect()
    assert welcome.t == "error" and welcome["code"] == "unsupported_version" and edge.close_code == 4001

    edge = fleet.edge("e1", token=token)
    await edge.open()
    await edge.ws.send_str("hello")
    frame = wire.decode((await edge.ws.receive(timeout=5)).data)
    assert frame.t == "error" and frame["fatal"] is True
    assert not fleet.app[HUB].is_online("e1")


async def test_bad_frames_are_answered_and_the_connection_kept(fleet):
    edge = fleet.edge("e1")
    await edge.connect()
    await edge.ws.send_str("not binary")
    assert (await edge.receive("error"))["code"] == "malformed"
    await edge.send(codec.pack([1, 2]))
    assert (await edge.receive("error"))["code"] == "malformed"
    await edge.send(codec.pack({"v": 1, "t": "health", "time": "now", "uptime_s": 1.0, "restarts": 0}))
    error = await edge.receive("error")
    assert error["code"] == "bad_field" and error["ref"] == "time"
    await edge.send(codec.pack({"v": 1, "t": "deploy"}))  # a federation-only type
    assert (await edge.receive("error"))["code"] in ("bad_field", "unexpected_type")
    await edge.send(codec.pack({"v": 1, "t": "error", "code": 5}))  # a bad error frame: never answered
    await edge.send(wire.make("ping", nonce=42, time=1.5))
    pong = await edge.receive()
    assert pong.t == "pong" and pong["nonce"] == 42 and pong["time"] == 1.5  # no error came before it
    await edge.send(wire.make("hello", **edge.hello_fields()))  # a second hello
    assert (await edge.receive("error"))["code"] == "unexpected_type"
    assert fleet.app[HUB].is_online("e1")
    samples = fleet.app[METRICS].render()
    assert 'streamql_edge_protocol_errors_total{code="malformed"} 2' in samples


async def test_a_flood_of_bad_frames_closes_the_connection(fleet):
    edge = fleet.edge("e1", keep_frames=False)
    await edge.connect()
    for _ in range(100):
        await edge.ws.send_bytes(b"\xc1")
    await asyncio.wait_for(edge.closed.wait(), 5)
    assert edge.close_code == 4000
    await until(lambda: not fleet.app[HUB].is_online("e1"))


async def test_health_frames_reach_the_registry(fleet):
    edge = fleet.edge("e1")
    await edge.connect()
    await edge.send_health(cpu_percent=12.5, memory_kb=2048, restarts=2, buffer={"records": 3, "bytes": 10, "dropped": 0},
                           battery={"percent": 80.0, "charging": True, "source": "sysfs"})
    await until(lambda: "health" in (fleet.app[HUB].announced("e1") or {}))
    fleet.app[HEARTBEATS].flush()
    device = fleet.app[REGISTRY].get_device("e1")
    assert device.health["cpu_percent"] == 12.5 and device.health["battery"]["percent"] == 80.0
    assert device.restarts == 2 and device.last_seen is not None


def table(n: int):
    return [(i, float(i) / 2, f"r{i}") for i in range(n)]


async def test_fragments_stream_rows_with_credit_as_the_consumer_reads(fleet):
    rows = table(5000)
    edge = fleet.edge("e1", answer=lambda source, frame: rows)
    await edge.connect()
    hub = fleet.app[HUB]
    stream = hub.fragment("e1", "select i, x, s from …;", credit=1000, batch_rows=250)
    first = await stream.__anext__()
    assert isinstance(first, RowBatch) and first.n == 250 and first.cols[0].dtype == np.int64
    qid = next(iter(edge.rows_sent))
    await asyncio.sleep(0.2)  # the consumer pauses: the edge stops at its window
    assert edge.rows_sent[qid] == 1000 and edge.credit_given[qid] == 1000
    got = first.rows()
    async for batch in stream:
        got += batch.rows()
        assert edge.rows_sent[qid] <= edge.credit_given[qid]
    assert got == rows and edge.ended[qid]["outcome"] == "ok"
    assert edge.credit_given[qid] >= 5000
    frames = [f for f in edge.received if f.t == "query"]
    assert frames[0]["credit"] == 1000 and frames[0]["batch_rows"] == 250 and frames[0]["limits"] == {}


async def test_a_one_shot_fragment_is_sent_with_its_deadline(fleet):
    edge = fleet.edge("e1", answer=lambda source, frame: table(3))
    await edge.connect()
    hub = fleet.app[HUB]
    got = [r async for b in hub.fragment("e1", "select …;", kind="bag", deadline_s=10) for r in b.rows()]
    got += [r async for b in hub.fragment("e1", "select …;") for r in b.rows()]
    assert got == table(3) * 2
    frames = [f for f in edge.received if f.t == "query"]
    assert frames[0]["deadline_s"] == 10.0 and frames[0]["kind"] == "bag"
    assert "deadline_s" not in frames[1]


async def test_fragment_errors_and_limits(fleet):
    def answer(source, frame):
        if "bad" in source:
            raise QueryParseError("unexpected ')'", Span(9, 10, 2, 3, 2, 4))
        return table(100)

    edge = fleet.edge("e1", answer=answer)
    await edge.connect()
    hub = fleet.app[HUB]
    with pytest.raises(FragmentError) as caught:
        async for _ in hub.fragment("e1", "select\n1 bad );"):
            pass
    assert caught.value.outcome == "error" and caught.value.error == {
        "kind": "ParseError", "message": "unexpected ')'", "line": 2, "column": 3}
    seen = 0
    with pytest.raises(FragmentError) as caught:
        async for batch in hub.fragment("e1", "select …;", limits={"rows": 10, "seconds": None}):
            seen += batch.n
    assert caught.value.outcome == "limit" and seen == 10 and caught.value.rows == 10
    with pytest.raises(EdgeOffline) as offline:
        async for _ in hub.fragment("nobody", "select 1;"):
            pass
    assert offline.value.dropped is False


async def endless(source, frame):
    i = 0
    while True:
        yield [float(i), float(i + 1)]
        i += 2
        await asyncio.sleep(0.005)


async def test_closing_a_fragment_early_sends_cancel(fleet):
    edge = fleet.edge("e1", answer=endless)
    await edge.connect()
    hub = fleet.app[HUB]
    stream = hub.fragment("e1", "select stream of …;", credit=100)
    n = 0
    async for batch in stream:
        n += batch.n
        if n >= 6:
            break
    await stream.aclose()
    cancel = await edge.receive("cancel")
    await until(lambda: cancel["qid"] in edge.ended)
    assert edge.ended[cancel["qid"]]["outcome"] == "cancelled"

    # cancelling the task that consumes it does the same
    async def consume():
        async for _ in hub.fragment("e1", "select stream of …;"):
            pass

    task = asyncio.create_task(consume())
    await until(lambda: len(edge.rows_sent) == 2 and max(edge.rows_sent.values()) > 0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    second = await edge.receive("cancel")
    await until(lambda: second["qid"] in edge.ended)
    assert edge.ended[second["qid"]]["outcome"] == "cancelled"
    await until(lambda: not fleet.app[HUB].connection("e1").fragments)


async def test_a_link_dropping_mid_query_raises_edge_offline(fleet):
    edge = fleet.edge("e1", answer=endless)
    await edge.connect()
    hub = fleet.app[HUB]
    got = 0
    with pytest.raises(EdgeOffline) as caught:
        async for batch in hub.fragment("e1", "select stream of …;"):
            got += batch.n
            if got >= 4:
                await edge.close()
    assert caught.value.dropped is True and caught.value.edge_id == "e1"
    await until(lambda: not hub.is_online("e1"))


async def test_a_second_connection_replaces_the_first(fleet):
    token = fleet.provision("e1")
    first = fleet.edge("e1", token=token, answer=endless)
    await first.connect()
    hub = fleet.app[HUB]
    stream = hub.fragment("e1", "select stream of …;")
    await stream.__anext__()
    second = fleet.edge("e1", token=token)
    await second.connect()
    with pytest.raises(EdgeOffline) as caught:
        async for _ in stream:
            pass
    assert "replaced" in caught.value.reason
    await asyncio.wait_for(first.closed.wait(), 5)
    assert first.close_code == wire.CLOSE_CODES["replaced"]
    assert hub.is_online("e1") and fleet.app[REGISTRY].get_device("e1").online


async def test_the_edge_must_not_exceed_its_credit(fleet):
    edge = fleet.edge("e1", auto=False)
    await edge.connect()
    hub = fleet.app[HUB]

    async def run():
        return [b async for b in hub.fragment("e1", "select …;", credit=10)]

    task = asyncio.create_task(run())
    query = await edge.receive("query")
    n, cols = wire.columns_of(list(range(11)), 1)
    await edge.send(wire.make("rows", qid=query["qid"], seq=0, n=n, cols=cols))
    with pytest.raises(FragmentError) as caught:
        await task
    assert caught.value.error["kind"] == "ProtocolError" and "credit" in caught.value.error["message"]
    assert (await edge.receive("cancel"))["qid"] == query["qid"]
    # a gap in sequence numbers is an error too
    task = asyncio.create_task(run())
    query = await edge.receive("query")
    await edge.send(wire.make("rows", qid=query["qid"], seq=1, n=1, cols=[np.array([1])]))
    with pytest.raises(FragmentError, match="expected"):
        await task


async def test_a_deleted_device_is_disconnected(fleet):
    edge = fleet.edge("e1")
    await edge.connect()
    fleet.app[REGISTRY].delete_device("e1")
    await asyncio.wait_for(edge.closed.wait(), 5)
    assert edge.close_code == wire.CLOSE_CODES["unauthorized"]


async def test_a_silent_edge_is_closed_and_marked_offline(aiohttp_client, tmp_path):
    from federation.config import FederationConfig

    config = FederationConfig(data_dir=tmp_path / "fed", announce=False, heartbeat_s=0.2)
    client = await aiohttp_client(create_app(config))
    token = provision(client.app[REGISTRY], "e1").token
    edge = FakeEdge(str(client.make_url("/")), token, "e1")
    try:
        welcome = await edge.connect()
        assert welcome["heartbeat_s"] == 0.2
        await asyncio.wait_for(edge.closed.wait(), 5)
        await until(lambda: not client.app[REGISTRY].get_device("e1").online)
        # counted, so an operator sees edges closed for silence without the info log
        assert "streamql_edges_closed_silent_total 1" in client.app[HUB].metrics.render()
    finally:
        await edge.shutdown()


async def test_published_records_are_kept_once_across_a_federation_restart(config):
    async def serve():
        client = TestClient(TestServer(create_app(config)))
        await client.start_server()
        return client

    client = await serve()
    token = provision(client.app[REGISTRY], "e1").token
    edge = FakeEdge(str(client.make_url("/")), token, "e1")
    try:
        await edge.connect()
        sub = client.app[HUB].subscribe("alerts")
        for i in range(1, 6):
            edge.publish("alerts", [float(i)])
        await until(lambda: edge.acked == 5)
        live = [await asyncio.wait_for(sub.__anext__(), 5) for _ in range(5)]
        assert [r.seq for r in live] == [1, 2, 3, 4, 5] and live[0].rows() == [1.0]
        edge.drop_acks = True  # the next acks are lost on the way
        edge.publish("alerts", [6.0])
        edge.publish("other", [(7, "seven")], width=2)
        await until(lambda: client.app[HUB].publish_log.count() == 7)
        await edge.close()
        await client.close()  # the federation restarts

        client = await serve()
        edge.drop_acks = False
        edge._session = None  # the old session belonged to the old loop's client
        edge.url = str(client.make_url("/v1/edges/connect"))
        welcome = await edge.connect()
        assert welcome["publish_acked"] == 7 and edge.buffer == []  # nothing lost, nothing to resend
        log = client.app[HUB].publish_log
        edge.buffer = [(6, {"seq": 6, "flow": "alerts", "n": 1, "cols": [np.array([6.0])]})]
        await edge.resend_published([6])  # a duplicate arriving anyway
        edge.buffer = []
        edge.publish("alerts", [8.0])
        await until(lambda: edge.acked == 8)
        records = log.read()
        assert [(r.seq, r.flow) for r in records] == [(1, "alerts"), (2, "alerts"), (3, "alerts"), (4, "alerts"),
                                                      (5, "alerts"), (6, "alerts"), (7, "other"), (8, "alerts")]
        assert records[6].rows() == [(7, "seven")] and log.duplicates == 1
        read = {"Authorization": f"Bearer {create_token(client.app[REGISTRY], Role.READ)[1]}"}
        flows = await (await client.get("/v1/flows", headers=read)).json()
        assert flows["flows"]["alerts"]["records"] == 7 and flows["flows"]["other"]["rows"] == 1
        page = await (await client.get("/v1/flows/alerts?limit=4", headers=read)).json()
        assert [r["seq"] for r in page["records"]] == [1, 2, 3, 4] and page["records"][0]["rows"] == [1.0]
        page = await (await client.get(f"/v1/flows/alerts?after={page['next']}", headers=read)).json()
        assert [r["seq"] for r in page["records"]] == [5, 6, 8]
        page = await (await client.get("/v1/flows/other", headers=read)).json()
        assert page["records"][0]["rows"] == [[7, "seven"]] and page["records"][0]["edge"] == "e1"
        # a wiped edge store (a new log) starts again at 1
        await edge.close()
        edge.log_id, edge.next_seq, edge.acked, edge.sent_upto = "fresh", 1, 0, 0
        assert (await edge.connect())["publish_acked"] == 0
        edge.publish("alerts", [9.0])
        await until(lambda: edge.acked == 1)
        assert log.count() == 9
    finally:
        await edge.shutdown()
        await client.close()


async def test_a_federation_whose_own_loop_was_held_does_not_take_its_edges_for_silent(aiohttp_client, tmp_path):
    """A starved node's loop can be held past three heartbeats: the edges' frames then wait unread
    in their sockets, and the sweep must not close the edges for that."""
    import time

    from federation.config import FederationConfig

    config = FederationConfig(data_dir=tmp_path / "fed", announce=False, heartbeat_s=0.2)
    client = await aiohttp_client(create_app(config))
    token = provision(client.app[REGISTRY], "e1").token
    edge = FakeEdge(str(client.make_url("/")), token, "e1")

    async def beat() -> None:
        while True:
            await edge.send_health()
            await asyncio.sleep(0.05)

    beating = None
    try:
        await edge.connect()
        beating = asyncio.ensure_future(beat())
        await asyncio.sleep(0.5)
        time.sleep(1.0)                  # the loop held for five heartbeats
        await asyncio.sleep(0.6)        # the sweeps after it, the edge's beats read again
        assert not edge.closed.is_set() and client.app[HUB].is_online("e1")
    finally:
        if beating is not None:
            beating.cancel()
        await edge.shutdown()

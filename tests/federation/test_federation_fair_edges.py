"""Fair use of the edges, with the real edge daemon in-process: one principal holding streams it
never reads gets at most its share of an edge's query slots (others still run theirs); a device
publishing past its quota is refused at the federation (counted, in health and /metrics) while an
honest daemon slows down and loses nothing; an oversized hello is refused with a clear reason."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from edge_engine.autostart import AutostartSpec
from edge_engine.config import load_config
from edge_engine.daemon import EdgeDaemon
from federation.app import create_app
from federation.auth import Role, create_token, provision
from federation.config import FederationConfig
from federation.hub import FragmentError
from federation.keys import HEARTBEATS, HUB, REGISTRY
from federation.testing import FakeEdge, until
from streamql import wire

pytestmark = pytest.mark.timeout(90)

STREAM = "select stream of x from Real x where x in signal_stream('vibration');"


@contextlib.asynccontextmanager
async def federation(tmp_path, **settings):
    config = FederationConfig(data_dir=tmp_path / "fed", announce=False, heartbeat_s=1.0, **settings)
    client = TestClient(TestServer(create_app(config)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def real_edge(client, tmp_path, edge_id: str = "wl-1", **flags):
    token = provision(client.app[REGISTRY], edge_id, {"region": "US"}).token
    args = argparse.Namespace(id=edge_id, federation=str(client.make_url("/")), store=str(tmp_path / edge_id),
                              token=token, signal=["name=vibration,shape=sine,rate_hz=200,seed=3"], heartbeat_s=0.5,
                              reconnect_initial_s=0.05, reconnect_max_s=0.3, log_level="warning", **flags)
    daemon = await EdgeDaemon(load_config(None, args)).start()
    try:
        await until(lambda: client.app[HUB].is_online(edge_id), what=f"{edge_id} online")
        yield daemon
    finally:
        await daemon.stop()


async def first_batch(stream) -> None:
    async for _ in stream:
        return


async def test_one_principal_gets_its_share_of_an_edges_query_slots_and_others_still_run(tmp_path):
    async with federation(tmp_path) as client, real_edge(client, tmp_path, max_queries_per_principal=4,
                                                         max_queries=6) as daemon:
        hub = client.app[HUB]
        greedy = [hub.fragment("wl-1", STREAM, credit=1, principal="read#7") for _ in range(32)]
        outcomes = await asyncio.gather(*(first_batch(s) for s in greedy), return_exceptions=True)
        refused = [o for o in outcomes if isinstance(o, FragmentError)]
        assert len(refused) == 28 and all(o is None for o in outcomes if not isinstance(o, FragmentError))
        assert {e.error["kind"] for e in refused} == {"LimitError"}
        assert refused[0].error["message"] == "this principal runs at most 4 queries on this edge"
        assert not any("retry_s" in e.error for e in refused)   # its own share reached: not asked again
        assert len(daemon.fragments.running) == 4  # held open, never read
        rows = [r async for b in hub.fragment("wl-1", "select 1;", principal="read#8") for r in b.rows()]
        assert rows == [1]  # another principal still runs its statement
        others = [hub.fragment("wl-1", STREAM, credit=1, principal="admin#1") for _ in range(3)]
        outcomes = await asyncio.gather(*(first_batch(s) for s in others), return_exceptions=True)
        assert sum(isinstance(o, FragmentError) for o in outcomes) == 1  # the edge's own cap of 6
        full = next(o for o in outcomes if isinstance(o, FragmentError))
        assert full.error["retry_s"] > 0      # the edge busy: the statement may ask again (physical/remote.py)
        for stream in greedy + others:
            await stream.aclose()
        await until(lambda: not daemon.fragments.running, what="the held fragments cancelled")


async def test_a_device_flooding_publish_frames_is_refused_past_its_quota(tmp_path):
    async with federation(tmp_path, publish_records_per_s=50, publish_records_burst=100) as client:
        hub, registry = client.app[HUB], client.app[REGISTRY]
        hostile = FakeEdge(str(client.make_url("/")), provision(registry, "flood").token, "flood")
        neighbour = FakeEdge(str(client.make_url("/")), provision(registry, "calm").token, "calm")
        await hostile.connect()
        await neighbour.connect()
        try:
            started = time.monotonic()
            cols = [np.zeros(1000)]
            for seq in range(1, 1001):  # ignoring every refusal, as fast as the socket takes them
                await hostile.ws.send_bytes(wire.encode(wire.make("publish", seq=seq, flow="f", n=1000, cols=cols)))
            error = await hostile.receive("error", timeout=10)
            assert error["code"] == "over_quota" and error["ref"] > 100 and error["retry_after_s"] > 0
            assert "more than 50 records a second" in error["message"]
            elapsed = time.monotonic() - started
            await until(lambda: hub.quotas.refused["held"] + hub.quotas.refused["records"] >= 1000 - 100 - 50 * (elapsed + 1),
                        what="the flood refused")
            hub._flush_publish()
            kept = hub.publish_log.count(edge="flood")
            assert 100 <= kept <= 100 + 50 * (time.monotonic() - started) + 1
            assert hub.publish_log.missing("flood") == 0  # nothing accepted past a refused record
            neighbour.publish("f", [1.0, 2.0])
            await until(lambda: hub.publish_log.count(edge="calm") == 1 or hub._flush_publish(), what="calm kept")
            await hostile.send_health()
            await until(lambda: "publish_quota" in (hub.announced("flood").get("health") or {}), what="health")
            client.app[HEARTBEATS].flush()
            quota = registry.get_device("flood").health["publish_quota"]
            assert quota["refused"]["records"] >= 1 and quota["records_per_s"] == 50
            metrics = await (await client.get("/metrics")).text()
            assert 'streamql_publish_refused_total{reason="held"}' in metrics
        finally:
            await hostile.shutdown()
            await neighbour.shutdown()


async def test_an_honest_edge_over_its_quota_slows_down_and_loses_nothing(tmp_path):
    async with federation(tmp_path, publish_records_per_s=100, publish_records_burst=50) as client, \
            real_edge(client, tmp_path) as daemon:
        hub = client.app[HUB]
        spec = AutostartSpec("b", "autostart/q.sql", 1, "select 1;", "numbers")
        started = time.monotonic()
        for i in range(300):  # six times the burst, at once
            daemon.publisher.emit(spec, 1, [np.array([float(i)])], ["x"])
        await until(lambda: hub.publish_log.count(flow="numbers") == 300, timeout=30, what="every record kept")
        assert time.monotonic() - started >= (300 - 50) / 100 * 0.8  # paced by the quota, not faster
        records = hub.publish_log.read(flow="numbers", limit=1000)
        assert [r.rows()[0] for r in records] == [float(i) for i in range(300)]  # in order, exactly once
        assert hub.publish_log.missing("wl-1") == 0 and daemon.buffer.dropped == 0
        assert daemon.publisher.throttled >= 1 and hub.quotas.refused["records"] >= 1
        await until(lambda: (hub.announced("wl-1").get("health") or {}).get("publish", {}).get("throttled", 0) >= 1,
                    what="the edge's health telling its throttling")


async def test_a_hello_with_too_much_metadata_is_refused_with_its_reason(tmp_path):
    async with federation(tmp_path, max_hello_keys=8) as client:
        registry, hub = client.app[REGISTRY], client.app[HUB]
        token = provision(registry, "chatty").token
        for metadata, reason in (({f"k{i}": i for i in range(20)}, "20 keys; at most 8"),
                                 ({"blob": "x" * 5000}, "metadata.blob is 5002 bytes"),
                                 ({"ok": 1, "big": ["y" * 100] * 20_000}, "the hello is")):
            edge = FakeEdge(str(client.make_url("/")), token, "chatty", metadata=metadata)
            welcome = await edge.connect()
            assert not welcome["accepted"] and reason in welcome["reason"], welcome["reason"]
            assert edge.ws.close_code == wire.CLOSE_CODES["policy"]
            await edge.shutdown()
        assert registry.get_device("chatty").metadata == {} and not hub.is_online("chatty")
        edge = FakeEdge(str(client.make_url("/")), token, "chatty", metadata={"region": "EU"})
        welcome = await edge.connect()
        assert welcome["accepted"] and registry.get_device("chatty").metadata == {"region": "EU"}
        await edge.shutdown()


async def test_a_fleet_one_shot_query_is_answered_by_an_edge_whose_slots_hold_other_users_streams(tmp_path):
    # the federation says which fragments are one-shot (the query frame's `kind`), and the edge
    # keeps a reserve of slots for them beyond the ones its streams fill
    async with federation(tmp_path) as client, real_edge(client, tmp_path, max_queries=4) as daemon:
        hub = client.app[HUB]
        held = [hub.fragment("wl-1", STREAM, principal=f"read#{100 + i}", kind="stream") for i in range(4)]
        await asyncio.gather(*(first_batch(s) for s in held))
        assert len(daemon.fragments.running) == 4
        token = create_token(client.app[REGISTRY], Role.READ)[1]
        resp = await client.post("/v1/query", json={"query": "select id(e), signal_value('vibration')@e from Edge e;"},
                                 headers={"Authorization": f"Bearer {token}"})
        body = await resp.text()
        assert resp.status == 200, body
        lines = [json.loads(line) for line in body.splitlines()]
        assert [row[0] for row in lines if isinstance(row, list)] == ["wl-1"]
        assert "error" not in lines[-1] and not (lines[-1]["status"].get("counts") or {}).get("failed"), lines[-1]
        assert len(daemon.fragments.running) == 4       # the streams went on
        for stream in held:
            await stream.aclose()
        await until(lambda: not daemon.fragments.running, what="the held fragments cancelled")

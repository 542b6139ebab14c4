"""The hub and the deployer with the real edge daemon (edge_engine) in-process: hello, fragments
(rows, errors with positions, a cancelled stream), a signed bundle deployed and acked, health."""
from __future__ import annotations

import argparse

import pytest
from aiohttp.test_utils import TestClient, TestServer

from federation.app import create_app
from federation.auth import provision
from federation.config import FederationConfig
from federation.hub import FragmentError
from federation.keys import DEPLOYMENTS, HEARTBEATS, HUB, REGISTRY
from federation.testing import make_bundle, until
from streamql.models import keygen, read_bundle

edge_config = pytest.importorskip("edge_engine.config")
edge_daemon = pytest.importorskip("edge_engine.daemon")

pytestmark = pytest.mark.timeout(60)


async def test_the_real_edge_daemon_through_the_hub(tmp_path):
    private, public = keygen(tmp_path / "keys" / "release")
    config = FederationConfig(data_dir=tmp_path / "fed", announce=False, trusted_keys=[public], heartbeat_s=1.0)
    client = TestClient(TestServer(create_app(config)))
    await client.start_server()
    daemon = None
    try:
        registry, hub = client.app[REGISTRY], client.app[HUB]
        token = provision(registry, "wl-1", {"site": "north"}).token
        args = argparse.Namespace(
            id="wl-1", federation=str(client.make_url("/")), store=str(tmp_path / "store"), token=token,
            signal=["name=vibration,shape=sine,rate_hz=200,noise=0.1,seed=3"], trusted_key=[str(public)],
            ram_kb=1024, flash_kb=8192, cpu="cortex-a53", meta=["kind=wheel loader", "region=US"], heartbeat_s=1.0,
            reconnect_initial_s=0.05, reconnect_max_s=0.3, log_level="warning")
        daemon = await edge_daemon.EdgeDaemon(edge_config.load_config(None, args)).start()
        await until(lambda: hub.is_online("wl-1"))
        device = registry.get_device("wl-1")
        assert device.metadata == {"site": "north", "kind": "wheel loader", "region": "US"}
        assert device.capabilities["signals"] == ["vibration"] and hub.announced("wl-1")["signals"][0]["rate_hz"] == 200

        rows = [r async for b in hub.fragment("wl-1", "select x from Integer x where x in iota(1, 5);") for r in b.rows()]
        assert rows == [1, 2, 3, 4, 5]
        with pytest.raises(FragmentError) as caught:
            async for _ in hub.fragment("wl-1", "select nosuch(1);"):
                pass
        assert caught.value.error["kind"] == "NameError" and caught.value.error["column"] == 8

        stream = hub.fragment("wl-1", "select stream of x from Real x where x in signal_stream('vibration');", credit=20)
        seen = 0
        async for batch in stream:
            seen += batch.n
            if seen >= 40:
                break
        await stream.aclose()
        assert seen >= 40
        await until(lambda: not hub.connection("wl-1").fragments)

        data = make_bundle(tmp_path / "bundles", "vib", "1.0.0", private_key=private)
        registry.add_bundle("vib", "1.0.0", data, read_bundle(data).manifest)
        manager = client.app[DEPLOYMENTS]
        did = await manager.start("deploy", "vib", None, ["wl-1"], selection="true")
        progress = await manager.wait(did, 30)
        assert progress["state"] == "done", progress
        assert registry.model_version("wl-1", "vib").version == "1.0.0"

        await until(lambda: "health" in (hub.announced("wl-1") or {}))
        client.app[HEARTBEATS].flush()
        assert registry.get_device("wl-1").health["memory_kb"] > 0
    finally:
        if daemon is not None:
            await daemon.stop()
        await client.close()


async def test_a_restarted_federation_keeps_its_devices_and_the_edge_reconnects_by_itself(tmp_path):
    config = FederationConfig(data_dir=tmp_path / "fed", announce=False, heartbeat_s=1.0)
    first = TestClient(TestServer(create_app(config)))
    await first.start_server()
    port = first.port
    daemon = second = None
    try:
        token = provision(first.app[REGISTRY], "wl-7", {"region": "EU"}).token
        args = argparse.Namespace(
            id="wl-7", federation=str(first.make_url("/")), store=str(tmp_path / "store"), token=token,
            signal=["name=vibration,shape=sine,rate_hz=50,seed=1"], heartbeat_s=1.0,
            reconnect_initial_s=0.05, reconnect_max_s=0.3, log_level="warning")
        daemon = await edge_daemon.EdgeDaemon(edge_config.load_config(None, args)).start()
        await until(lambda: first.app[HUB].is_online("wl-7"))
        await first.close()                                     # the federation goes away …
        first = None
        second = TestClient(TestServer(create_app(config), port=port))   # … and comes back, same data
        await second.start_server()
        hub = second.app[HUB]
        assert second.app[REGISTRY].get_device("wl-7").metadata["region"] == "EU"
        await until(lambda: hub.is_online("wl-7"), timeout=20)  # nobody told the edge
        rows = [r async for b in hub.fragment("wl-7", "select x from Integer x where x in iota(1, 3);") for r in b.rows()]
        assert rows == [1, 2, 3]
    finally:
        if daemon is not None:
            await daemon.stop()
        for client in (first, second):
            if client is not None:
                await client.close()

"""A deployment to hundreds of edges at once (issue 16: 10,000 on one node): every device gets its
change once and its own outcome; the devices are marked `sending` in one write, sent to a bounded
number at a time; progress counts without listing; a restart in the middle keeps what each device
answered and resends only to those that had not."""
from __future__ import annotations

import asyncio
import dataclasses

import pytest
from aiohttp.test_utils import TestClient, TestServer

from federation.app import create_app
from federation.auth import provision
from federation.config import FederationConfig
from federation.keys import DEPLOYMENTS, HUB, REGISTRY
from federation.testing import FakeEdge, Nack, make_bundle, until
from streamql.models import keygen, read_bundle

pytestmark = pytest.mark.timeout(120)

NUMPY = {"runtimes": {"numpy": "2.1"}, "ram_kb": 1024}
EDGES = 240
CONCURRENCY = 8


@pytest.fixture
def keys(tmp_path):
    return keygen(tmp_path / "keys" / "release")


@pytest.fixture
def config(tmp_path, keys) -> FederationConfig:
    # a long ack timeout: a silent device stays `sending` until the restart
    return FederationConfig(data_dir=tmp_path / "fed", announce=False, trusted_keys=[keys[1]],
                            deploy_ack_timeout_s=60.0, deploy_concurrency=CONCURRENCY, max_bundle_bytes=4 << 20,
                            max_request_bytes=64 * 1024)


@pytest.fixture
def data(tmp_path, keys) -> bytes:
    return make_bundle(tmp_path / "bundles", "vib", "1.0.0", private_key=keys[0], padding=20_000)


def refuse(model, version, data, variants):
    raise Nack("no_space", "the flash is full")


async def connect_all(url: str, tokens: dict[str, str], **kwargs) -> dict[str, FakeEdge]:
    edges = {device: FakeEdge(url, token, device, capabilities=NUMPY, **kwargs.get(device, {}))
             for device, token in tokens.items()}
    for start in range(0, len(edges), 40):
        await asyncio.gather(*(edge.connect() for edge in list(edges.values())[start:start + 40]))
    return edges


async def test_a_deploy_to_hundreds_of_edges_gives_each_its_own_outcome(config, data):
    client = TestClient(TestServer(create_app(config)))
    await client.start_server()
    registry, hub = client.app[REGISTRY], client.app[HUB]
    registry.add_bundle("vib", "1.0.0", data, read_bundle(data).manifest)
    ids = [f"e{i:03d}" for i in range(EDGES)]
    tokens = {device: provision(registry, device, None, NUMPY).token for device in ids}
    refusing = set(ids[::10])            # these nack: failed, with their reason
    edges = await connect_all(str(client.make_url("/")), tokens,
                              **{device: {"install": refuse} for device in refusing})
    # what the hub sends and what the registry writes, seen from outside the manager
    sending_now, most = 0, 0
    send = hub.send

    async def counted(edge_id, frame):
        nonlocal sending_now, most
        sending_now += 1
        most = max(most, sending_now)
        try:
            await asyncio.sleep(0.001)   # a send that takes a moment, as a real socket's drain
            await send(edge_id, frame)
        finally:
            sending_now -= 1
    hub.send = counted
    writes: list[int] = []
    update = registry.update_targets

    def recorded(deployment_id, updates):
        updates = list(updates)
        writes.append(len(updates))
        return update(deployment_id, updates)
    registry.update_targets = recorded
    try:
        manager = client.app[DEPLOYMENTS]
        did = await manager.start("deploy", "vib", None, ids, selection="true", waves=1, failure_threshold=1.0)
        progress = await manager.wait(did, 60)
        assert progress["state"] == "done", progress["counts"]
        assert progress["counts"]["done"] == EDGES - len(refusing) and progress["counts"]["failed"] == len(refusing)
        states = {d["id"]: (d["state"], d["reason"]) for d in progress["devices"]}
        assert {d for d, (state, _) in states.items() if state == "failed"} == refusing
        assert all(reason == "no_space: the flash is full" for state, reason in states.values() if state == "failed")
        for device, edge in edges.items():   # each got its bundle once
            deploys = [f for f in edge.received if f.t == "deploy"]
            assert len(deploys) == 1, (device, len(deploys))
            assert edge.installed == ([] if device in refusing else [("vib", "1.0.0", ["numpy"])])
        assert sorted(registry.devices_running("vib", "1.0.0")) == sorted(set(ids) - refusing)
        # all marked `sending` in one write, not one per device; sends bounded by the concurrency
        assert writes[0] == EDGES, writes[:5]
        assert most <= CONCURRENCY and most > 1, most
        # progress without the device list counts the same
        counted_only = manager.progress(did, device_limit=0)
        assert counted_only["devices"] == [] and counted_only["counts"] == progress["counts"]
        assert counted_only["devices_total"] == EDGES
        assert manager.progress(did, device_state=("failed",), device_limit=0)["devices_total"] == len(refusing)
        assert [w["done"] for w in counted_only["waves"]["list"]] == [EDGES - len(refusing)]
    finally:
        hub.send = send
        for edge in edges.values():
            await edge.shutdown()
        await client.close()


async def test_a_restart_in_the_middle_keeps_each_devices_outcome(config, data):
    client = TestClient(TestServer(create_app(config)))
    await client.start_server()
    registry = client.app[REGISTRY]
    registry.add_bundle("vib", "1.0.0", data, read_bundle(data).manifest)
    ids = [f"e{i:03d}" for i in range(EDGES)]
    tokens = {device: provision(registry, device, None, NUMPY).token for device in ids}
    silent, refusing = set(ids[1::3]), set(ids[::10]) - set(ids[1::3])
    options = {**{d: {"install": refuse} for d in refusing}}
    edges = await connect_all(str(client.make_url("/")), tokens, **options)
    for device in silent:    # they get the bundle and never answer: `sending` at the restart
        edges[device].reply_deploys = False
    try:
        manager = client.app[DEPLOYMENTS]
        did = await manager.start("deploy", "vib", None, ids, selection="true", waves=1, failure_threshold=1.0)
        answered = EDGES - len(silent)
        await until(lambda: sum(manager.progress(did, device_limit=0)["counts"][s] for s in ("done", "failed"))
                    == answered, 60, "every answering device answered")
        before = {d["id"]: d["state"] for d in manager.progress(did)["devices"]}
        assert {d for d, s in before.items() if s == "sending"} == silent
        assert {d for d, s in before.items() if s == "failed"} == refusing
    finally:
        for edge in edges.values():
            await edge.shutdown()
        await client.close()

    # the restart: `sending` is pending again and resent; what was answered stays as it was
    client = TestClient(TestServer(create_app(config)))
    await client.start_server()
    edges = {}
    try:
        manager = client.app[DEPLOYMENTS]
        assert manager.progress(did, device_limit=0)["counts"]["pending"] == len(silent)
        edges = await connect_all(str(client.make_url("/")), tokens, **options)
        progress = await manager.wait(did, 60)
        assert progress["state"] == "done", progress["counts"]
        after = {d["id"]: d["state"] for d in progress["devices"]}
        assert {d for d, s in after.items() if s == "failed"} == refusing
        assert {d for d, s in after.items() if s == "done"} == set(ids) - refusing
        for device, edge in edges.items():   # resent only to the devices that had not answered
            deploys = [f for f in edge.received if f.t == "deploy"]
            assert len(deploys) == (1 if device in silent else 0), (device, len(deploys))
    finally:
        for edge in edges.values():
            await edge.shutdown()
        await client.close()


async def test_a_deployment_has_at_most_its_window_of_devices_sent_to_and_unanswered(config, data):
    """Each device's ack timer starts when its frame went out; on NATS the frame is small and the
    edge fetches the bundle itself, so 10,000 frames went out in seconds while the fleet fetched
    ~25 bundles a second, and 5,833 devices timed out unanswered. At most `in_flight` devices of a
    deployment have its frames without having answered. Here the manager hears each answer late
    (as from edges busy fetching): before, all 40 were out at once. The window is the operator's
    `deploy_window` (`--deploy-window N`)."""
    client = TestClient(TestServer(create_app(dataclasses.replace(config, deploy_window=5))))
    await client.start_server()
    registry, hub = client.app[REGISTRY], client.app[HUB]
    registry.add_bundle("vib", "1.0.0", data, read_bundle(data).manifest)
    ids = [f"w{i:02d}" for i in range(40)]
    tokens = {device: provision(registry, device, None, NUMPY).token for device in ids}
    edges = await connect_all(str(client.make_url("/")), tokens)
    manager = client.app[DEPLOYMENTS]
    assert manager.in_flight == 5
    out, answered, most = set(), set(), 0
    send, replied = hub.send, manager.edge_replied

    async def counted(edge_id, frame):
        nonlocal most
        await send(edge_id, frame)
        out.add(edge_id)
        most = max(most, len(out - answered))

    def late(edge_id, frame):   # the answer reaches the manager a moment later
        def hear():
            answered.add(edge_id)
            replied(edge_id, frame)
        asyncio.get_running_loop().call_later(0.05, hear)

    hub.send, manager.edge_replied = counted, late
    try:
        did = await manager.start("deploy", "vib", None, ids, selection="true", waves=1, failure_threshold=1.0)
        progress = await manager.wait(did, 60)
        assert progress["state"] == "done" and progress["counts"]["done"] == len(ids), progress["counts"]
        assert most <= 5, f"{most} devices had the frame and had not answered (window 5)"
        assert most == 5    # the window is used, not just respected
        for edge in edges.values():
            assert [f.t for f in edge.received].count("deploy") == 1
    finally:
        hub.send, manager.edge_replied = send, replied
        for edge in edges.values():
            await edge.shutdown()
        await client.close()


def test_fits_are_remembered_per_capabilities_the_fit_reads(tmp_path, keys):
    """OutgoingBundle.fit answers from what it remembers for devices alike in what a fit reads:
    the same as computing it for each device (the oracle: streamql.models.bundle_fit)."""
    from federation.deploy_frames import OutgoingBundle, capabilities_for_fit
    from streamql.models import bundle_fit

    data = make_bundle(tmp_path / "b", "req", "1.0.0", private_key=keys[0],
                       requirements={"signals": ["vibration"], "cpu": ["x86_64"], "ram_kb": 256})
    bundle = OutgoingBundle("req", "1.0.0", data)
    vibration = [{"name": "vibration", "type": "Real"}]
    cases = [{**NUMPY, "signals": vibration, "cpu": "x86_64"}, {**NUMPY, "signals": vibration, "cpu": "arm"},
             {**NUMPY, "signals": [], "cpu": "x86_64"}, {**NUMPY, "signals": vibration, "cpu": "x86_64", "ram_kb": 128},
             {"runtimes": {}, "ram_kb": 1024, "signals": vibration}, {**NUMPY, "cpu": "x86_64"},
             {**NUMPY, "signals": vibration, "cpu": "x86_64", "functions": [f"f{i}" for i in range(500)]},
             {**NUMPY, "signals": vibration, "cpu": "x86_64"}, {**NUMPY, "signals": [], "cpu": "x86_64"}]
    seen = set()
    for capabilities in cases:
        got, want = bundle.fit(capabilities), bundle_fit(bundle.parsed, capabilities_for_fit(capabilities))
        assert (got.ok, got.reason, got.variants()) == (want.ok, want.reason, want.variants()), capabilities
        seen.add((got.ok, got.reason))
    assert len(seen) >= 4   # the cases do fit differently

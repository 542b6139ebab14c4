"""Bundles and deployments: signed uploads, fit and skipped reasons, chunks, waves and the failure
threshold, offline devices on reconnect, timeouts, rollback and undeploy records, restarts."""
from __future__ import annotations


import pytest
from aiohttp.test_utils import TestClient, TestServer

from federation.app import create_app
from federation.auth import Role, create_token, provision
from federation.config import FederationConfig
from federation.keys import DEPLOYMENTS, HUB, REGISTRY
from federation.testing import FakeEdge, Nack, make_bundle, until
from streamql import wire
from streamql.models import keygen

pytestmark = pytest.mark.timeout(60)

NUMPY = {"runtimes": {"numpy": "2.1"}, "ram_kb": 1024}


@pytest.fixture
def keys(tmp_path):
    return keygen(tmp_path / "keys" / "release")


@pytest.fixture
def config(tmp_path, keys):
    return FederationConfig(data_dir=tmp_path / "fed", announce=False, trusted_keys=[keys[1]],
                            deploy_ack_timeout_s=1.0, max_bundle_bytes=4 << 20, max_request_bytes=64 * 1024)


@pytest.fixture
def bundle(tmp_path, keys):
    def make(version: str = "1.0.0", name: str = "vib", **kwargs) -> bytes:
        return make_bundle(tmp_path / "bundles", name, version, private_key=keys[0], **kwargs)
    return make


def upload(fleet, data: bytes):
    registry = fleet.app[REGISTRY]
    parsed = __import__("streamql.models", fromlist=["read_bundle"]).read_bundle(data)
    return registry.add_bundle(parsed.name, parsed.version, data, parsed.manifest)


async def test_upload_verifies_the_signature_and_stores_the_bundle(client, tokens, bundle, tmp_path):
    data = bundle("1.0.0", requirements={"ram_kb": 256})
    deploy = tokens.header("deploy")
    assert (await client.post("/v1/models", data=data, headers=tokens.header("read"))).status == 403
    resp = await client.post("/v1/models", data=data, headers=deploy)
    body = await resp.json()
    assert resp.status == 201, body
    assert body["name"] == "vib" and body["version"] == "1.0.0" and body["created"] is True
    assert body["requirements"] == {"ram_kb": 256} and body["models"] == [{"name": "vib", "variants": ["numpy"]}]
    assert body["verified_by"] == body["signed_by"][0] and body["uploader"].startswith("deploy#")
    again = await client.post("/v1/models", data=data, headers=deploy)
    assert again.status == 200 and (await again.json())["created"] is False
    other = bundle("1.0.0", padding=10)  # same name and version, other bytes
    resp = await client.post("/v1/models", data=other, headers=deploy)
    assert resp.status == 409 and (await resp.json())["error"]["kind"] == "Conflict"
    listed = await (await client.get("/v1/models", headers=tokens.header("read"))).json()
    assert [(m["name"], m["version"]) for m in listed["models"]] == [("vib", "1.0.0")]
    # unsigned, signed by a stranger, not a bundle, too large
    unsigned = make_bundle(tmp_path / "u", "vib", "2.0.0")
    resp = await client.post("/v1/models", data=unsigned, headers=deploy)
    error = (await resp.json())["error"]
    assert resp.status == 400 and error["kind"] == "ModelError" and "not signed" in error["message"]
    stranger = keygen(tmp_path / "keys" / "mallory")
    foreign = make_bundle(tmp_path / "f", "vib", "2.0.0", private_key=stranger[0])
    resp = await client.post("/v1/models", data=foreign, headers=deploy)
    assert resp.status == 400 and "not trusted" in (await resp.json())["error"]["message"]
    assert (await client.post("/v1/models", data=b"PK\x03\x04 nonsense", headers=deploy)).status == 400
    assert (await client.post("/v1/models", data=b"", headers=deploy)).status == 400
    huge = bundle("3.0.0", padding=5 << 20)
    resp = await client.post("/v1/models", data=huge, headers=deploy)
    assert resp.status == 413 and (await resp.json())["error"]["kind"] == "PayloadTooLarge"


async def test_without_trusted_keys_uploads_are_refused(aiohttp_client, tmp_path, bundle):
    app = create_app(FederationConfig(data_dir=tmp_path / "plain", announce=False))
    client = await aiohttp_client(app)
    token = create_token(client.app[REGISTRY], Role.DEPLOY)[1]
    resp = await client.post("/v1/models", data=bundle(), headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 403 and "trusted key" in (await resp.json())["error"]["message"]


async def test_deploy_fits_skips_with_reasons_and_records_versions(fleet, bundle, tokens):
    upload(fleet, bundle("1.0.0", requirements={"ram_kb": 256, "signals": ["vibration"]}))
    edges = []
    for i, caps in enumerate([NUMPY, NUMPY, {**NUMPY, "ram_kb": 128}, {"runtimes": {}, "ram_kb": 1024}]):
        caps = {**caps, "signals": [{"name": "vibration", "type": "Real"}]}
        edge = fleet.edge(f"e{i}", capabilities=caps)
        await edge.connect()
        edges.append(edge)
    manager = fleet.app[DEPLOYMENTS]
    did = await manager.start("deploy", "vib", None, ["e0", "e1", "e2", "e3", "ghost"], selection="true",
                              requested_by="deploy#1")
    progress = await manager.wait(did, 5)
    assert progress["state"] == "done" and progress["settled"] and progress["version"] == "1.0.0"
    assert progress["counts"] == {"pending": 0, "sending": 0, "installed": 0, "done": 2, "skipped": 2, "failed": 0,
                                  "rolled_back": 0}
    # the cautious default: a first wave of one device (5 percent, at least one), then the rest
    assert progress["waves"]["sizes"] == [1, 1] and [w["state"] for w in progress["waves"]["list"]] == ["done"] * 2
    by_id = {d["id"]: d for d in progress["devices"]}
    assert by_id["e0"]["state"] == "done" and by_id["e0"]["variant"] == "numpy"
    assert "257 KB of RAM but the device has 128 KB" in by_id["e2"]["reason"]
    assert "numpy runtime" in by_id["e3"]["reason"]
    assert "ghost" not in by_id  # not registered (deleted since it was selected)
    assert edges[0].installed == [("vib", "1.0.0", ["numpy"])] and edges[2].installed == []
    deploy_frame = next(f for f in edges[0].received if f.t == "deploy")
    assert deploy_frame["chunks"] == 1 and deploy_frame["variants"] == ["numpy"]
    assert deploy_frame["requirements"]["ram_kb"] == 256
    registry = fleet.app[REGISTRY]
    assert registry.devices_running("vib", "1.0.0") == ["e0", "e1"]
    assert fleet.app[HUB].announced("e0")["models"] == {"vib": "1.0.0"}
    # the same version again: done without sending
    again = await manager.start("deploy", "vib", "1.0.0", ["e0"], selection="true")
    progress = await manager.wait(again, 5)
    assert progress["devices"][0]["reason"] == "already running version 1.0.0" and len(edges[0].installed) == 1
    # through HTTP
    resp = await fleet.client.get(f"/v1/deployments/{did}", headers=tokens.header("read"))
    body = await resp.json()
    assert resp.status == 200 and body["id"] == did and body["counts"]["skipped"] == 2
    listing = await (await fleet.client.get("/v1/deployments", headers=tokens.header("read"))).json()
    assert [d["id"] for d in listing["deployments"]] == [again, did]
    assert listing["deployments"][1]["counts"]["done"] == 2
    with pytest.raises(Exception, match="no bundle"):
        await manager.start("deploy", "nothing", None, ["e0"], selection="true")


async def test_large_bundles_travel_in_chunks(fleet, bundle):
    data = bundle("1.0.0", padding=int(2.5 * wire.DEPLOY_CHUNK_BYTES))
    upload(fleet, data)
    edge = fleet.edge("e0", capabilities=NUMPY)
    await edge.connect()
    did = await fleet.app[DEPLOYMENTS].start("deploy", "vib", "1.0.0", ["e0"], selection="true")
    assert (await fleet.app[DEPLOYMENTS].wait(did, 10))["state"] == "done"
    chunks = [f for f in edge.received if f.t == "deploy"]
    assert [f["chunk"] for f in chunks] == [0, 1, 2] and {f["chunks"] for f in chunks} == {3}
    assert sum(len(f["data"]) for f in chunks) == len(data) == chunks[0]["size"]


async def test_waves_go_in_order_and_a_failure_threshold_aborts_the_rest(fleet, bundle):
    upload(fleet, bundle("1.0.0"))
    order = []

    def installer(edge_id, fail):
        def install(model, version, data, variants):
            order.append(edge_id)
            if fail:
                raise Nack("install", "disk full")
        return install

    ids = [f"e{i}" for i in range(6)]
    for device_id in ids:
        edge = fleet.edge(device_id, capabilities=NUMPY, install=installer(device_id, device_id in ("e0", "e1")))
        await edge.connect()
    manager = fleet.app[DEPLOYMENTS]
    did = await manager.start("deploy", "vib", None, ids, selection="true", waves=3, failure_threshold=0.4)
    progress = await manager.wait(did, 5)
    assert progress["state"] == "aborted" and order == ["e0", "e1"]
    by_id = {d["id"]: d for d in progress["devices"]}
    assert by_id["e0"]["state"] == "failed" and by_id["e0"]["reason"] == "install: disk full"
    assert [by_id[i]["wave"] for i in ids] == [1, 1, 2, 2, 3, 3]
    for device_id in ids[2:]:
        assert by_id[device_id]["state"] == "skipped" and "aborted after wave 1" in by_id[device_id]["reason"]
    assert fleet.app[REGISTRY].devices_running("vib") == []
    # below the threshold every wave goes, one after the other
    order.clear()
    later = ["e2", "e1", "e3", "e4", "e5"]  # waves follow the order given: e1 fails in wave 1 of 2
    did = await manager.start("deploy", "vib", None, later, selection="true", waves=2, failure_threshold=0.5)
    progress = await manager.wait(did, 5)
    assert progress["state"] == "done"        # 1 failed of the 2 wave 1 finished is not above 50 percent
    assert set(order[:2]) == {"e2", "e1"} and set(order[2:]) == {"e3", "e4", "e5"}
    assert progress["counts"]["done"] == 4 and progress["counts"]["failed"] == 1
    assert [(w["wave"], w["devices"], w["failed"], w["failed_share"]) for w in progress["waves"]["list"]] == \
        [(1, 2, 1, 0.5), (2, 3, 0, 0.0)]


async def test_offline_devices_get_theirs_when_they_reconnect(fleet, bundle):
    upload(fleet, bundle("1.0.0"))
    online = fleet.edge("on", capabilities=NUMPY)
    await online.connect()
    offline_token = fleet.provision("off", capabilities=NUMPY)
    manager = fleet.app[DEPLOYMENTS]
    did = await manager.start("deploy", "vib", None, ["on", "off"], selection="true")
    progress = await manager.wait(did, 5)
    assert progress["settled"] and progress["state"] == "running" and progress["waiting_for_offline"] == 1
    assert {d["id"]: d["state"] for d in progress["devices"]} == {"off": "pending", "on": "done"}
    late = fleet.edge("off", token=offline_token, capabilities=NUMPY)
    await late.connect()
    await until(lambda: manager.progress(did)["state"] == "done")
    assert late.installed == [("vib", "1.0.0", ["numpy"])]
    assert fleet.app[REGISTRY].devices_running("vib", "1.0.0") == ["off", "on"]


async def test_silent_devices_fail_and_dropped_links_are_pending_again(fleet, bundle):
    upload(fleet, bundle("1.0.0"))
    silent = fleet.edge("silent", capabilities=NUMPY)
    await silent.connect()
    silent.reply_deploys = False
    manager = fleet.app[DEPLOYMENTS]
    did = await manager.start("deploy", "vib", None, ["silent"], selection="true")
    progress = await manager.wait(did, 5)
    assert progress["state"] == "failed" and progress["devices"][0]["reason"] == "no answer within 1 s"

    leaving = fleet.edge("leaving", capabilities=NUMPY)
    await leaving.connect()
    leaving.reply_deploys = False
    did = await manager.start("deploy", "vib", None, ["leaving"], selection="true")
    await until(lambda: any(f.t == "deploy" for f in leaving.received))
    await leaving.close()
    await until(lambda: manager.progress(did)["devices"][0]["state"] == "pending")
    assert "disconnected" in manager.progress(did)["devices"][0]["reason"]
    leaving.reply_deploys = True
    await leaving.connect()
    assert (await manager.wait(did, 5))["state"] == "done"


async def test_rollback_and_undeploy_follow_what_devices_report(fleet, bundle):
    upload(fleet, bundle("1.0.0"))
    upload(fleet, bundle("2.0.0"))
    edges = [fleet.edge(f"e{i}", capabilities=NUMPY) for i in range(3)]
    for edge in edges:
        await edge.connect()
    manager, registry = fleet.app[DEPLOYMENTS], fleet.app[REGISTRY]
    for version in ("1.0.0", "2.0.0"):
        did = await manager.start("deploy", "vib", version, ["e0", "e1"], selection="true")
        assert (await manager.wait(did, 5))["state"] == "done"
    assert registry.model_version("e0", "vib").previous_version == "1.0.0"
    did = await manager.start("rollback", "vib", None, ["e0", "e1", "e2"], selection="region(e) = 'US'")
    progress = await manager.wait(did, 5)
    assert progress["state"] == "done" and progress["selection"] == "region(e) = 'US'"
    by_id = {d["id"]: d for d in progress["devices"]}
    assert by_id["e2"]["state"] == "skipped" and by_id["e2"]["reason"] == "model 'vib' is not deployed there"
    assert [registry.model_version(e, "vib").version for e in ("e0", "e1")] == ["1.0.0", "1.0.0"]
    assert edges[0].models == {"vib": "1.0.0"}
    rollback_frame = next(f for f in edges[0].received if f.t == "rollback")
    assert "version" not in rollback_frame and rollback_frame["model"] == "vib"
    # a rollback the device cannot do: failed with its reason, the registry unchanged
    did = await manager.start("rollback", "vib", None, ["e0"], selection="true")
    progress = await manager.wait(did, 5)
    assert progress["state"] == "failed" and "no previous version" in progress["devices"][0]["reason"]
    assert registry.model_version("e0", "vib").version == "1.0.0"
    did = await manager.start("undeploy", "vib", None, ["e0", "e1", "e2"], selection="true")
    progress = await manager.wait(did, 5)
    assert progress["counts"]["done"] == 2 and progress["counts"]["skipped"] == 1
    assert registry.devices_running("vib") == [] and edges[1].models == {}
    with pytest.raises(Exception, match="action"):
        await manager.start("explode", "vib", None, ["e0"], selection="true")


async def test_a_restart_resumes_running_deployments(config, bundle):
    client = TestClient(TestServer(create_app(config)))
    await client.start_server()
    registry = client.app[REGISTRY]
    data = bundle("1.0.0")
    from streamql.models import read_bundle
    registry.add_bundle("vib", "1.0.0", data, read_bundle(data).manifest)
    token = provision(registry, "late", None, NUMPY).token
    did = await client.app[DEPLOYMENTS].start("deploy", "vib", None, ["late"], selection="true")
    await client.close()

    client = TestClient(TestServer(create_app(config)))
    await client.start_server()
    edge = FakeEdge(str(client.make_url("/")), token, "late", capabilities=NUMPY)
    try:
        await edge.connect()
        manager = client.app[DEPLOYMENTS]
        await until(lambda: manager.progress(did)["state"] == "done")
        assert edge.installed == [("vib", "1.0.0", ["numpy"])]
    finally:
        await edge.shutdown()
        await client.close()

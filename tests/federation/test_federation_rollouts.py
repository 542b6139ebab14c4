"""Staged rollouts with scripted edges (federation.testing.FakeEdge): a wave waits for its devices
to report healthy (the ack, then health showing the autostart queries running for a while), a
failed autostart query fails its device, a wave over the threshold aborts the rest and can roll
the installed devices back, an offline device never holds a wave past its timeout. Then the wave
arithmetic and the health verdict as pure functions (federation/rollout.py)."""
from __future__ import annotations

import asyncio
import time

import pytest

from federation.config import FederationConfig
from federation.keys import DEPLOYMENTS, REGISTRY
from federation.rollout import RolloutDefaults, RolloutPolicy, exceeds, health_verdict, policy_for
from federation.testing import make_bundle, until
from streamql.models import keygen, read_bundle
from streamql.syntax import parse_one

pytestmark = pytest.mark.timeout(60)

NUMPY = {"runtimes": {"numpy": "2.1"}, "ram_kb": 1024}
QUERY = "vib:autostart/scores.sql#1"


@pytest.fixture
def keys(tmp_path):
    return keygen(tmp_path / "keys" / "release")


@pytest.fixture
def config(tmp_path, keys):
    return FederationConfig(data_dir=tmp_path / "fed", announce=False, trusted_keys=[keys[1]],
                            deploy_ack_timeout_s=5.0, deploy_settle_s=0.3, max_request_bytes=64 * 1024)


@pytest.fixture
def upload(fleet, tmp_path, keys):
    def add(version: str) -> None:
        data = make_bundle(tmp_path / "bundles", "vib", version, private_key=keys[0])
        fleet.app[REGISTRY].add_bundle("vib", version, data, read_bundle(data).manifest)
    return add


def rollout(options: str):
    return parse_one(f"deploy model 'vib' to Edge e {options};").rollout


def query(status: str, **fields) -> dict:
    return {"query": QUERY, "status": status, **fields}


def deploys(edge, version: str) -> list:
    return [f for f in edge.received if f.t == "deploy" and f["version"] == version]


async def test_a_wave_waits_for_its_devices_to_report_healthy(fleet, upload):
    upload("1.0.0")
    slow = fleet.edge("e0", capabilities=NUMPY, autostart=lambda m, v: [query("starting")])
    others = [fleet.edge(f"e{i}", capabilities=NUMPY, autostart=lambda m, v: [query("running")]) for i in (1, 2)]
    for edge in (slow, *others):
        await edge.connect()
    manager = fleet.app[DEPLOYMENTS]
    did = await manager.start("deploy", "vib", None, ["e0", "e1", "e2"], selection="true",
                              rollout=rollout("over waves of 1 wave timeout 20 seconds"))
    state = lambda device: next(d["state"] for d in manager.progress(did)["devices"] if d["id"] == device)  # noqa: E731
    await until(lambda: state("e0") == "installed")
    await asyncio.sleep(0.5)                       # acked, but its query is not running: wave 2 waits
    assert state("e0") == "installed" and not deploys(others[0], "1.0.0")
    assert manager.progress(did)["waves"]["list"][0]["state"] == "running"
    await slow.send_health(models={"vib": "1.0.0"}, loaded={"vib": "1.0.0"},
                           autostart=[query("running", bundle="vib")])
    started = time.monotonic()
    progress = await manager.wait(did, 10)
    assert progress["state"] == "done" and progress["counts"]["done"] == 3, progress
    assert time.monotonic() - started >= 0.3        # healthy only after looking healthy for the settle time
    assert [w["state"] for w in progress["waves"]["list"]] == ["done", "done"]
    assert progress["waves"]["sizes"] == [1, 2] and progress["waves"]["timeout_s"] == 20


async def test_a_failing_query_aborts_the_rollout_and_rolls_the_installed_devices_back(fleet, upload, tokens):
    upload("1.0.0")
    upload("2.0.0")

    def scripts(model, version):   # version 2.0.0's autostart query fails on its first data
        return [query("failed", restarts=1, error="RuntimeError: index 3 is out of range")] if version == "2.0.0" \
            else [query("running")]
    edges = [fleet.edge(f"e{i}", capabilities=NUMPY, autostart=scripts) for i in range(6)]
    for edge in edges:
        await edge.connect()
    manager, registry = fleet.app[DEPLOYMENTS], fleet.app[REGISTRY]
    first = await manager.start("deploy", "vib", "1.0.0", ["e0"], selection="true")
    assert (await manager.wait(first, 10))["state"] == "done"

    statement = ("deploy model 'vib' version '2.0.0' to Edge e where id(e) != 'dev-1' "   # dev-1: the tokens' device
                 "over 3 waves abort above 10 percent rollback on abort;")
    resp = await fleet.client.post("/v1/query", json={"query": statement}, headers=tokens.header("deploy"))
    assert resp.status == 200, await resp.text()
    did = resp.headers["X-StreamQL-Deployment"]
    await resp.read()
    progress = await manager.wait(did, 20)
    assert progress["state"] == "aborted", (progress["devices"], progress["waves"], progress["abort"])
    by_id = {d["id"]: d for d in progress["devices"]}
    assert [by_id[f"e{i}"]["wave"] for i in range(6)] == [1, 1, 2, 2, 3, 3]
    # wave 1 installed and failed its health; each went back to what it ran before
    assert by_id["e0"]["state"] == by_id["e1"]["state"] == "rolled_back"
    assert "autostart query vib:autostart/scores.sql#1 failed: RuntimeError: index 3" in by_id["e0"]["reason"]
    assert by_id["e0"]["reason"].endswith("rolled back to 1.0.0")
    assert by_id["e1"]["reason"].endswith("undeployed: it ran no earlier version")
    assert edges[0].models == {"vib": "1.0.0"} and edges[1].models == {}
    assert registry.model_version("e0", "vib").version == "1.0.0" and registry.model_version("e1", "vib") is None
    undo = [f for f in edges[0].received if f.t == "rollback"]
    assert len(undo) == 1 and undo[0]["version"] == "1.0.0" and undo[0]["did"].endswith("-undo")
    # the later waves were never touched
    for i in range(2, 6):
        assert by_id[f"e{i}"]["state"] == "skipped" and "rollout aborted after wave 1" in by_id[f"e{i}"]["reason"]
        assert not deploys(edges[i], "2.0.0") and edges[i].models == {}
    abort = progress["abort"]
    assert abort["wave"] == 1 and abort["rollback"] == "done" and abort["rolled_back"] == 2
    assert "2 of 2 devices failed, more than 10 percent" in abort["reason"]
    assert [(w["state"], w["failed_share"]) for w in progress["waves"]["list"][:1]] == [("aborted", 1.0)]
    assert [w["state"] for w in progress["waves"]["list"][1:]] == ["skipped", "skipped"]
    # the same through HTTP
    body = await (await fleet.client.get(f"/v1/deployments/{did}", headers=tokens.header("read"))).json()
    assert body["abort"] == abort and body["waves"]["rollback_on_abort"] is True and body["failure_threshold"] == 0.1
    # `rollback on abort` undoes a deploy only
    resp = await fleet.client.post("/v1/query", headers=tokens.header("deploy"), json={
        "query": "rollback model 'vib' on Edge e rollback on abort;"})
    assert resp.status == 400 and "rollback on abort" in (await resp.json())["error"]["message"]


async def test_without_rollback_on_abort_the_failed_devices_keep_what_they_got(fleet, upload):
    upload("1.0.0")
    edges = [fleet.edge(f"e{i}", capabilities=NUMPY, autostart=lambda m, v: [query("failed", error="boom")])
             for i in range(3)]
    for edge in edges:
        await edge.connect()
    manager = fleet.app[DEPLOYMENTS]
    did = await manager.start("deploy", "vib", None, ["e0", "e1", "e2"], selection="true",
                              rollout=rollout("over 3 waves"))
    progress = await manager.wait(did, 10)
    assert progress["state"] == "aborted" and progress["abort"]["rollback"] is None
    assert [d["state"] for d in progress["devices"]] == ["failed", "skipped", "skipped"]
    assert edges[0].models == {"vib": "1.0.0"} and not [f for f in edges[0].received if f.t == "undeploy"]


async def test_a_device_that_never_reports_healthy_fails_when_its_wave_times_out(fleet, upload):
    upload("1.0.0")
    stuck = fleet.edge("e0", capabilities=NUMPY, autostart=lambda m, v: [query("starting")])
    later = fleet.edge("e1", capabilities=NUMPY, autostart=lambda m, v: [query("running")])
    for edge in (stuck, later):
        await edge.connect()
    manager = fleet.app[DEPLOYMENTS]
    started = time.monotonic()
    did = await manager.start("deploy", "vib", None, ["e0", "e1"], selection="true",
                              rollout=rollout("over 2 waves wave timeout 1 seconds"))
    progress = await manager.wait(did, 10)
    assert 1.0 <= time.monotonic() - started < 5
    assert progress["state"] == "aborted"
    assert progress["devices"][0]["reason"] == f"not healthy within 1 s: autostart query {QUERY} is starting"
    assert not deploys(later, "1.0.0")


async def test_an_offline_device_does_not_hold_its_wave_past_the_timeout(fleet, upload):
    upload("1.0.0")
    offline_token = fleet.provision("e0", capabilities=NUMPY)
    online = [fleet.edge(f"e{i}", capabilities=NUMPY, autostart=lambda m, v: [query("running")]) for i in (1, 2)]
    for edge in online:
        await edge.connect()
    manager = fleet.app[DEPLOYMENTS]
    started = time.monotonic()
    did = await manager.start("deploy", "vib", None, ["e0", "e1", "e2"], selection="true",
                              rollout=rollout("over waves of 2 wave timeout 1.5 seconds"))
    await until(lambda: deploys(online[1], "1.0.0"))          # wave 2 went …
    waited = time.monotonic() - started
    assert 1.5 <= waited < 4, waited                          # … once wave 1's timeout was up, not before
    progress = await manager.wait(did, 10)
    assert progress["settled"] and progress["state"] == "running" and progress["waiting_for_offline"] == 1
    first = progress["waves"]["list"][0]
    assert first["state"] == "done" and first["offline"] == ["e0"] and first["failed_share"] == 0.0
    assert {d["id"]: d["state"] for d in progress["devices"]} == {"e0": "pending", "e1": "done", "e2": "done"}
    late = fleet.edge("e0", token=offline_token, capabilities=NUMPY, autostart=lambda m, v: [query("running")])
    await late.connect()                                      # it gets its change when it is back
    await until(lambda: manager.progress(did)["state"] == "done")
    assert late.models == {"vib": "1.0.0"}


async def test_a_dropped_link_while_installing_sends_the_device_again(fleet, upload):
    upload("1.0.0")
    edge = fleet.edge("e0", capabilities=NUMPY, autostart=lambda m, v: [query("starting")])
    await edge.connect()
    manager = fleet.app[DEPLOYMENTS]
    did = await manager.start("deploy", "vib", None, ["e0"], selection="true")
    await until(lambda: manager.progress(did)["devices"][0]["state"] == "installed")
    await edge.close()
    await until(lambda: manager.progress(did)["devices"][0]["state"] == "pending")
    edge.autostart = lambda m, v: [query("running")]
    await edge.connect()                                      # resent: acked again ("already done"), healthy
    progress = await manager.wait(did, 10)
    assert progress["state"] == "done" and len(deploys(edge, "1.0.0")) == 2


# --------------------------------------------------------------------------- the arithmetic
@pytest.mark.parametrize("devices,sizes", [(0, []), (1, [1]), (2, [1, 1]), (20, [1, 19]), (21, [2, 19]),
                                           (100, [5, 95]), (1000, [50, 950])])
def test_the_default_is_a_first_wave_of_five_percent_then_the_rest(devices, sizes):
    policy = policy_for("deploy", None, RolloutDefaults())
    assert policy.wave_sizes(devices) == sizes
    assert policy.threshold == 0.1 and policy.timeout_s == 300 and not policy.rollback_on_abort


@pytest.mark.parametrize("options,devices,sizes", [
    ("over 3 waves", 9, [3, 3, 3]),
    ("over 3 waves", 10, [3, 3, 4]),                 # the larger waves come last
    ("over 4 waves", 2, [1, 1]),                     # never an empty wave
    ("over 1 waves", 7, [7]),
    ("over waves of 1, 10 percent, 25", 100, [1, 10, 25, 64]),   # then the rest
    ("over waves of 1, 10 percent, 25", 20, [1, 2, 17]),
    ("over waves of 10 percent", 3, [1, 2]),         # a percentage rounds up, to at least one device
    ("over waves of 5, 5", 7, [5, 2]),
    ("over waves of 100 percent", 7, [7]),
])
def test_wave_sizes_as_written(options, devices, sizes):
    policy = policy_for("deploy", rollout(options), RolloutDefaults())
    assert policy.wave_sizes(devices) == sizes and sum(sizes) == devices


def test_statement_options_override_the_defaults_and_rollbacks_go_in_one_wave():
    defaults = RolloutDefaults(threshold=0.2, timeout_s=60)
    policy = policy_for("deploy", rollout("abort above 0 percent wave timeout 2 minutes rollback on abort"), defaults)
    assert (policy.threshold, policy.timeout_s, policy.rollback_on_abort) == (0.0, 120.0, True)
    assert policy.wave_sizes(40) == [2, 38]                  # the waves stay the default
    assert policy_for("rollback", None, defaults).wave_sizes(40) == [40]
    assert policy_for("undeploy", rollout("over 2 waves"), defaults).wave_sizes(40) == [20, 20]
    assert policy_for("deploy", None, defaults, waves=4, threshold=0.5).wave_sizes(8) == [2, 2, 2, 2]
    assert RolloutPolicy.from_dict(policy.to_dict(), RolloutPolicy()) == policy


def test_the_threshold_is_a_share_of_the_finished_devices():
    assert not exceeds(failed=1, finished=10, threshold=0.1)      # 10 percent is not above 10 percent
    assert exceeds(failed=2, finished=10, threshold=0.1)
    assert exceeds(failed=1, finished=1, threshold=0.99)
    assert not exceeds(failed=0, finished=0, threshold=0.0)       # a wave that finished nobody aborts nothing
    assert exceeds(failed=1, finished=3, threshold=0.0) and not exceeds(failed=3, finished=3, threshold=1.0)


def test_the_health_verdict():
    expected = {"model": "vib", "version": "2.0.0", "autostart": [QUERY], "loaded": {"vib_m": "2.0.0"}}
    good = {"models": {"vib": "2.0.0"}, "loaded": {"vib_m": "2.0.0"}, "autostart": [query("running")]}
    assert health_verdict(expected, good) == ("healthy", "healthy")
    assert health_verdict(expected, {**good, "models": {"vib": "1.0.0"}})[0] == "waiting"   # from before the change
    assert health_verdict(expected, {**good, "loaded": {}}) == ("waiting", "model vib_m 2.0.0 is not loaded")
    assert health_verdict(expected, {**good, "autostart": []})[0] == "waiting"
    assert health_verdict(expected, {**good, "autostart": [query("starting")]}) == \
        ("waiting", f"autostart query {QUERY} is starting")
    assert health_verdict(expected, {**good, "autostart": [query("failed", error="boom")]}) == \
        ("failed", f"autostart query {QUERY} failed: boom")
    assert health_verdict(expected, {**good, "autostart": [query("running", restarts=2)]})[0] == "failed"
    assert health_verdict({**expected, "autostart": []}, good)[0] == "healthy"

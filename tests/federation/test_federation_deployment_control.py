"""The operator's control of deployments with scripted edges (federation.testing.FakeEdge): a
deploy that selects nobody ends as nothing_selected; a preflight (and `explain deploy`) counts
what would install, wait, be skipped and why, is already there and is likely to fail, each count
checked against the registry's own rows; cancel, abort with rollback (a device answering during
the abort does not finish the deployment), retry of the failed devices and rollback; the device
listing of a deployment paged and filtered."""
from __future__ import annotations

import asyncio
import sqlite3

import pytest

from federation.config import FederationConfig
from federation.keys import DEPLOYMENTS, REGISTRY
from federation.testing import Nack, make_bundle, until
from streamql.models import keygen, read_bundle
from streamql.syntax import parse_one

pytestmark = pytest.mark.timeout(60)

NUMPY = {"runtimes": {"numpy": "2.1"}, "ram_kb": 1024}


@pytest.fixture
def keys(tmp_path):
    return keygen(tmp_path / "keys" / "release")


@pytest.fixture
def config(tmp_path, keys):
    return FederationConfig(data_dir=tmp_path / "fed", announce=False, trusted_keys=[keys[1]],
                            deploy_ack_timeout_s=5.0, deploy_settle_s=0.1, max_request_bytes=64 * 1024)


@pytest.fixture
def upload(fleet, tmp_path, keys):
    def add(version: str, requirements: dict | None = None) -> None:
        data = make_bundle(tmp_path / "bundles", "vib", version, private_key=keys[0], requirements=requirements)
        fleet.app[REGISTRY].add_bundle("vib", version, data, read_bundle(data).manifest)
    return add


def _database(fleet):
    """A connection of its own to the registry's database (SQLite file or PostgreSQL), and its
    parameter mark."""
    registry = fleet.app[REGISTRY]
    if registry.shared:
        import psycopg
        return psycopg.connect(registry.conninfo), "%s"
    return sqlite3.connect(registry.path), "?"


def db_targets(fleet, deployment_id) -> dict[str, tuple[str, str | None]]:
    """The oracle: a deployment's targets straight from the database."""
    conn, mark = _database(fleet)
    try:
        return {d: (s, r) for d, s, r in conn.execute(
            f"SELECT device_id, state, reason FROM deployment_targets WHERE deployment_id = {mark}",
            (int(deployment_id),))}
    finally:
        conn.close()


def db_state(fleet, deployment_id) -> str:
    conn, mark = _database(fleet)
    try:
        return conn.execute(f"SELECT state FROM deployments WHERE id = {mark}", (int(deployment_id),)).fetchone()[0]
    finally:
        conn.close()


async def post_query(fleet, tokens, text: str):
    resp = await fleet.client.post("/v1/query", json={"query": text}, headers=tokens.header("deploy"))
    body = await resp.text()
    assert resp.status == 200, body
    return resp, body


async def test_a_deploy_that_selects_nobody_ends_as_nothing_selected(fleet, upload, tokens):
    upload("1.0.0")
    resp, body = await post_query(fleet, tokens, "deploy model 'vib' to Edge e where region(e) = 'nowhere';")
    did = resp.headers["X-StreamQL-Deployment"]
    assert db_state(fleet, did) == "nothing_selected" and db_targets(fleet, did) == {}
    progress = await (await fleet.client.get(f"/v1/deployments/{did}?wait=5", headers=tokens.header("read"))).json()
    assert progress["state"] == "nothing_selected" and progress["settled"] and progress["devices"] == []
    listed = await (await fleet.client.get("/v1/deployments?state=nothing_selected,failed",
                                           headers=tokens.header("read"))).json()
    assert [d["id"] for d in listed["deployments"]] == [did]


async def test_a_preflight_counts_what_the_registry_says(fleet, upload, tokens):
    upload("1.0.0", requirements={"ram_kb": 512})
    small = dict(NUMPY, ram_kb=256)
    refuses = {"on": True}

    def install(model, version, data, variants):
        if refuses["on"]:
            raise Nack("disk", "no space left on the device")
    edges = {"e0": fleet.edge("e0", capabilities=NUMPY), "e1": fleet.edge("e1", capabilities=NUMPY),
             "e2": fleet.edge("e2", capabilities=small), "e3": fleet.edge("e3", capabilities=NUMPY, install=install)}
    for edge in edges.values():
        await edge.connect()
    fleet.provision("e4", {"region": "far"}, NUMPY)    # registered, never connected
    manager = fleet.app[DEPLOYMENTS]
    first = await manager.start("deploy", "vib", "1.0.0", ["e1", "e3"], selection="true")
    progress = await manager.wait(first, 10)
    assert {d["id"]: d["state"] for d in progress["devices"]} == {"e1": "done", "e3": "failed"}
    statement = "deploy model 'vib' version '1.0.0' to Edge e where id(e) != 'dev-1';"
    resp = await fleet.client.post("/v1/deployments/preflight", json={"statement": statement},
                                   headers=tokens.header("deploy"))
    assert resp.status == 200, await resp.text()
    found = await resp.json()
    # the oracle: who runs what, and who refused, from the database file
    conn, _ = _database(fleet)
    running = {d for (d,) in conn.execute("SELECT device_id FROM device_models WHERE model = 'vib' AND version = '1.0.0'")}
    refused = {d for (d,) in conn.execute(
        "SELECT t.device_id FROM deployment_targets t JOIN deployments d ON d.id = t.deployment_id "
        "WHERE d.bundle = 'vib' AND d.version = '1.0.0' AND t.state = 'failed'")}
    online = {d for (d,) in conn.execute("SELECT id FROM devices WHERE online AND id != 'dev-1'")}
    conn.close()
    assert running == {"e1"} and refused == {"e3"} and online == {"e0", "e1", "e2", "e3"}
    ids = lambda name: sorted(d["id"] for d in found["devices"][name])  # noqa: E731
    assert found["selected"] == 5
    assert ids("already") == sorted(running)
    assert ids("skip") == ["e2"] and list(found["skip_reasons"].values()) == [1]
    assert "RAM" in next(iter(found["skip_reasons"])) or "ram" in next(iter(found["skip_reasons"]))
    assert ids("install") == sorted(online - running - {"e2"}) == ["e0", "e3"]
    assert ids("wait") == ["e4"]
    assert ids("likely_to_fail") == sorted(refused) and "no space left" in found["devices"]["likely_to_fail"][0]["reason"]
    assert found["counts"] == {"install": 2, "wait": 1, "skip": 1, "already": 1, "likely_to_fail": 1}
    # nothing was started by it, and `explain deploy` prints the same
    assert len(fleet.app[REGISTRY].list_deployments()) == 1
    _, body = await post_query(fleet, tokens, "explain " + statement)
    assert "preflight: 5 selected · 2 install · 1 wait (offline) · 1 skip · 1 already there · 1 likely to fail" in body
    assert "likely to fail: e3 refused this change before: disk: no space left" in body
    # a read token may not; a statement that is no deployment is refused
    resp = await fleet.client.post("/v1/deployments/preflight", json={"statement": statement},
                                   headers=tokens.header("read"))
    assert resp.status == 403
    resp = await fleet.client.post("/v1/deployments/preflight", json={"statement": "select 1;"},
                                   headers=tokens.header("deploy"))
    assert resp.status == 400


async def test_cancel_stops_a_rollout_and_skips_the_rest(fleet, upload, tokens):
    upload("1.0.0")
    edges = [fleet.edge(f"e{i}", capabilities=NUMPY) for i in range(4)]
    edges[0].reply_deploys = False    # wave 1 never finishes on its own
    for edge in edges:
        await edge.connect()
    manager = fleet.app[DEPLOYMENTS]
    did = await manager.start("deploy", "vib", "1.0.0", [e.edge_id for e in edges], selection="true", waves=2)
    await until(lambda: db_targets(fleet, did)["e0"][0] == "sending")
    resp = await fleet.client.post(f"/v1/deployments/{did}/cancel", headers=tokens.header("read"))
    assert resp.status == 403
    resp = await fleet.client.post(f"/v1/deployments/{did}/cancel", headers=tokens.header("deploy"))
    assert resp.status == 200, await resp.text()
    progress = await resp.json()
    assert progress["state"] == "cancelled" == db_state(fleet, did) and progress["settled"]
    targets = db_targets(fleet, did)
    assert {d: s for d, (s, _) in targets.items()} == {d["id"]: d["state"] for d in progress["devices"]}
    assert all(state in ("done", "skipped") for state, _ in targets.values())
    assert targets["e0"][0] == "skipped" and "cancelled by" in targets["e0"][1] and "may still install" in targets["e0"][1]
    later = [d for d, (s, r) in targets.items() if s == "skipped" and "may still" not in r]
    assert later and not any(f.t == "deploy" for e in edges if e.edge_id in later for f in e.received)
    resp = await fleet.client.post(f"/v1/deployments/{did}/cancel", headers=tokens.header("deploy"))
    assert resp.status == 409     # not running any more


async def test_abort_with_rollback_waits_for_devices_in_flight_and_undoes_every_switch(fleet, upload, tokens):
    upload("1.0.0")
    release = asyncio.Event()

    async def slow(model, version, data, variants):
        await release.wait()
    edges = [fleet.edge("e0", capabilities=NUMPY), fleet.edge("e1", capabilities=NUMPY, install=slow),
             fleet.edge("e2", capabilities=NUMPY)]
    for edge in edges:
        await edge.connect()
    manager = fleet.app[DEPLOYMENTS]
    did = await manager.start("deploy", "vib", "1.0.0", ["e0", "e1", "e2"], selection="true",
                              rollout=parse_one("deploy model 'vib' to Edge e over waves of 2;").rollout)
    await until(lambda: db_targets(fleet, did)["e0"][0] == "done" and db_targets(fleet, did)["e1"][0] == "sending")
    resp = await fleet.client.post(f"/v1/deployments/{did}/abort", json={"rollback": True},
                                   headers=tokens.header("deploy"))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["abort"]["rollback"] == "running"
    release.set()     # e1 answers while the abort waits for it: that must not finish the deployment
    progress = await manager.wait(did, 15)
    assert progress["state"] == "aborted" == db_state(fleet, did), progress
    targets = db_targets(fleet, did)
    assert targets["e0"][0] == targets["e1"][0] == "rolled_back"
    assert targets["e2"][0] == "skipped" and "aborted by" in targets["e2"][1]
    assert progress["abort"]["rolled_back"] == 2 and progress["abort"]["by"]
    assert edges[0].models == edges[1].models == {} and edges[2].models == {}


async def test_nothing_finishes_a_deployment_while_its_abort_runs(fleet, upload):
    """The latent bug: a device finishing during an abort's rollback marked the deployment done
    and dropped the rollback's answers."""
    upload("1.0.0")
    edge = fleet.edge("e0", capabilities=NUMPY)
    edge.reply_deploys = False
    await edge.connect()
    manager = fleet.app[DEPLOYMENTS]
    did = await manager.start("deploy", "vib", "1.0.0", ["e0"], selection="true")
    await until(lambda: db_targets(fleet, did)["e0"][0] == "sending")
    run = manager._runs[int(did)]
    run.waves["abort"] = {"wave": 1, "reason": "test", "rollback": "running"}
    run.rolled_out = True
    fleet.app[REGISTRY].update_targets(int(did), [("e0", "done", None)])
    manager._maybe_finish(run)
    assert db_state(fleet, did) == "running" and int(did) in manager._runs


async def test_retry_the_failed_devices_then_roll_back(fleet, upload, tokens):
    upload("1.0.0")
    upload("2.0.0")
    broken = {"on": True}

    def install(model, version, data, variants):
        if broken["on"] and version == "2.0.0":
            raise Nack("disk", "no space left")
    edges = [fleet.edge("e0", capabilities=NUMPY), fleet.edge("e1", capabilities=NUMPY, install=install)]
    for edge in edges:
        await edge.connect()
    manager = fleet.app[DEPLOYMENTS]
    assert (await manager.wait(await manager.start("deploy", "vib", "1.0.0", ["e0", "e1"], selection="true"),
                               10))["state"] == "done"
    did = await manager.start("deploy", "vib", "2.0.0", ["e0", "e1"], selection="true")
    assert (await manager.wait(did, 10))["state"] == "done"
    failed = sorted(d for d, (s, _) in db_targets(fleet, did).items() if s == "failed")
    assert failed == ["e1"]
    broken["on"] = False
    resp = await fleet.client.post(f"/v1/deployments/{did}/retry", headers=tokens.header("deploy"))
    assert resp.status == 201, await resp.text()
    retry = (await resp.json())["deployment_id"]
    assert sorted(db_targets(fleet, retry)) == failed
    assert (await manager.wait(retry, 10))["state"] == "done" and edges[1].models == {"vib": "2.0.0"}
    resp = await fleet.client.post(f"/v1/deployments/{did}/retry", headers=tokens.header("deploy"))
    assert resp.status == 201   # the original's failed device is retried again (it is done now: already there)
    # roll back the original: both devices run 2.0.0 now, both go back to 1.0.0
    resp = await fleet.client.post(f"/v1/deployments/{did}/rollback", headers=tokens.header("deploy"))
    assert resp.status == 201, await resp.text()
    back = (await resp.json())["deployment_id"]
    assert (await manager.wait(back, 10))["state"] == "done"
    conn, _ = _database(fleet)
    versions = dict(conn.execute("SELECT device_id, version FROM device_models WHERE model = 'vib'"))
    conn.close()
    assert versions == {"e0": "1.0.0", "e1": "1.0.0"}


async def test_a_deployments_devices_are_listed_by_state_and_paged(fleet, upload, tokens):
    upload("1.0.0")
    for i in range(5):
        fleet.provision(f"e{i}", {}, NUMPY)     # offline: they stay pending
    manager = fleet.app[DEPLOYMENTS]
    did = await manager.start("deploy", "vib", "1.0.0", [f"e{i}" for i in range(5)], selection="true")
    url = f"/v1/deployments/{did}?device_state=pending,failed&device_limit=2&device_offset=1"
    body = await (await fleet.client.get(url, headers=tokens.header("read"))).json()
    assert body["devices_total"] == 5 and [d["id"] for d in body["devices"]] == ["e1", "e2"]
    body = await (await fleet.client.get(f"/v1/deployments/{did}?device_state=done",
                                         headers=tokens.header("read"))).json()
    assert body["devices_total"] == 0 and body["counts"]["pending"] == 5
    resp = await fleet.client.get(f"/v1/deployments/{did}?device_state=bogus", headers=tokens.header("read"))
    assert resp.status == 400

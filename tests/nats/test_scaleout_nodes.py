"""Two federation nodes on the real scale-out configuration (PostgreSQL, a secured nats-server, edges
through the nodes' auth callout) when one of them is SIGKILLed: the other finishes its rollout,
keeps the NATS edges online and reachable, and shows their health.

The oracles are the edges themselves (a fleet query through the surviving node for the bundle's
function and the constant signals), their logs (each installs the bundle once) and the records
their autostart counter publishes (a second install would start counting from 1 again)."""
from __future__ import annotations

import re
import time

import psycopg
import pytest

import streamql
from federation.testing import make_bundle
from scaleout_fleet import DEVICES, Device, ScaleOutFleet
from streamql.models import keygen

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

EDGES = DEVICES[:5]
FLOW = "ticks"
COUNTER = f"//publish: {FLOW}\nselect stream of x from Integer x where x in diota(0.1, 1, 1000000);\n"
VERSION_FUNCTION = "create function ticks_version() -> Charstring as '{version}';\n"
SETTLE_S = 5     # how long each device must look healthy: every wave lasts at least this long
NODE_LOCKS = "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND classid = 21330 AND objsubid = 2"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    directory = tmp_path_factory.mktemp("scaleout-nodes")
    key, pub = keygen(directory / "release")
    running = ScaleOutFleet(directory, EDGES, nodes=("A", "B"), first="A",
                            federation_args=["--trusted-key", str(pub), "--deploy-settle", str(SETTLE_S)],
                            edge_args=["--trusted-key", str(pub), "--log-level", "info"])
    running.key = key
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _node_running(fleet, name: str) -> None:
    """Node `name` runs (started again if a test killed it) and knows every edge online."""
    if fleet.node_proc(name).poll() is not None:
        fleet.start_node(name)
    fleet.wait(lambda: fleet.online(name) >= {d.id for d in EDGES}, 90, f"node {name} to know the edges")


def _numbers(fleet, node: str) -> dict[str, list[int]]:
    return fleet.flow_numbers(node, FLOW, EDGES)


def _node_keys(fleet) -> set[int]:
    """The keys of the live nodes: each holds its node lock while it runs."""
    with psycopg.connect(fleet.infra.registry_url, autocommit=True) as conn:
        return {row[0] for row in conn.execute(NODE_LOCKS).fetchall()}


def test_a_rollout_left_by_a_killed_node_is_finished_by_the_other(fleet):
    _node_running(fleet, "A")
    _node_running(fleet, "B")
    client_a = streamql.connect(fleet.node_url("A"), fleet.admin)
    client_b = streamql.connect(fleet.node_url("B"), fleet.admin)
    client_a.upload_model(make_bundle(fleet.dir / "bundles", "ticks", "1.0.0", private_key=fleet.key,
                                      files={"autostart/ticks.sql": COUNTER,
                                             "functions.sql": VERSION_FUNCTION.format(version="1.0.0")}))
    result = client_a.query("deploy model 'ticks' version '1.0.0' to Edge e over 3 waves;")
    list(result)
    did = result.deployment_id

    # node A drives it; once its first wave is done (and while the last has not finished), A dies
    def first_wave_done() -> bool:
        return client_b.deployment(did)["waves"]["list"][0]["state"] == "done"
    fleet.wait(first_wave_done, 180, "the first wave to finish")
    fleet.kill_node("A")
    at_kill = client_b.deployment(did)
    assert at_kill["state"] == "running", at_kill
    last_wave = at_kill["waves"]["count"]
    assert last_wave == 3 and at_kill["waves"]["list"][-1]["state"] != "done", at_kill["waves"]
    not_yet = [d["id"] for d in at_kill["devices"] if d["wave"] == last_wave and d["state"] != "done"]
    assert not_yet, at_kill["devices"]

    # node B takes it over and finishes it
    finished = client_b.wait_deployment(did, 240)
    assert finished["state"] == "done", finished
    assert finished["counts"]["done"] == len(EDGES), finished["counts"]

    # the edges say so themselves, through B — once B has heard each edge announce the bundle's
    # function (an edge's announcement reaches the other node over NATS a moment after its ack;
    # until then B skips it, as it would any device that has not got the function)
    answers = []

    def every_edge_answers() -> bool:
        answers[:] = [fleet.post("select id(e), ticks_version()@e from Edge e;", node="B")]
        return answers[0][0] == 200 and len(answers[0][1]) == len(EDGES)
    fleet.wait(every_edge_answers, 60, "every edge to answer with the new version through B")
    status, rows, last = answers[0]
    assert status == 200, last
    assert dict(map(tuple, rows)) == {d.id: "1.0.0" for d in EDGES}, last

    # each edge installed it once: one engine switch in its log, and its counter never restarted
    for device in EDGES:
        switches = re.findall(rf"deploy {re.escape(did_of(finished))}: active", fleet.log(device.id))
        assert len(switches) == 1, f"{device.id} switched engines {len(switches)} times for the deployment"
    fleet.wait(lambda: all(len(v) >= 20 for v in _numbers(fleet, "B").values()), 60, "the counters' records on B")
    for edge, numbers in _numbers(fleet, "B").items():
        assert numbers == list(range(1, len(numbers) + 1)), f"{edge}: the counter restarted (installed twice?)"


def did_of(progress: dict) -> str:
    """The deployment id the edges see (as federation/deploy_frames.py makes it)."""
    return f"d{progress['id']}-{int(progress['created'] * 1000):x}"


def _registry_online(fleet) -> dict[str, tuple[bool, int | None]]:
    with psycopg.connect(fleet.infra.registry_url, autocommit=True) as conn:
        return {row[0]: (row[1], row[2]) for row in conn.execute("SELECT id, online, online_node FROM devices")}


def _everyone_answers(fleet, node: str) -> tuple[bool, object]:
    status, rows, last = fleet.post("select id(e), signal_value('battery')@e, "
                                    "signal_value('outside_temperature')@e from Edge e;", node=node)
    want = {d.id: (d.battery, d.temperature) for d in EDGES}
    return status == 200 and {r[0]: (r[1], r[2]) for r in rows} == want, (status, rows, last)


def test_nats_edges_stay_online_on_the_other_node_when_one_is_killed(fleet):
    _node_running(fleet, "B")
    if fleet.node_proc("A").poll() is None:
        fleet.kill_node("A")
    before = _node_keys(fleet)
    fleet.start_node("A")      # A says welcome last: the registry names A as the node holding the edges
    _node_running(fleet, "A")
    key_a = (_node_keys(fleet) - before).pop()
    fleet.wait(lambda: any(node == key_a for _, node in _registry_online(fleet).values()), 30,
               "node A to be the holder of some edge in the registry")

    fleet.kill_node("A")
    fleet.wait(lambda: key_a not in _node_keys(fleet), 30, "PostgreSQL to let go of A's node lock")
    time.sleep(3 * 5.0)     # past the dead-node sweep (federation/registry_pg_sync.py SWEEP_EVERY_S) twice

    # the edges are still on NATS and B serves them: online in the registry, on B's pages, in its answers
    registry = _registry_online(fleet)
    assert all(registry[d.id][0] for d in EDGES), registry
    fleet.on("B")
    listed = {e["id"]: e for e in fleet.api("GET", "/v1/edges")["edges"]}
    assert all(listed[d.id]["online"] and listed[d.id]["status"] == "online" for d in EDGES), listed
    summary = fleet.api("GET", "/v1/edges/summary")
    assert summary["status"]["online"] == len(EDGES), summary
    answered, got = _everyone_answers(fleet, "B")
    assert answered, got


def _compact(fleet, node: str) -> dict[str, dict]:
    fleet.on(node)
    return {e["id"]: e for e in fleet.api("GET", "/v1/edges?fields=compact")["edges"]}


def test_health_seen_on_the_other_node_follows_the_heartbeats(fleet):
    """An edge on WebSockets to node A (the route stays on a NATS node): only A hears its health
    frames and writes its heartbeats; node B's fleet views follow them all the same."""
    _node_running(fleet, "A")
    _node_running(fleet, "B")
    low = Device("ws-0009", "EU", "dumper", -12.0, 15.0)    # battery under 20: "low battery" attention
    fleet.on("A")
    fleet.tokens[low.id] = fleet.api("POST", "/v1/edges", {"id": low.id, "metadata": low.metadata,
                                                           "capabilities": {"ram_kb": 65536}})["token"]
    fleet._env[low.id] = {"STREAMQL_EDGE_TOKEN": fleet.tokens[low.id]}
    fleet.spawn(low.id, "edge", "--id", low.id, "--federation", fleet.node_url("A"),
                "--store", str(fleet.dir / "edges" / low.id), "--heartbeat", "2", "--log-level", "warning",
                "--reconnect-initial", "0.2", "--reconnect-max", "1",
                "--signal", f"name=battery,shape=constant,offset={low.battery},rate_hz=2")
    try:
        fleet.wait(lambda: low.id in fleet.online("B"), 90, "B to see the WebSocket edge online")
        batteries = {d.id: d.battery for d in [*EDGES, low]}
        fleet.wait(lambda: {i: e["battery"] for i, e in _compact(fleet, "B").items()} == batteries, 60,
                   "B to show every edge's battery")
        first = _compact(fleet, "B")[low.id]
        fleet.wait(lambda: _compact(fleet, "B")[low.id]["uptime_s"] >= first["uptime_s"] + 4, 60,
                   "B to show later heartbeats of the WebSocket edge")
        later = _compact(fleet, "B")[low.id]
        assert later["last_seen"] > first["last_seen"] and later["online"], (first, later)
        assert _compact(fleet, "A")[low.id]["battery"] == low.battery
        summary = fleet.api("GET", "/v1/edges/summary")     # on B
        assert summary["status"]["online"] == len(EDGES) + 1, summary
        assert summary["attention"]["low battery"] == 1, summary
    finally:
        edge = fleet.procs.pop(low.id)
        edge.terminate()
        edge.wait(10)

"""Published records through JetStream, exactly once across a NATS restart, as the user runs it: a
bundle deployed over NATS (deploy frames down, acks back to the node that deployed) starts an
autostart counter on each edge; nats-server is killed and restarted on its store while the edges
publish; both federation nodes end up with every number 1..k of every edge once, in order."""
from __future__ import annotations

import asyncio
import time

import nats
import pytest

import streamql
from federation.testing import make_bundle
from nats_fleet import DEVICES, NatsFleet
from streamql.models import keygen

pytestmark = pytest.mark.timeout(300)

EDGES = DEVICES[:2]
FLOW = "counting"
COUNTER = f"//publish: {FLOW}\nselect stream of x from Integer x where x in diota(0.02, 1, 1000000);\n"


def _numbers(fleet, node: str) -> dict[str, list[int]]:
    return fleet.flow_numbers(node, FLOW, EDGES)


async def _object(url: str, bucket: str, name: str) -> bytes:
    nc = await nats.connect(url)
    try:
        return (await (await nc.jetstream().object_store(bucket)).get(name)).data
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    directory = tmp_path_factory.mktemp("nats-publish")
    key, pub = keygen(directory / "release")
    running = NatsFleet(directory, EDGES, nodes=("A", "B"), federation_args=["--trusted-key", str(pub),
                        "--deploy-settle", "1"], edge_args=["--trusted-key", str(pub)])
    running.key = key
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_published_records_arrive_exactly_once_across_a_nats_restart(fleet):
    client = streamql.connect(fleet.node_url("A"), fleet.admin)
    bundle = make_bundle(fleet.dir / "bundles", "counter", "1.0.0", private_key=fleet.key,
                         files={"autostart/counter.sql": COUNTER})
    client.upload_model(bundle)
    result = client.query("deploy model 'counter' version '1.0.0' to Edge e;")
    list(result)
    assert client.wait_deployment(result.deployment_id, 120)["state"] == "done"
    # the node stored the bundle once in the object store; the edges fetched it from there (the
    # deploy frame they were sent carried no bundle bytes: without the fetch their sha256 check nacks)
    assert asyncio.run(_object(fleet.server.url, "sql_bundles", "counter/1.0.0")) == bundle

    fleet.wait(lambda: all(len(v) >= 50 for v in _numbers(fleet, "A").values()), 60, "records before the restart")
    fleet.server.restart(kill=True)        # SIGKILL: whatever was in flight is in doubt
    before = {edge: len(v) for edge, v in _numbers(fleet, "A").items()}
    fleet.wait(lambda: all(len(v) >= before[e] + 100 for e, v in _numbers(fleet, "A").items()), 90,
               "records after the restart")
    time.sleep(1.0)
    for node in ("A", "B"):
        for edge, numbers in _numbers(fleet, node).items():
            assert numbers == list(range(1, len(numbers) + 1)), f"node {node}, edge {edge}: not 1..k exactly once"
            assert len(numbers) >= before[edge] + 100


def test_a_bundle_of_several_chunks_reaches_the_edges_through_the_object_store(fleet):
    """3 MB: four deploy chunks over WebSockets; here one frame, the bytes fetched from the store."""
    client = streamql.connect(fleet.node_url("A"), fleet.admin)
    bundle = make_bundle(fleet.dir / "bundles", "big", "1.0.0", private_key=fleet.key, padding=3 << 20,
                         files={"functions.sql": "create function big_version() -> Charstring as '1.0.0';\n"})
    assert len(bundle) > 3 << 20
    client.upload_model(bundle)
    result = client.query("deploy model 'big' version '1.0.0' to Edge e;")
    list(result)
    assert client.wait_deployment(result.deployment_id, 180)["state"] == "done"
    assert asyncio.run(_object(fleet.server.url, "sql_bundles", "big/1.0.0")) == bundle
    status, rows, last = fleet.post("select id(e), big_version()@e from Edge e;", node="B")
    assert status == 200 and dict(map(tuple, rows)) == {d.id: "1.0.0" for d in EDGES}, last

"""A three-server NATS cluster (JetStream replicas 3) under two federation nodes and real edges:
each server in turn is SIGKILLed and restarted while the edges publish; the edges and nodes move
to the other servers (nats-py is given all three), queries keep answering for every edge, and every
published number reaches both nodes exactly once."""
from __future__ import annotations

import time

import pytest

import streamql
from federation.testing import make_bundle
from nats_fleet import DEVICES, NatsFleet
from tests.nats_servers import NatsCluster
from streamql.models import keygen
from test_nats_publish import COUNTER, FLOW

pytestmark = pytest.mark.timeout(420)

EDGES = DEVICES[:3]


def _numbers(fleet, node: str) -> dict[str, list[int]]:
    return fleet.flow_numbers(node, FLOW, EDGES)


def _everyone_answers(fleet, node) -> bool:
    status, rows, last = fleet.post("select id(e), signal_value('battery')@e from Edge e;", node=node)
    return status == 200 and dict(map(tuple, rows)) == {d.id: d.battery for d in EDGES}


def test_a_killed_server_of_three_loses_nothing_and_duplicates_nothing(tmp_path):
    cluster = NatsCluster(tmp_path).start()
    key, pub = keygen(tmp_path / "release")
    fleet = NatsFleet(tmp_path, EDGES, nodes=("A", "B"), server=cluster,
                      federation_args=["--trusted-key", str(pub), "--deploy-settle", "1", "--nats-replicas", "3"],
                      edge_args=["--trusted-key", str(pub)])
    try:
        fleet.start()
        client = streamql.connect(fleet.node_url("A"), fleet.admin)
        client.upload_model(make_bundle(tmp_path / "bundles", "counter", "1.0.0", private_key=key,
                                        files={"autostart/counter.sql": COUNTER}))
        result = client.query("deploy model 'counter' version '1.0.0' to Edge e;")
        list(result)
        assert client.wait_deployment(result.deployment_id, 120)["state"] == "done"
        fleet.wait(lambda: all(len(v) >= 30 for v in _numbers(fleet, "A").values()), 60, "records flowing")

        for server in cluster.servers:
            server.stop(kill=True)
            print(f"{time.strftime('%X')} killed {server.name}", flush=True)
            before = {edge: len(v) for edge, v in _numbers(fleet, "B").items()}
            for node in ("A", "B"):
                fleet.wait(lambda: _everyone_answers(fleet, node), 120, f"node {node} to reach every edge "
                           f"without {server.name}")
            fleet.wait(lambda: all(len(v) > before[e] + 20 for e, v in _numbers(fleet, "B").items()), 120,
                       f"records to flow without {server.name}")
            print(f"{time.strftime('%X')} answers and records without {server.name}", flush=True)
            server.start()
            time.sleep(2.0)    # it catches up with the cluster before the next one goes

        time.sleep(1.0)
        for node in ("A", "B"):
            for edge, numbers in _numbers(fleet, node).items():
                assert numbers == list(range(1, len(numbers) + 1)), f"node {node}, edge {edge}: not 1..k once"
    finally:
        fleet.stop()
        cluster.stop()

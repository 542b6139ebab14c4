"""Two federation apps (two nodes) on one PostgreSQL registry, in one process: what one node
changes reaches the other's API within a second, a token revoked on one node closes the
WebSocket it holds on the other, and a deployment whose node stops is finished by the other."""
from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from federation.app import create_app
from federation.auth import Role, create_token, provision
from federation.config import FederationConfig
from federation.keys import BOOTSTRAP_TOKEN, DEPLOYMENTS, REGISTRY


async def _until(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not await predicate():
        assert time.monotonic() - start < timeout, what
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture
async def two_nodes(tmp_path, pg_server):
    url = pg_server.new_database()
    clients = []
    for name in ("a", "b"):
        config = FederationConfig(data_dir=tmp_path / name, announce=False, registry=url)
        client = TestClient(TestServer(create_app(config)))
        await client.start_server()
        clients.append(client)
    yield clients
    for client in clients:
        await client.close()


async def test_changes_and_revocations_reach_the_other_node_within_a_second(two_nodes):
    a, b = two_nodes
    admin = a.app.get(BOOTSTRAP_TOKEN) or b.app.get(BOOTSTRAP_TOKEN)   # the first node to start made it
    headers = {"Authorization": f"Bearer {admin}"}

    async def b_edges() -> dict:
        return {e["id"]: e for e in (await (await b.get("/v1/edges", headers=headers)).json())["edges"]}

    provision(a.app[REGISTRY], "e1", {"region": "US"})
    assert await _until(lambda: _has(b_edges, "e1"), 1.0, "B did not see the device A added") < 1.0
    a.app[REGISTRY].update_device("e1", metadata={"region": "EU"})
    await _until(lambda: _region(b_edges, "e1", "EU"), 1.0, "B did not see A's metadata change")
    a.app[REGISTRY].delete_device("e1")
    await _until(lambda: _gone(b_edges, "e1"), 1.0, "B did not see A's removal")

    record, token = create_token(a.app[REGISTRY], Role.READ)
    ws = await b.ws_connect("/v1/query/ws", headers={"Authorization": f"Bearer {token}"})
    a.app[REGISTRY].revoke_token(record.id)            # revoked through node A
    start = time.monotonic()
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)
    assert time.monotonic() - start < 1.0, "B held the revoked token's socket open"
    assert (await b.get("/v1/edges", headers={"Authorization": f"Bearer {token}"})).status == 401


async def _has(edges, device_id):
    return device_id in await edges()


async def _gone(edges, device_id):
    return device_id not in await edges()


async def _region(edges, device_id, region):
    found = (await edges()).get(device_id)
    return found is not None and found["metadata"].get("region") == region


async def test_a_rollout_left_by_a_stopped_node_is_taken_over(two_nodes):
    a, b = two_nodes
    provision(a.app[REGISTRY], "e1")
    a.app[REGISTRY].set_model_version("e1", "vib", "1.0.0")   # so the rollback has a target (offline: it waits)
    did = int(await a.app[DEPLOYMENTS].start("rollback", "vib", None, ["e1"], selection="", waves=1))
    assert list(a.app[DEPLOYMENTS].running()) == [did]
    await asyncio.sleep(0.5)
    assert list(b.app[DEPLOYMENTS].running()) == []   # only one controller
    await a.close()                                   # node A goes away (its locks with it)
    await _until(lambda: _driving(b, did), 10.0, "node B did not take the rollout over")
    assert b.app[REGISTRY].get_deployment(did).state == "running"
    targets = b.app[REGISTRY].deployment_targets(did)
    assert [(t.device_id, t.state) for t in targets] == [("e1", "pending")]   # waiting for e1 to connect


async def _driving(client, did):
    return did in list(client.app[DEPLOYMENTS].running())

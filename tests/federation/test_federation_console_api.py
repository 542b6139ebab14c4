"""What the operations console needs of the API besides fleet views and deployments: saved
queries kept in the registry, the caller's own role (`GET /v1/me`), tokens without the devices',
a provisioned device's edge config that the edge's own `load_config` reads, and a flow's newest
records."""
from __future__ import annotations


from edge_engine.config import load_config
from federation.keys import REGISTRY
from federation.testing import until


async def test_saved_queries_are_kept_by_name(client, tokens):
    read = tokens.header("read")
    text = "select id(e) from Edge e\nwhere region(e) = 'US';"
    resp = await client.put("/v1/saved-queries/us devices", json={"text": text, "description": "all of the US"},
                            headers=read)
    assert resp.status == 201, await resp.text()
    resp = await client.put("/v1/saved-queries/us devices", json={"text": text + " "}, headers=read)
    assert resp.status == 200 and (await resp.json())["text"] == text + " "
    found = await (await client.get("/v1/saved-queries/us devices", headers=read)).json()
    assert found["name"] == "us devices" and found["text"] == text + " " and found["created_by"]
    listed = await (await client.get("/v1/saved-queries", headers=read)).json()
    assert [q["name"] for q in listed["queries"]] == ["us devices"]
    assert client.app[REGISTRY].saved_query("us devices")["text"] == text + " "   # in the registry
    for bad in ({"text": ""}, {"text": "x", "colour": 1}, {"text": "x", "description": 3}):
        assert (await client.put("/v1/saved-queries/x", json=bad, headers=read)).status == 400
    assert (await client.put("/v1/saved-queries/-x", json={"text": "x"}, headers=read)).status == 400
    assert (await client.delete("/v1/saved-queries/us devices", headers=read)).status == 200
    assert (await client.get("/v1/saved-queries/us devices", headers=read)).status == 404
    assert (await client.delete("/v1/saved-queries/us devices", headers=read)).status == 404


async def test_me_says_what_the_token_may_do(client, tokens):
    for role, may in (("read", (True, False, False)), ("deploy", (True, True, False)), ("admin", (True, True, True))):
        body = await (await client.get("/v1/me", headers=tokens.header(role))).json()
        assert body["role"] == role and (body["may"]["read"], body["may"]["deploy"], body["may"]["admin"]) == may
    assert (await client.get("/v1/me", headers=tokens.header("device"))).status == 403


async def test_tokens_without_the_devices(client, tokens):
    admin = tokens.header("admin")
    everyone = (await (await client.get("/v1/tokens", headers=admin)).json())["tokens"]
    people = (await (await client.get("/v1/tokens?devices=false", headers=admin)).json())["tokens"]
    assert any(t["device_id"] for t in everyone)
    assert people == [t for t in everyone if t["device_id"] is None] and people


async def test_a_provisioned_device_gets_an_edge_config_its_edge_reads(client, tokens, tmp_path):
    resp = await client.post("/v1/edges", headers=tokens.header("admin"), json={
        "id": "wl-9", "metadata": {"region": "EU", "kind": "wheel loader", "model_year": 2020, "leased": True},
        "capabilities": {"ram_kb": 524288, "cpu": "cortex-a53", "signals": ["vibration"]}})
    assert resp.status == 201
    body = await resp.json()
    path = tmp_path / "edge.toml"
    path.write_text(body["config"])
    config = load_config(path, environ={})
    assert config.id == "wl-9" and config.token == body["token"]
    assert config.federation == str(client.make_url("/")).rstrip("/")
    assert config.metadata == {"region": "EU", "kind": "wheel loader", "model_year": 2020, "leased": True}
    assert config.capabilities.ram_kb == 524288 and config.capabilities.cpu == "cortex-a53"


async def test_the_newest_records_of_a_flow(fleet, tokens):
    edge = fleet.edge("e1")
    await edge.connect()
    for i in range(1, 8):
        edge.publish("alerts", [float(i)])
    edge.publish("other", [99.0])
    await until(lambda: edge.acked == 8)
    page = await (await fleet.client.get("/v1/flows/alerts?newest=3", headers=tokens.header("read"))).json()
    assert [r["rows"] for r in page["records"]] == [[5.0], [6.0], [7.0]]
    page = await (await fleet.client.get("/v1/flows/alerts?newest=30", headers=tokens.header("read"))).json()
    assert len(page["records"]) == 7

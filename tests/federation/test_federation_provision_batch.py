"""POST /v1/edges {"devices": [...]}: many devices in one transaction, all or none (a simulated
fleet of 10,000 provisions in ten requests)."""
from federation.auth import authenticate
from federation.keys import REGISTRY


def _device(i: int) -> dict:
    return {"id": f"wl-{i:05d}", "metadata": {"region": ("US", "EU")[i % 2]}, "capabilities": {"ram_kb": 256}}


async def test_a_batch_is_provisioned_in_order_with_a_token_each(client, tokens):
    admin = tokens.header("admin")
    resp = await client.post("/v1/edges", headers=admin, json={"devices": [_device(i) for i in range(400)]})
    body = await resp.json()
    assert resp.status == 201 and [e["id"] for e in body["edges"]] == [f"wl-{i:05d}" for i in range(400)]
    registry = client.app[REGISTRY]
    assert len({e["token"] for e in body["edges"]}) == 400
    for made in body["edges"][::97]:
        assert authenticate(registry, made["token"]).device_id == made["id"]
    assert registry.get_device("wl-00003").metadata == {"region": "EU"}


async def test_a_bad_or_conflicting_batch_registers_nothing(client, tokens):
    admin = tokens.header("admin")
    registry = client.app[REGISTRY]
    assert (await client.post("/v1/edges", headers=admin, json={"devices": [_device(1)]})).status == 201
    before = registry.device_count()
    resp = await client.post("/v1/edges", headers=admin, json={"devices": [_device(2), _device(1)]})
    assert resp.status == 409 and registry.device_count() == before and registry.get_device("wl-00002") is None
    for bad, why in (({"devices": []}, "1 to 1000"), ({"devices": [{"id": f"x{i}"} for i in range(1001)]}, "1 to 1000"),
                     ({"devices": [{"metadata": {}}]}, "devices[0] needs an id"),
                     ({"devices": [{**_device(3), "token": "x"}]}, "unknown fields"),
                     ({"devices": [_device(4), _device(4)]}, "appears twice"),
                     ({"devices": [_device(5)], "extra": 1}, "unknown fields")):
        resp = await client.post("/v1/edges", headers=admin, json=bad)
        assert resp.status == 400 and why in (await resp.text()), (bad if len(str(bad)) < 200 else why)
    assert registry.device_count() == before
    resp = await client.post("/v1/edges", headers=tokens.header("read"), json={"devices": [_device(6)]})
    assert resp.status == 403

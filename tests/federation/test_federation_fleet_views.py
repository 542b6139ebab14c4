"""Fleet views (`GET /v1/edges` filtered, sorted, paged, projected; `GET /v1/edges/summary`) checked
against an oracle computed from the rows of `registry.sqlite3` itself, never from our own output:
every filter, the counts by status / metadata / model version / attention, the `since` cursor
(only changed rows of the page come back, including a model version change and a heartbeat), the
`where` predicate's errors at their place in the `where` text, and an offline device's link."""
from __future__ import annotations

import json
import random
import sqlite3
import time

import pytest

from federation.auth import Role, create_token, provision
from federation.keys import BOOTSTRAP_TOKEN, HEARTBEATS, REGISTRY
from federation.registry import Heartbeat

REGIONS = ("US", "EU", "AU", "CA")
KINDS = ("dumper", "wheel loader", "excavator")
N = 90


@pytest.fixture
async def fleet_app(client):
    """N registered devices (no live edges): metadata, some online, health, restarts, models."""
    registry = client.app[REGISTRY]
    rng = random.Random(15)
    now = time.time()
    for i in range(N):
        provision(registry, f"d-{i:03d}", {"region": REGIONS[i % 4], "kind": KINDS[i % 3], "site": f"s{i % 7}"},
                  {"ram_kb": 262144 * (1 + i % 3), "signals": ["vibration"] + (["battery"] if i % 2 else [])})
    beats = []
    for i in range(N):
        if i % 10 == 9:
            continue  # never seen
        health = {"cpu_percent": round(rng.uniform(1, 95), 2), "memory_kb": rng.randrange(20000, 400000),
                  "battery": {"percent": round(rng.uniform(3, 99), 1)} if i % 2 else None,
                  "uptime_s": rng.uniform(10, 1e5),
                  "link": {"connected": True, "reconnects": 1 if i % 11 == 0 else 0},
                  "buffer": {"records": 0, "bytes": 0, "dropped": 4 if i % 13 == 0 else 0},
                  "errors": [{"kind": "RuntimeError", "message": "boom", "time": now}] if i % 17 == 0 else []}
        seen = now - (7200 if i % 5 == 0 else 60)   # a fifth were last seen two hours ago
        beats.append(Heartbeat(f"d-{i:03d}", seen, health, i % 6))
    for beat in beats:
        client.app[HEARTBEATS].add(beat)
    client.app[HEARTBEATS].flush()
    for i in range(N):
        if i % 3 == 0 and i % 5 and i % 10 != 9:
            registry.set_online(f"d-{i:03d}", True, at=now - 30)
    for i in range(0, N, 4):
        registry.set_model_version(f"d-{i:03d}", "vib", "1.0.0")
    for i in range(0, N, 8):
        registry.set_model_version(f"d-{i:03d}", "vib", "1.1.0")
    read = create_token(registry, Role.READ)[1]
    return client, {"Authorization": f"Bearer {read}"}, client.app[BOOTSTRAP_TOKEN]


# --- the oracle: straight from the database file ---------------------------------------------------
def oracle_rows(client) -> list[dict]:
    conn = sqlite3.connect(client.app[REGISTRY].path)
    try:
        models: dict[str, dict] = {}
        for device_id, model, version in conn.execute("SELECT device_id, model, version FROM device_models"):
            models.setdefault(device_id, {})[model] = version
        rows = []
        for device_id, metadata, capabilities, last_seen, online, health, restarts in conn.execute(
                "SELECT id, metadata, capabilities, last_seen, online, health, restarts FROM devices"):
            rows.append({"id": device_id, "metadata": json.loads(metadata), "capabilities": json.loads(capabilities),
                         "last_seen": last_seen, "online": bool(online), "health": json.loads(health),
                         "restarts": restarts, "models": models.get(device_id, {})})
        return rows
    finally:
        conn.close()


def o_status(row: dict, missing_after_s: float = 3600) -> str:
    if row["online"]:
        return "online"
    return "missing" if row["last_seen"] is None or time.time() - row["last_seen"] > missing_after_s else "offline"


def o_battery(row: dict):
    b = row["health"].get("battery")
    return b["percent"] if isinstance(b, dict) else b


def o_attention(row: dict) -> list[str]:
    h = row["health"]
    out = []
    if o_battery(row) is not None and o_battery(row) < 20:
        out.append("low battery")
    if h.get("errors"):
        out.append("errors")
    if row["restarts"] >= 3:
        out.append("restarts")
    if (h.get("buffer") or {}).get("dropped", 0) > 0:
        out.append("buffer drops")
    if (h.get("link") or {}).get("reconnects", 0) > 0:
        out.append("dropped link")
    return out


async def listed(client, headers, query: str = "", **params) -> dict:
    resp = await client.get("/v1/edges" + query, params={"limit": "10000", **params}, headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def ids_of(client, headers, **params) -> list[str]:
    return [e["id"] for e in (await listed(client, headers, **params))["edges"]]


# --- the tests -----------------------------------------------------------------------------------------
async def test_each_filter_selects_what_the_database_says(fleet_app):
    client, headers, _ = fleet_app
    rows = oracle_rows(client)
    ids = lambda test: sorted(r["id"] for r in rows if test(r))  # noqa: E731
    assert await ids_of(client, headers) == ids(lambda r: True)
    for status in ("online", "offline", "missing"):
        assert await ids_of(client, headers, status=status) == ids(lambda r, s=status: o_status(r) == s), status
    assert await ids_of(client, headers, status="missing", missing_after="180") == \
        ids(lambda r: o_status(r, 180 * 60) == "missing")
    assert await ids_of(client, headers, where="region(e) in ('US', 'EU') and online(e)") == \
        ids(lambda r: r["metadata"]["region"] in ("US", "EU") and r["online"])
    assert await ids_of(client, headers, where="kind(e) = 'dumper'", q="s3") == \
        ids(lambda r: r["metadata"]["kind"] == "dumper" and "s3" in json.dumps(r["metadata"]) + r["id"])
    assert await ids_of(client, headers, q="battery d-0") == \
        ids(lambda r: "battery" in r["capabilities"]["signals"] and r["id"].startswith("d-0"))
    assert await ids_of(client, headers, model="vib") == ids(lambda r: "vib" in r["models"])
    assert await ids_of(client, headers, model="vib", version="1.0.0") == \
        ids(lambda r: r["models"].get("vib") == "1.0.0")
    assert await ids_of(client, headers, battery_below="30") == \
        ids(lambda r: o_battery(r) is not None and o_battery(r) < 30)
    assert await ids_of(client, headers, cpu_above="50") == \
        ids(lambda r: r["health"].get("cpu_percent") is not None and r["health"]["cpu_percent"] > 50)
    assert await ids_of(client, headers, memory_above="200000") == \
        ids(lambda r: r["health"].get("memory_kb") is not None and r["health"]["memory_kb"] > 200000)
    for reason in ("low battery", "errors", "restarts", "buffer drops", "dropped link"):
        expected = ids(lambda r, x=reason: x in o_attention(r))
        assert expected, f"the fixture must have devices with {reason}"
        assert await ids_of(client, headers, attention=reason) == expected, reason
    assert await ids_of(client, headers, attention="any") == ids(lambda r: bool(o_attention(r)))
    # whatever the filter, the answer carries the whole fleet's counts by status
    body = await listed(client, headers, status="online", limit="1")
    assert body["fleet"] == {"total": len(rows), **{s: sum(o_status(r) == s for r in rows)
                                                    for s in ("online", "offline", "missing")}}
    # the index's own parameters still work, and combine with the rest
    assert await ids_of(client, headers, **{"meta.region": "AU", "status": "offline"}) == \
        ids(lambda r: r["metadata"]["region"] == "AU" and o_status(r) == "offline")


async def test_the_summary_counts_what_the_database_says(fleet_app):
    client, headers, _ = fleet_app
    rows = oracle_rows(client)
    resp = await client.get("/v1/edges/summary", headers=headers)
    summary = await resp.json()
    assert summary["total"] == len(rows) == N
    for status in ("online", "offline", "missing"):
        assert summary["status"][status] == sum(o_status(r) == status for r in rows)
    for key in ("region", "kind", "site"):
        values = {r["metadata"][key] for r in rows}
        assert summary["metadata"][key] == {v: sum(r["metadata"][key] == v for r in rows) for v in values}
    assert summary["models"] == {"vib": {v: sum(r["models"].get("vib") == v for r in rows) for v in ("1.0.0", "1.1.0")}}
    for reason, count in summary["attention"].items():
        assert count == sum(reason in o_attention(r) for r in rows), reason
    assert summary["needing_attention"] == sum(bool(o_attention(r)) for r in rows)
    # with filters, the counts of what they select
    resp = await client.get("/v1/edges/summary", params={"where": "region(e) = 'EU'"}, headers=headers)
    eu = await resp.json()
    assert eu["total"] == sum(r["metadata"]["region"] == "EU" for r in rows)
    assert eu["metadata"]["region"] == {"EU": eu["total"]}


async def test_sorting_paging_and_the_compact_projection(fleet_app):
    client, headers, _ = fleet_app
    rows = oracle_rows(client)
    with_battery = sorted((r for r in rows if o_battery(r) is not None), key=lambda r: (-o_battery(r), r["id"]))
    without = sorted(r["id"] for r in rows if o_battery(r) is None)
    everyone = [r["id"] for r in with_battery] + without
    assert await ids_of(client, headers, sort="-battery") == everyone   # devices without a value last
    pages = []
    for page in range(0, N, 25):
        body = await listed(client, headers, sort="-battery", limit="25", offset=str(page), fields="compact")
        assert body["total"] == N
        pages += body["edges"]
    assert [e["id"] for e in pages] == everyone
    by_id = {r["id"]: r for r in rows}
    for edge in pages:
        row = by_id[edge["id"]]
        assert edge["battery"] == o_battery(row) and edge["status"] == o_status(row)
        assert edge["attention"] == o_attention(row) and edge["models"] == row["models"]
        assert set(edge) == {"id", "status", "online", "last_seen", "metadata", "restarts", "cpu_percent", "memory_kb",
                             "battery", "uptime_s", "link", "models", "attention"}
    compact = len(json.dumps((await listed(client, headers, limit="50", fields="compact"))["edges"]))
    full = len(json.dumps((await listed(client, headers, limit="50"))["edges"]))
    assert compact < full * 0.7
    assert await ids_of(client, headers, sort="meta.region") == \
        [r["id"] for r in sorted(rows, key=lambda r: (r["metadata"]["region"], r["id"]))]


async def test_since_a_cursor_only_changed_devices_of_the_page_come_back(fleet_app):
    client, headers, _ = fleet_app
    registry = client.app[REGISTRY]
    first = await listed(client, headers, limit="50", fields="compact")
    cursor = first["cursor"]
    page_ids = [e["id"] for e in first["edges"]]
    again = await listed(client, headers, limit="50", fields="compact", since=str(cursor))
    assert again["edges"] == [] and again["ids"] == page_ids and again["cursor"] == cursor
    # a heartbeat, a model version change and a device going offline: exactly those rows
    client.app[HEARTBEATS].add(Heartbeat(page_ids[1], time.time(), {"cpu_percent": 99.0}, 0))
    client.app[HEARTBEATS].flush()
    registry.set_model_version(page_ids[2], "vib", "2.0.0")
    online = await ids_of(client, headers, status="online")
    registry.set_online(online[0], False)
    changed = await listed(client, headers, limit="50", fields="compact", since=str(cursor))
    expected = {page_ids[1], page_ids[2]} | ({online[0]} if online[0] in page_ids else set())
    assert {e["id"] for e in changed["edges"]} == expected
    assert changed["cursor"] > cursor
    by_id = {e["id"]: e for e in changed["edges"]}
    assert by_id[page_ids[1]]["cpu_percent"] == 99.0 and by_id[page_ids[2]]["models"] == {"vib": "2.0.0"}


async def test_where_errors_point_into_the_where_text(fleet_app):
    client, headers, _ = fleet_app
    resp = await client.get("/v1/edges", params={"where": "region(e) = 'US' and\nsignal_value('x')@e > 1"},
                            headers=headers)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["kind"] == "BadRequest" and "@" in error["message"]
    assert (error["line"], error["column"]) == (2, 18)
    resp = await client.get("/v1/edges", params={"where": "region(e) = 'US' and nosuch(e) = 1"}, headers=headers)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert (error["line"], error["column"]) == (1, 22), error
    resp = await client.get("/v1/edges", params={"where": "region(e) = = 'US'"}, headers=headers)
    error = (await resp.json())["error"]
    assert resp.status == 400 and error["kind"] == "ParseError" and (error["line"], error["column"]) == (1, 13), error
    for bad in ({"status": "gone"}, {"sort": "colour"}, {"attention": "sad"}, {"battery_below": "low"},
                {"fields": "all"}):
        resp = await client.get("/v1/edges", params=bad, headers=headers)
        assert resp.status == 400, bad


async def test_an_offline_device_never_shows_its_link_connected(fleet_app):
    client, headers, _ = fleet_app
    rows = oracle_rows(client)
    stale = next(r for r in rows if not r["online"] and (r["health"].get("link") or {}).get("connected"))
    full = {e["id"]: e for e in (await listed(client, headers))["edges"]}
    assert full[stale["id"]]["health"]["link"]["connected"] is False
    compact = {e["id"]: e for e in (await listed(client, headers, fields="compact"))["edges"]}
    assert compact[stale["id"]]["link"] is False
    resp = await client.get(f"/v1/edges/{stale['id']}", headers=headers)
    assert (await resp.json())["health"]["link"]["connected"] is False
    live = next(r for r in rows if r["online"])
    assert compact[live["id"]]["link"] is True


async def test_devices_provisioned_and_removed_show_in_the_views(fleet_app):
    client, headers, admin = fleet_app
    resp = await client.post("/v1/edges", json={"id": "new-1", "metadata": {"region": "ZA"}},
                             headers={"Authorization": f"Bearer {admin}"})
    assert resp.status == 201
    assert await ids_of(client, headers, where="region(e) = 'ZA'") == ["new-1"]
    summary = await (await client.get("/v1/edges/summary", headers=headers)).json()
    assert summary["total"] == N + 1 and summary["status"]["missing"] == sum(
        o_status(r) == "missing" for r in oracle_rows(client))
    resp = await client.delete("/v1/edges/new-1", headers={"Authorization": f"Bearer {admin}"})
    assert resp.status == 200
    assert await ids_of(client, headers, where="region(e) = 'ZA'") == []

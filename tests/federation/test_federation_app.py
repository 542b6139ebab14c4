"""The HTTP service: roles per route, JSON errors, size limits, edges and tokens, metrics, OpenAPI."""
from __future__ import annotations

import asyncio
import json
import logging
import re

import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from federation import openapi
from federation.app import create_app
from federation.auth import Role, authenticate
from federation.http import access_of, public, track_websocket
from federation.keys import BOOTSTRAP_TOKEN, INDEX, METRICS, REGISTRY
from federation.registry import NewTarget
from streamql.selection import Eq, meta
from streamql.errors import QueryParseError, Span

# every route of ARCHITECTURE.md's table, with the role it needs
CONTRACT = {
    ("post", "/v1/query"): "read", ("get", "/v1/query/ws"): "read", ("get", "/v1/edges"): "read",
    ("post", "/v1/edges"): "admin", ("get", "/v1/edges/connect"): "device", ("post", "/v1/models"): "deploy",
    ("get", "/v1/models"): "read", ("get", "/v1/deployments"): "read", ("get", "/v1/deployments/{id}"): "read",
    ("get", "/metrics"): "public", ("get", "/"): "public",
}
ROLE_ORDER = ["read", "deploy", "admin"]


def app_routes(app: web.Application) -> dict[tuple[str, str], str]:
    """(method, documented path) → role, for every route the app serves."""
    out = {}
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        if isinstance(route.resource, web.StaticResource):
            out[(route.method.lower(), "/static/{path}")] = "public"
            continue
        access = access_of(route.handler)
        out[(route.method.lower(), route.resource.canonical)] = access if access == "public" else access.label
    return out


def concrete(path: str) -> str:
    return path.replace("{id}", "12345").replace("{path}", "index.html").replace("{flow}", "alerts") \
        .replace("{name}", "cold")


def error_of(body: dict) -> dict:
    assert set(body) == {"error"} and set(body["error"]) == {"kind", "message", "line", "column"}, body
    return body["error"]


async def test_openapi_documents_every_route_with_its_role(client, tokens):
    resp = await client.get("/v1/openapi.json", headers=tokens.header("read"))
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1") and json.loads(json.dumps(doc)) == doc
    documented = {(m, p): op["x-streamql-role"] for p, ops in doc["paths"].items() for m, op in ops.items()}
    assert app_routes(client.app) == documented  # nothing served undocumented, nothing documented unserved
    for route, role in CONTRACT.items():
        assert documented[route] == role, route
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', json.dumps(doc)))
    assert refs <= set(doc["components"]["schemas"])


async def test_roles_are_enforced_on_every_route(client, tokens):
    for (method, path), role in sorted(openapi_roles().items()):
        url = concrete(path)
        kwargs = {"json": {}} if method in ("post", "put") else {}
        resp = await client.request(method, url, **kwargs)
        if role == "public":
            assert resp.status == 200, (method, path)
            continue
        assert resp.status == 401, (method, path)
        assert error_of(await resp.json())["kind"] == "Unauthorized"
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        allowed = {"device"} if role == "device" else set(ROLE_ORDER[ROLE_ORDER.index(role):])
        for who in ("read", "deploy", "admin", "device"):
            resp = await client.request(method, url, headers=tokens.header(who), **kwargs)
            if who in allowed:
                assert resp.status not in (401, 403), (method, path, who, resp.status)
            else:
                assert resp.status == 403, (method, path, who, resp.status)
                assert error_of(await resp.json())["kind"] == "Forbidden"


def openapi_roles() -> dict:
    return {(m, p): op["x-streamql-role"] for p, ops in openapi.OPERATIONS.items() for m, op in ops.items()}


async def test_bad_and_revoked_tokens(client, tokens):
    for header in ("Bearer", "Bearer nope", "Basic abc", f"Bearer {tokens.read}x", f"Token {tokens.read}"):
        resp = await client.get("/v1/edges", headers={"Authorization": header})
        assert resp.status == 401, header
    resp = await client.post("/v1/tokens", json={"role": "read", "label": "tmp"}, headers=tokens.header("admin"))
    made = await resp.json()
    assert resp.status == 201 and made["role"] == "read" and made["token"].startswith("sqf_")
    assert (await client.get("/v1/edges", headers={"Authorization": f"Bearer {made['token']}"})).status == 200
    listed = await (await client.get("/v1/tokens", headers=tokens.header("admin"))).json()
    assert made["token"] not in json.dumps(listed) and made["id"] in [t["id"] for t in listed["tokens"]]
    assert (await client.delete(f"/v1/tokens/{made['id']}", headers=tokens.header("admin"))).status == 200
    resp = await client.get("/v1/edges", headers={"Authorization": f"Bearer {made['token']}"})
    assert resp.status == 401 and "revoked" in error_of(await resp.json())["message"]
    assert (await client.delete(f"/v1/tokens/{made['id']}", headers=tokens.header("admin"))).status == 404
    assert (await client.delete("/v1/tokens/x", headers=tokens.header("admin"))).status == 400


async def test_device_tokens_only_open_their_edge_connection(client, tokens):
    for method, path in [("get", "/v1/edges"), ("post", "/v1/edges"), ("post", "/v1/tokens"), ("get", "/v1/models")]:
        assert (await client.request(method, path, headers=tokens.header("device"), json={})).status == 403
    # the connect route is not taken for a device called "connect"; without an upgrade it is a 400
    resp = await client.get("/v1/edges/connect", headers=tokens.header("device"))
    assert resp.status == 400 and "WebSocket" in error_of(await resp.json())["message"]
    ws_headers = {"Upgrade": "websocket", "Connection": "Upgrade"}
    resp = await client.get(f"/v1/edges/connect?access_token={tokens.device}", headers=ws_headers)
    assert resp.status == 400  # authenticated (browsers' WebSockets may carry the token in the URL)
    assert (await client.get(f"/v1/edges/connect?access_token={tokens.device}")).status == 401
    # a new token for a device, made by an admin
    resp = await client.post("/v1/tokens", json={"device": "dev-1"}, headers=tokens.header("admin"))
    made = await resp.json()
    assert resp.status == 201 and made["device_id"] == "dev-1" and made["role"] == "device"
    assert authenticate(client.app[REGISTRY], made["token"]).may_act_as("dev-1")
    resp = await client.post("/v1/tokens", json={"device": "nobody"}, headers=tokens.header("admin"))
    assert resp.status == 404
    resp = await client.post("/v1/tokens", json={"role": "device"}, headers=tokens.header("admin"))
    assert resp.status == 400


async def test_edges_provision_list_filter_show_delete(client, tokens):
    admin = tokens.header("admin")
    fleet = [("wl-1", "US", "wheel loader", 1024), ("d-7", "EU", "dumper", 256), ("d-9", "AU", "dumper", 512),
             ("t-2", "US", "truck", 128)]
    for device_id, region, kind, ram in fleet:
        resp = await client.post("/v1/edges", headers=admin, json={
            "id": device_id, "metadata": {"region": region, "kind": kind}, "capabilities": {"ram_kb": ram}})
        body = await resp.json()
        assert resp.status == 201 and body["id"] == device_id and body["token"].startswith("sqf_")
        assert resp.headers["Location"] == f"/v1/edges/{device_id}"
        assert authenticate(client.app[REGISTRY], body["token"]).device_id == device_id
    resp = await client.post("/v1/edges", headers=admin, json={"id": "wl-1"})
    assert resp.status == 409 and error_of(await resp.json())["kind"] == "Conflict"
    client.app[REGISTRY].set_model_version("wl-1", "vib-anomaly", "1.2.0")
    client.app[REGISTRY].set_online("d-9", True)

    async def ids(query: str) -> list[str]:
        resp = await client.get(f"/v1/edges?{query}", headers=tokens.header("read"))
        assert resp.status == 200, await resp.text()
        return [e["id"] for e in (await resp.json())["edges"]]

    assert await ids("") == ["d-7", "d-9", "dev-1", "t-2", "wl-1"]
    assert await ids("meta.region=US&meta.region=AU&meta.kind=dumper") == ["d-9", "dev-1"]
    assert await ids("meta.region=US") == ["dev-1", "t-2", "wl-1"]
    assert await ids("capability.ram_kb=512") == ["d-9", "dev-1"]  # numbers match their text
    assert await ids("online=true") == ["d-9"]
    assert await ids("id=wl-1&id=t-2") == ["t-2", "wl-1"]
    assert await ids("limit=2&offset=1") == ["d-9", "dev-1"]
    page = await (await client.get("/v1/edges?limit=1", headers=tokens.header("read"))).json()
    assert page["total"] == 5 and len(page["edges"]) == 1
    for bad in ("online=maybe", "colour=red", "limit=-1", "limit=x", "limit=100000"):
        resp = await client.get(f"/v1/edges?{bad}", headers=tokens.header("read"))
        assert resp.status == 400 and error_of(await resp.json())["kind"] == "BadRequest", bad

    edge = await (await client.get("/v1/edges/wl-1", headers=tokens.header("read"))).json()
    assert edge["metadata"] == {"region": "US", "kind": "wheel loader"} and edge["online"] is False
    assert edge["models"]["vib-anomaly"]["version"] == "1.2.0" and "health" in edge and "last_seen" in edge
    assert (await client.delete("/v1/edges/wl-1", headers=admin)).status == 200
    resp = await client.get("/v1/edges/wl-1", headers=tokens.header("read"))
    assert resp.status == 404 and error_of(await resp.json())["kind"] == "NotFound"
    assert (await client.delete("/v1/edges/wl-1", headers=admin)).status == 404
    assert client.app[INDEX].select(Eq(meta("kind"), "wheel loader")) == []


async def test_bad_input_gives_json_errors_with_positions(client, tokens):
    admin = tokens.header("admin")
    resp = await client.post("/v1/edges", headers=admin, data=b'{"id": "x",\n  "metadata": {oops}}')
    err = error_of(await resp.json())
    assert resp.status == 400 and err["kind"] == "BadRequest" and (err["line"], err["column"]) == (2, 16)
    for body, words in [({"metadata": {}}, "needs an id"), ({"id": "bad id"}, "device id"),
                        ({"id": "a", "metadata": []}, "metadata"), ({"id": "a", "colour": 1}, "unknown fields"),
                        ({"id": "a", "metadata": {"has space": 1}}, "key")]:
        resp = await client.post("/v1/edges", headers=admin, json=body)
        assert resp.status == 400 and words in error_of(await resp.json())["message"], body
    resp = await client.post("/v1/edges", headers=admin, data=b"[1, 2]")
    assert resp.status == 400
    resp = await client.post("/v1/edges", headers=admin)
    assert resp.status == 400
    resp = await client.post("/v1/tokens", headers=admin, json={"role": "root"})
    assert resp.status == 400 and "unknown role" in error_of(await resp.json())["message"]
    resp = await client.put("/v1/edges", headers=admin, json={})
    assert resp.status == 405 and "GET" in resp.headers["Allow"] and error_of(await resp.json())["kind"] == "MethodNotAllowed"
    resp = await client.get("/v1/nowhere", headers=admin)
    assert resp.status == 404 and error_of(await resp.json())["kind"] == "NotFound"
    resp = await client.get("/v1/deployments/abc", headers=admin)
    assert resp.status == 400


async def test_request_too_large_is_413_json(client, tokens):
    admin = tokens.header("admin")
    big = {"id": "big", "metadata": {"blob": "x" * 70_000}}  # the fixture's limit is 64 KiB
    resp = await client.post("/v1/edges", headers=admin, json=big)
    assert resp.status == 413 and error_of(await resp.json())["kind"] == "PayloadTooLarge"

    async def chunks():  # no Content-Length: aiohttp's client_max_size stops it while reading
        for _ in range(40):
            yield b"x" * 4096

    resp = await client.post("/v1/edges", headers=admin, data=chunks())
    assert resp.status == 413 and error_of(await resp.json())["kind"] == "PayloadTooLarge"
    # a bundle upload may be larger than a JSON body (these bytes are read, then refused as no bundle)
    resp = await client.post("/v1/models", headers=tokens.header("deploy"), data=b"b" * 100_000)
    assert resp.status == 400 and error_of(await resp.json())["kind"] == "ModelError"


async def test_domain_errors_and_bugs(aiohttp_client, config, caplog):
    @public
    async def parse_error(request):
        raise QueryParseError("expected ';'", Span(10, 11, 2, 5, 2, 6))

    @public
    async def bug(request):
        raise RuntimeError("a bug")

    app = create_app(config)
    app.router.add_get("/test/parse", parse_error)
    app.router.add_get("/test/bug", bug)
    client = await aiohttp_client(app)
    resp = await client.get("/test/parse")
    assert resp.status == 400
    assert await resp.json() == {"error": {"kind": "ParseError", "message": "expected ';'", "line": 2, "column": 5}}
    with caplog.at_level(logging.ERROR, logger="streamql.federation"):
        resp = await client.get("/test/bug")
    assert resp.status == 500 and error_of(await resp.json())["kind"] == "InternalError"
    assert "a bug" not in await resp.text() and "a bug" in caplog.text


def parse_prometheus(text: str) -> dict[str, list[tuple[dict, float]]]:
    """A strict reader of the text exposition format: every sample belongs to a declared TYPE."""
    types, samples = {}, {}
    sample = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_]\w*="(?:[^"\\]|\\.)*",?)*)\})? (\S+)')
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "untyped", "summary", "histogram") and name not in types
            types[name] = kind
            continue
        match = sample.fullmatch(line)
        assert match, line
        name = match.group(1)
        assert name in types, f"{name} has no TYPE"
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        samples.setdefault(name, []).append((labels, float(match.group(4))))
    return samples


async def test_metrics_in_prometheus_text_format(client, tokens):
    registry = client.app[REGISTRY]
    registry.set_online("dev-1", True)
    registry.create_deployment("deploy", "vib", "1", "", [NewTarget("dev-1", "done")])
    client.app[METRICS].queries_running.inc()
    client.app[METRICS].counter("streamql_test_total", 'A "quoted"\nhelp', ("who",)).inc(2, who='a"b\\c')
    await client.get("/v1/edges")  # a 401 to count
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = parse_prometheus(await resp.text())
    assert samples["streamql_edges_registered"] == [({}, 1.0)]
    assert samples["streamql_edges_online"] == [({}, 1.0)]
    assert samples["streamql_queries_running"] == [({}, 1.0)]
    assert ({"state": "pending"}, 1.0) in samples["streamql_deployments"]
    assert ({"state": "done"}, 1.0) in samples["streamql_deployment_targets"]
    assert ({"kind": "Unauthorized"}, 1.0) in samples["streamql_errors_total"]
    assert ({"method": "GET", "route": "/v1/edges", "status": "401"}, 1.0) in samples["streamql_http_requests_total"]
    assert samples["streamql_test_total"] == [({"who": 'a\\"b\\\\c'}, 2.0)]


async def test_dashboard_is_public(client):
    resp = await client.get("/")
    assert resp.status == 200 and "StreamQL" in await resp.text()
    assert (await client.get("/static/index.html")).status == 200
    assert (await client.get("/static/nothing.js")).status == 404
    assert (await client.get("/healthz")).status == 200


async def test_deployments_and_models_read_from_the_registry(client, tokens):
    registry = client.app[REGISTRY]
    registry.add_bundle("vib", "1.0.0", b"bundle", {"requirements": {"ram_kb": 256}})
    dep = registry.create_deployment("deploy", "vib", "1.0.0", "region(e) = 'US'",
                                     [NewTarget("dev-1", "skipped", "ram_kb 128 < 256")])
    read = tokens.header("read")
    models = await (await client.get("/v1/models", headers=read)).json()
    assert [(m["name"], m["version"]) for m in models["models"]] == [("vib", "1.0.0")]
    listing = await (await client.get("/v1/deployments", headers=read)).json()
    assert listing["deployments"][0]["id"] == str(dep.id) and listing["deployments"][0]["model"] == "vib"
    assert listing["deployments"][0]["counts"] == {"pending": 0, "sending": 0, "installed": 0, "done": 0, "skipped": 1,
                                                   "failed": 0, "rolled_back": 0}
    progress = await (await client.get(f"/v1/deployments/{dep.id}", headers=read)).json()
    assert progress["devices"] == [{"id": "dev-1", "state": "skipped", "reason": "ram_kb 128 < 256",
                                    "variant": None, "wave": 0, "updated": progress["devices"][0]["updated"]}]
    assert progress["model"] == "vib" and progress["counts"]["skipped"] == 1 and progress["state"] == "pending"
    assert (await client.get("/v1/deployments/999", headers=read)).status == 404
    assert (await client.get("/v1/deployments?state=weird", headers=read)).status == 400


async def test_restart_keeps_devices_and_does_not_remake_the_admin_token(config):
    first = create_app(config)
    async with TestClient(TestServer(first)) as client:
        admin = {"Authorization": f"Bearer {client.app[BOOTSTRAP_TOKEN]}"}
        resp = await client.post("/v1/edges", headers=admin, json={"id": "e1", "metadata": {"region": "EU"}})
        device_token = (await resp.json())["token"]
        client.app[REGISTRY].set_online("e1", True)
    second = create_app(config)
    async with TestClient(TestServer(second)) as client:
        assert BOOTSTRAP_TOKEN not in client.app
        edge = await (await client.get("/v1/edges/e1", headers=admin)).json()
        assert edge["metadata"] == {"region": "EU"} and edge["online"] is False  # no edge connected yet
        assert client.app[INDEX].select(Eq(meta("region"), "EU")) == ["e1"]
        assert authenticate(client.app[REGISTRY], device_token).device_id == "e1"
    assert (config.data_dir / "admin.token").stat().st_mode & 0o777 == 0o600


async def test_shutdown_closes_websockets_going_away(config):
    @public
    async def echo(request):
        ws = track_websocket(request, web.WebSocketResponse())
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    app = create_app(config)
    app.router.add_get("/test/ws", echo)
    server = TestServer(app)
    client = TestClient(server)
    await client.start_server()
    ws = await client.ws_connect("/test/ws")
    received = asyncio.ensure_future(ws.receive())
    await asyncio.sleep(0.05)
    await server.close()
    msg = await asyncio.wait_for(received, 5)
    assert msg.type == WSMsgType.CLOSE and msg.data == WSCloseCode.GOING_AWAY
    await client.close()


def test_role_marks_on_handlers_match_the_roles_enum():
    assert Role.parse("Deploy") is Role.DEPLOY and Role.DEPLOY.label == "deploy"
    with pytest.raises(Exception):
        Role.parse("root")


async def test_heartbeats_are_buffered_and_flushed_at_shutdown(config):
    from federation.keys import HEARTBEATS
    from federation.registry import Heartbeat

    app = create_app(config)
    async with TestClient(TestServer(app)) as client:
        registry = client.app[REGISTRY]
        from federation.auth import provision_many
        provision_many(registry, [(f"e{i}", {}, {}) for i in range(1000)])
        buffer = client.app[HEARTBEATS]
        for at in (1.0, 2.0):  # the latest per device wins
            for i in range(1000):
                buffer.add(Heartbeat(f"e{i}", at, {"cpu": at}, 0))
        assert len(buffer) == 1000 and registry.get_device("e5").last_seen is None
        assert buffer.flush() == 1000 and registry.get_device("e5").health == {"cpu": 2.0}
        buffer.add(Heartbeat("e5", 3.0))
    from federation.registry_interface import open_registry
    with open_registry(config.registry_location, follow=False) as registry:
        assert registry.get_device("e5").last_seen == 3.0


async def test_a_handler_without_a_role_mark_needs_admin(aiohttp_client, config):
    async def unmarked(request):
        return web.json_response({"ok": True})

    app = create_app(config)
    app.router.add_get("/test/unmarked", unmarked)
    client = await aiohttp_client(app)
    registry = client.app[REGISTRY]
    from federation.auth import create_token
    deploy = create_token(registry, Role.DEPLOY)[1]
    assert (await client.get("/test/unmarked")).status == 401
    assert (await client.get("/test/unmarked", headers={"Authorization": f"Bearer {deploy}"})).status == 403
    admin = {"Authorization": f"Bearer {client.app[BOOTSTRAP_TOKEN]}"}
    assert (await client.get("/test/unmarked", headers=admin)).status == 200


def test_openapi_declares_every_path_parameter():
    doc = openapi.document()
    for path, operations in doc["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        for method, op in operations.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (method, path)
            assert op["responses"] and op["summary"], (method, path)


async def test_tokens_in_urls_never_reach_the_access_log(aiohttp_server, aiohttp_client, config, caplog):
    from federation.http import RedactingAccessLogger

    server = await aiohttp_server(create_app(config), access_log_class=RedactingAccessLogger)
    client = await aiohttp_client(server)
    secret = "sqf_do-not-log-me"
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        await client.get(f"/?token={secret}", headers={"Referer": f"http://127.0.0.1/?token={secret}&x=1"})
        await client.get(f"/v1/query/ws?access_token={secret}&format=json")
        await client.get("/healthz?verbose=1")
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(lines) == 3
    assert not any(secret in line for line in lines)
    assert "GET /?token=… HTTP/1.1" in lines[0] and "/?token=…&x=1" in lines[0]
    assert "access_token=…&format=json" in lines[1] and "/healthz?verbose=1" in lines[2]

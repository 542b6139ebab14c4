"""Fair sharing and hostile requests on the HTTP API: per-token rate and concurrency limits (429
with Retry-After), JSON nested too deep (400, not 500), statements too long (413 before parsing),
slow bodies (408) and slow heads (closed), upload slots and zip bombs, and revocation that closes
a token's WebSockets and stops its statements at once."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer

from federation.app import create_app
from federation.auth import Role, create_token, provision
from federation.config import FederationConfig, RoleLimits
from federation.keys import QUERY_SERVICE, REGISTRY, SESSIONS
from federation.serve import runner_options
from federation.testing import FakeEdge, make_bundle
from hostile_zips import signed_bomb
from streamql.models import keygen
from tests.federation.fake_service import ROWS, STREAM, FakeResult, FakeService

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    base = tmp_path_factory.mktemp("keys")
    return keygen(base / "release"), keygen(base / "mallory")


@pytest.fixture
def service():
    return FakeService()


async def start(aiohttp_client, tmp_path, service, **settings):
    config = FederationConfig(data_dir=tmp_path / "fed", announce=False, **settings)
    app = create_app(config)
    app[QUERY_SERVICE] = service
    server = TestServer(app)
    await server.start_server(**runner_options(config))  # the HTTP timeouts, as `streamql federation` has them
    client = await aiohttp_client(server)
    registry = client.app[REGISTRY]
    tokens = {role: create_token(registry, role)[1] for role in ("read", "admin", "deploy")}
    return client, tokens


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def answers(client, token: str) -> bool:
    """The service still answers a statement (the liveness check after each hostile act)."""
    resp = await client.post("/v1/query", json={"query": ROWS}, headers=bearer(token))
    return resp.status == 200 and (await resp.text()).count("\n") == 4


async def test_a_token_over_its_rate_gets_429_with_retry_after_and_others_do_not(aiohttp_client, tmp_path, service):
    client, tokens = await start(aiohttp_client, tmp_path, service,
                                 rate_limits={"read": RoleLimits(rate=0.5, burst=3, concurrent=4)})
    statuses = [(await client.get("/v1/edges", headers=bearer(tokens["read"]))).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    resp = await client.get("/v1/edges", headers=bearer(tokens["read"]))
    body = await resp.json()
    assert resp.status == 429 and body["error"]["kind"] == "TooManyRequests" and "slow down" in body["error"]["message"]
    assert 1 <= int(resp.headers["Retry-After"]) <= 3
    other = create_token(client.app[REGISTRY], Role.READ)[1]
    assert (await client.get("/v1/edges", headers=bearer(other))).status == 200  # per token, not per role
    assert await answers(client, tokens["admin"])  # admins have their own, larger limits
    metrics = await (await client.get("/metrics")).text()
    assert 'streamql_http_limited_total{limit="rate"} 1' in metrics


async def test_a_token_holding_its_concurrent_streams_gets_429_until_one_ends(aiohttp_client, tmp_path, service):
    client, tokens = await start(aiohttp_client, tmp_path, service,
                                 rate_limits={"read": RoleLimits(rate=100, burst=100, concurrent=2)})
    streams = [await client.post("/v1/query", json={"query": STREAM}, headers=bearer(tokens["read"]))
               for _ in range(2)]
    assert [s.status for s in streams] == [200, 200]  # open, never read
    third = await client.post("/v1/query", json={"query": ROWS}, headers=bearer(tokens["read"]))
    assert third.status == 429 and "in flight" in (await third.json())["error"]["message"]
    ws_refused = await client.get("/v1/query/ws", headers=bearer(tokens["read"]))
    assert ws_refused.status == 429
    assert await answers(client, tokens["admin"])
    streams[0].close()
    deadline = time.monotonic() + 10
    while not await answers(client, tokens["read"]):
        assert time.monotonic() < deadline, "a slot was not given back when a stream ended"
        await asyncio.sleep(0.1)


async def test_json_nested_deeper_than_the_bound_is_a_400_not_a_500(aiohttp_client, tmp_path, service):
    client, tokens = await start(aiohttp_client, tmp_path, service, max_request_bytes=1 << 20)
    admin = bearer(tokens["admin"])
    for depth in (100_000, 65):
        body = '{"id": "x", "metadata": ' + "[" * depth + "]" * depth + "}"
        resp = await client.post("/v1/edges", data=body, headers={**admin, "Content-Type": "application/json"})
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["kind"] == "BadRequest" and "nested too deeply" in error["message"]
    ok = '{"id": "x", "metadata": {"k": ' + "[" * 60 + "]" * 60 + "}}"
    assert (await client.post("/v1/edges", data=ok, headers={**admin, "Content-Type": "application/json"})).status == 201
    ws = await client.ws_connect("/v1/query/ws", headers=admin)
    await ws.send_str('{"type": "query", "id": "q", "query": ' + "[" * 50_000 + "]" * 50_000 + "}")
    answer = await ws.receive_json(timeout=10)
    assert answer["type"] == "error" and "nested too deeply" in answer["error"]["message"]
    await ws.close()
    assert await answers(client, tokens["read"])


async def test_a_statement_over_the_size_limit_is_refused_before_it_is_parsed(aiohttp_client, tmp_path, service):
    client, tokens = await start(aiohttp_client, tmp_path, service, max_statement_bytes=1024)
    read = bearer(tokens["read"])
    long = "select " + "+".join(["1"] * 1000) + ";"
    for request in ({"json": {"query": long}}, {"data": long.encode(), "headers": {"Content-Type": "text/plain"}}):
        headers = {**read, **request.pop("headers", {})}
        resp = await client.post("/v1/query", headers=headers, **request)
        error = (await resp.json())["error"]
        assert resp.status == 413 and error["kind"] == "PayloadTooLarge" and "max_statement_bytes" in error["message"]
    ws = await client.ws_connect("/v1/query/ws", headers=read)
    await ws.send_json({"type": "query", "id": "big", "query": long})
    answer = await ws.receive_json(timeout=10)
    assert answer == {"type": "error", "id": "big", "error": {**answer["error"], "kind": "PayloadTooLarge"}}
    await ws.close()
    assert all(text != long for text, *_ in service.calls)  # never reached the service (nor the parser)
    assert await answers(client, tokens["read"])


async def raw_connection(client):
    return await asyncio.open_connection(client.server.host, client.server.port)


async def test_slow_bodies_get_408_and_slow_heads_are_closed(aiohttp_client, tmp_path, service):
    client, tokens = await start(aiohttp_client, tmp_path, service, idle_timeout_s=1.0, body_timeout_s=1.0)
    reader, writer = await raw_connection(client)
    writer.write(f"POST /v1/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tokens['read']}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"query".encode())
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.read(), 10)  # read() returns at EOF: the server closed
    assert b" 408 " in answer.split(b"\r\n")[0] and b"RequestTimeout" in answer
    assert time.monotonic() - started < 5
    writer.close()
    slow = [await raw_connection(client) for _ in range(20)]
    for _, w in slow:
        w.write(b"GET /v1/edges HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
    started = time.monotonic()
    for r, w in slow:
        assert await asyncio.wait_for(r.read(), 10) == b""
        w.close()
    assert time.monotonic() - started < 6
    assert await answers(client, tokens["read"])


async def test_revoking_a_token_closes_its_sockets_and_stops_its_statements(aiohttp_client, tmp_path, service):
    client, tokens = await start(aiohttp_client, tmp_path, service)
    registry = client.app[REGISTRY]
    record, token = create_token(registry, Role.READ)
    ws = await client.ws_connect("/v1/query/ws", headers=bearer(token))
    await ws.send_json({"type": "query", "id": "s", "query": STREAM})
    assert (await ws.receive_json(timeout=10))["type"] == "columns"
    stream = await client.post("/v1/query", json={"query": STREAM}, headers=bearer(token))
    assert stream.status == 200
    device = provision(registry, "dev-1")
    edge = FakeEdge(str(client.make_url("/")), device.token, "dev-1")
    await edge.connect()
    try:
        resp = await client.delete(f"/v1/tokens/{record.id}", headers=bearer(tokens["admin"]))
        assert resp.status == 200 and (await resp.json())["closed"] >= 2
        while True:  # rows already on their way, then the close
            msg = await ws.receive(timeout=5)
            if msg.type is not WSMsgType.TEXT:
                break
        assert msg.type is WSMsgType.CLOSE and msg.data == 4003 and "revoked" in msg.extra
        with pytest.raises(Exception):
            async with asyncio.timeout(5):
                while await stream.content.readany():
                    pass
        deadline = time.monotonic() + 5
        while not all(r.closed for r in service.results):
            assert time.monotonic() < deadline, "the revoked token's statements still run"
            await asyncio.sleep(0.05)
        assert (await client.get("/v1/edges", headers=bearer(token))).status == 401
        # a device token revoked by another process (the CLI): noticed by the sweep within seconds
        device_token_id = [t.id for t in registry.list_tokens(device_id="dev-1")][0]
        registry.revoke_token(device_token_id)
        await asyncio.wait_for(edge.closed.wait(), 10)
        assert edge.close_code == 4003
        assert client.app[SESSIONS].token_ids() == []
        assert await answers(client, tokens["read"])
    finally:
        await edge.shutdown()


async def test_uploads_are_bounded_at_once_and_bombs_are_refused_quickly(aiohttp_client, tmp_path, service, keys):
    (private, public), (mallory, _) = keys
    client, tokens = await start(aiohttp_client, tmp_path, service, trusted_keys=[public], max_uploads=1)
    deploy = bearer(tokens["deploy"])
    release = asyncio.Event()

    async def slow_body():
        yield b"PK"
        await release.wait()
        yield b"\x03\x04 the rest"

    first = asyncio.ensure_future(client.post("/v1/models", data=slow_body(), headers=deploy))
    await asyncio.sleep(0.3)
    busy = await client.post("/v1/models", data=make_bundle(tmp_path, "vib", "1.0.0", private_key=private),
                             headers=deploy)
    assert busy.status == 429 and int(busy.headers["Retry-After"]) >= 1
    release.set()
    assert (await first).status == 400
    for signer, declared in ((None, None), (mallory, None), (None, 1000)):
        started = time.monotonic()  # a GiB of zeros, declared as such or as a kilobyte
        resp = await client.post("/v1/models", data=signed_bomb(signer, inflated_mib=1000, declared=declared),
                                 headers=deploy)
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["kind"] == "ModelError" and time.monotonic() - started < 5, error
    good = await client.post("/v1/models", data=make_bundle(tmp_path, "vib", "1.0.0", private_key=private),
                             headers=deploy)
    assert good.status == 201
    assert await answers(client, tokens["read"])
    assert json.loads((await (await client.get("/v1/models", headers=deploy)).text()))["models"][0]["name"] == "vib"


async def test_response_headers_stay_bounded_for_wide_or_long_named_results(aiohttp_client, tmp_path, service):
    from federation.results import MAX_HEADER_BYTES, bounded_names

    text, cut = bounded_names(["x" * 9000, "y"])
    assert cut and len(text) <= MAX_HEADER_BYTES and json.loads(text)[1] == "y" and json.loads(text)[0].endswith("…")
    text, cut = bounded_names([f"column_{i}" for i in range(3000)])
    assert cut and len(text) <= MAX_HEADER_BYTES and json.loads(text)[0] == "column_0"
    assert bounded_names(["a", "b"]) == ('["a", "b"]', False)

    class NamedAfterTheText(FakeService):
        async def run(self, text, principal, *, limits=None):
            return FakeResult([f"c{i}_{text}" for i in range(3)], ["Charstring"] * 3, "bag", [["a", "b", "c"]])

    client, tokens = await start(aiohttp_client, tmp_path, NamedAfterTheText())
    long = "select 1 as " + "z" * 20_000 + ";"
    resp = await client.post("/v1/query", json={"query": long}, headers=bearer(tokens["read"]))
    assert resp.status == 200 and resp.headers["X-StreamQL-Columns-Truncated"] == "true"
    assert len(resp.headers["X-StreamQL-Columns"]) <= MAX_HEADER_BYTES
    assert json.loads((await resp.text()).splitlines()[0]) == ["a", "b", "c"]

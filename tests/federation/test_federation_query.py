"""POST /v1/query and GET /v1/query/ws against a fake query service: NDJSON and msgpack streaming,
errors with positions before and while streaming, size limits, roles, cancel on disconnect, metrics."""
from __future__ import annotations

import asyncio
import json

import msgpack
import numpy as np
import pytest
from aiohttp import WSMsgType

from federation.app import create_app
from federation.keys import METRICS, QUERY_SERVICE
from streamql import codec
from tests.federation.fake_service import (DEPLOY, FAILING, MANY, ROWS, SLOW_FIRST, SLOW_PLAN, STREAM, UNKNOWN,
                                           WIDE, FakeService)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def service():
    return FakeService()


@pytest.fixture
async def client(aiohttp_client, config, service):
    app = create_app(config)
    app[QUERY_SERVICE] = service
    return await aiohttp_client(app)


def ndjson(text: str) -> list:
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def msgpack_values(data: bytes) -> list:
    """Concatenated msgpack objects, each decoded exactly by streamql.codec."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    out, start = [], 0
    for _ in unpacker:
        end = unpacker.tell()
        out.append(codec.unpack(data[start:end]))
        start = end
    return out


async def test_rows_stream_as_ndjson_then_the_status(client, tokens, service):
    resp = await client.post("/v1/query", json={"query": WIDE}, headers=tokens.header("read"))
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/x-ndjson")
    assert json.loads(resp.headers["X-StreamQL-Columns"]) == ["id(e)", "w", "t"]
    assert json.loads(resp.headers["X-StreamQL-Types"]) == ["Charstring", "Vector of Real", "Time"]
    assert resp.headers["X-StreamQL-Kind"] == "bag"
    lines = ndjson(await resp.text())
    assert lines[0] == ["wl-1", [1.0, None, 2.5], "1970-01-01T00:00:00.5Z"]
    assert lines[1] == ["wl-2", [0.0, 1.0, 2.0], None]
    assert lines[2] == {"rows": 2, "complete": False, "status": {
        "complete": False, "selected": 3, "counts": {"answered": 2, "offline": 1}, "incomplete": ["wl-3"],
        "registry_only": False, "devices": {
            "wl-1": {"outcome": "answered", "rows": 1, "reason": None},
            "wl-2": {"outcome": "answered", "rows": 1, "reason": None},
            "wl-3": {"outcome": "offline", "rows": 0, "reason": "not connected"}}}}
    assert service.results[-1].closed
    # the statement as plain text, with an explicit Accept
    resp = await client.post("/v1/query", data=ROWS, headers={**tokens.header("read"), "Content-Type": "text/plain",
                                                              "Accept": "application/x-ndjson"})
    assert ndjson(await resp.text())[:3] == [[1], [2], [3]]
    assert service.calls[-1][0] == ROWS and service.calls[-1][1].role.label == "read"


async def test_msgpack_keeps_every_value_exact(client, tokens):
    resp = await client.post("/v1/query", json={"query": WIDE},
                             headers={**tokens.header("read"), "Accept": "application/x-msgpack"})
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/x-msgpack"
    values = msgpack_values(await resp.read())
    first, second, last = values
    assert first[0] == "wl-1" and first[1].dtype == np.float64 and np.isnan(first[1][1])
    assert second[1].dtype == np.float32 and first[2].seconds == 0.5
    assert last["rows"] == 2 and last["status"]["devices"]["wl-3"]["outcome"] == "offline"
    resp = await client.post("/v1/query", json={"query": ROWS}, headers={**tokens.header("read"), "Accept": "image/png"})
    assert resp.status == 406 and (await resp.json())["error"]["kind"] == "NotAcceptable"


async def test_errors_before_streaming_are_4xx_with_positions(client, tokens, service):
    read = tokens.header("read")
    resp = await client.post("/v1/query", json={"query": "select 1 +;"}, headers=read)
    error = (await resp.json())["error"]
    assert resp.status == 400 and error["kind"] == "ParseError" and (error["line"], error["column"]) == (1, 11)
    resp = await client.post("/v1/query", json={"query": "select 1;\nselect 2;"}, headers=read)
    error = (await resp.json())["error"]
    assert resp.status == 400 and error["line"] == 2  # one statement per request
    resp = await client.post("/v1/query", json={"query": UNKNOWN}, headers=read)
    assert resp.status == 400 and (await resp.json())["error"] == {
        "kind": "NameError", "message": "unknown function nosuch", "line": 1, "column": 8}
    for body in ({}, {"query": ""}, {"query": 5}, {"query": ROWS, "extra": 1}, {"query": ROWS, "limits": {"rows": -1}},
                 {"query": ROWS, "limits": {"weird": 1}}):
        resp = await client.post("/v1/query", json=body, headers=read)
        assert resp.status == 400 and (await resp.json())["error"]["kind"] == "BadRequest", body
    resp = await client.post("/v1/query", json={"query": ROWS, "limits": {"rows": 10, "seconds": 2.5}}, headers=read)
    assert resp.status == 200 and service.calls[-1][2] == {"rows": 10, "seconds": 2.5}
    big = {"query": "select '" + "x" * 70_000 + "';"}  # the fixture's limit is 64 KiB
    resp = await client.post("/v1/query", json=big, headers=read)
    assert resp.status == 413 and (await resp.json())["error"]["kind"] == "PayloadTooLarge"


async def test_roles_for_queries_and_deployment_statements(client, tokens):
    assert (await client.post("/v1/query", json={"query": ROWS})).status == 401
    assert (await client.post("/v1/query", json={"query": ROWS}, headers=tokens.header("device"))).status == 403
    resp = await client.post("/v1/query", json={"query": DEPLOY}, headers=tokens.header("read"))
    error = (await resp.json())["error"]
    assert resp.status == 403 and error["kind"] == "Forbidden" and error["line"] == 1 and "deploy role" in error["message"]
    resp = await client.post("/v1/query", json={"query": DEPLOY}, headers=tokens.header("deploy"))
    assert resp.status == 200 and resp.headers["X-StreamQL-Deployment"] == "7"
    lines = ndjson(await resp.text())
    assert lines == [["7"], {"status": {}, "complete": True, "rows": 1, "message": "deploy started",
                             "deployment_id": "7"}]
    assert (await client.post("/v1/query", json={"query": f"explain {DEPLOY}"}, headers=tokens.header("read"))).status == 200


async def test_an_error_while_streaming_ends_the_body(client, tokens):
    resp = await client.post("/v1/query", json={"query": FAILING}, headers=tokens.header("read"))
    assert resp.status == 200
    lines = ndjson(await resp.text())
    assert lines[:2] == [[1.0], [2.0]]
    assert lines[2] == {"error": {"kind": "RuntimeError", "message": "division by zero", "line": 1, "column": 10},
                        "complete": False, "rows": 2, "status": {
                            "complete": False, "selected": 1, "counts": {"failed": 1}, "incomplete": ["e1"],
                            "registry_only": False,
                            "devices": {"e1": {"outcome": "failed", "rows": 2, "reason": "division by zero"}}}}
    metrics = client.app[METRICS]
    for _ in range(100):  # the handler counts the outcome right after the last line went out
        if metrics.queries.value(outcome="error") == 1:
            break
        await asyncio.sleep(0.01)
    samples = metrics.render()
    assert 'streamql_queries_total{outcome="error"} 1' in samples
    assert 'streamql_errors_total{kind="RuntimeError"} 1' in samples


async def test_rows_arrive_before_the_statement_ends(client, tokens, service):
    resp = await client.post("/v1/query", json={"query": SLOW_FIRST}, headers=tokens.header("read"))
    first = await asyncio.wait_for(resp.content.readline(), 2)  # the second row waits for the gate
    assert json.loads(first) == [1]
    service.gate.set()
    assert json.loads(await resp.content.readline()) == [2]


async def test_a_client_going_away_cancels_the_statement(client, tokens, service):
    resp = await client.post("/v1/query", json={"query": STREAM}, headers=tokens.header("read"))
    await resp.content.readline()
    metrics = client.app[METRICS]
    assert metrics.queries_running.value() == 1
    resp.close()  # the connection goes away
    result = service.results[-1]
    for _ in range(200):
        if result.closed:
            break
        await asyncio.sleep(0.02)
    assert result.closed
    for _ in range(100):
        if metrics.queries_running.value() == 0:
            break
        await asyncio.sleep(0.02)
    assert metrics.queries_running.value() == 0
    assert metrics.queries.value(outcome="cancelled") == 1


async def test_many_rows_flow_and_are_counted(client, tokens):
    resp = await client.post("/v1/query", json={"query": MANY}, headers=tokens.header("read"))
    lines = ndjson(await resp.text())
    assert len(lines) == 100_001 and lines[-1]["rows"] == 100_000 and lines[99_999] == [99_999]
    assert client.app[METRICS].query_rows.value() == 100_000


async def test_the_websocket_submits_streams_and_cancels(client, tokens, service):
    ws = await client.ws_connect("/v1/query/ws", headers=tokens.header("read"))
    await ws.send_json({"type": "query", "id": "a", "query": STREAM})
    await ws.send_json({"type": "query", "id": "b", "query": WIDE})
    await ws.send_json({"type": "query", "id": "c", "query": "select 1 +;"})
    await ws.send_json({"type": "query", "id": "d", "query": DEPLOY})  # read token: refused
    seen: dict[str, list] = {}
    a_rows = 0
    while not ({"b", "c", "d"} <= set(seen) and "end" in [m["type"] for m in seen["b"]] and a_rows >= 3):
        message = await ws.receive_json(timeout=5)
        seen.setdefault(message["id"], []).append(message)
        if message["id"] == "a" and message["type"] == "rows":
            a_rows += len(message["rows"])
    b = seen["b"]
    assert b[0] == {"type": "columns", "id": "b", "columns": ["id(e)", "w", "t"],
                    "types": ["Charstring", "Vector of Real", "Time"], "kind": "bag"}
    assert b[1]["rows"][0] == ["wl-1", [1.0, None, 2.5], "1970-01-01T00:00:00.5Z"]
    assert b[-1]["type"] == "end" and b[-1]["rows"] == 2
    assert b[-1]["status"]["devices"]["wl-3"]["outcome"] == "offline"
    assert seen["c"] == [{"type": "error", "id": "c", "error": {"kind": "ParseError", "message": seen["c"][0]["error"]["message"],
                                                                "line": 1, "column": 11}}]
    assert seen["d"][0]["error"]["kind"] == "Forbidden"
    await ws.send_json({"type": "cancel", "id": "a"})
    while True:
        message = await ws.receive_json(timeout=5)
        if message["type"] == "cancelled":
            assert message["id"] == "a" and message["rows"] >= 3
            break
    stream_result = next(r for r in service.results if r.kind == "stream")
    assert stream_result.closed
    await ws.send_str("not json")
    assert (await ws.receive_json(timeout=5))["error"]["kind"] == "BadRequest"
    await ws.send_json({"type": "query", "query": ROWS})  # no id
    assert (await ws.receive_json(timeout=5))["id"] is None
    await ws.close()


async def test_a_statement_cancelled_while_planning_is_answered_cancelled(client, tokens, service):
    ws = await client.ws_connect("/v1/query/ws", headers=tokens.header("read"))
    await ws.send_json({"type": "query", "id": "p", "query": SLOW_PLAN})
    for _ in range(200):
        if service.calls:
            break
        await asyncio.sleep(0.01)
    await ws.send_json({"type": "cancel", "id": "p"})
    assert await ws.receive_json(timeout=5) == {"type": "cancelled", "id": "p", "status": {}, "rows": 0}
    await ws.send_json({"type": "query", "id": "p", "query": ROWS})       # the id is free again
    assert (await ws.receive_json(timeout=5))["type"] == "columns"
    await ws.close()


async def test_the_websocket_speaks_msgpack_and_closing_cancels(client, tokens, service):
    ws = await client.ws_connect("/v1/query/ws?format=msgpack", headers=tokens.header("read"))
    await ws.send_bytes(codec.pack({"type": "query", "id": "w", "query": WIDE}))
    messages = []
    while not messages or messages[-1]["type"] != "end":
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.BINARY
        messages.append(codec.unpack(msg.data))
    assert messages[1]["rows"][0][1].dtype == np.float64
    await ws.send_bytes(codec.pack({"type": "query", "id": "s", "query": STREAM}))
    while (await ws.receive(timeout=5)).type is WSMsgType.BINARY and not service.results[-1].produced:
        pass
    await ws.close()
    result = service.results[-1]
    for _ in range(200):
        if result.closed:
            break
        await asyncio.sleep(0.02)
    assert result.closed


async def test_rows_merged_are_counted_and_their_rate_is_in_the_metrics(client, tokens, service):
    from tests.federation.test_federation_app import parse_prometheus

    resp = await client.post("/v1/query", json={"query": MANY}, headers=tokens.header("read"))
    assert len(ndjson(await resp.text())) == 100_001                  # the rows, then the status
    samples = parse_prometheus(await (await client.get("/metrics")).text())
    assert samples["streamql_query_rows_total"] == [({}, 100_000.0)]
    (_, rate), = samples["streamql_query_rows_per_second"]
    assert 100_000 / 10 <= rate <= 100_000                             # over the last 10 s
    assert ({"outcome": "ok"}, 1.0) in samples["streamql_queries_total"]



async def test_a_client_leaving_before_the_response_head_is_not_an_error(client, tokens, service, caplog,
                                                                        monkeypatch):
    """Writing the head to a connection the client closed (aiohttp's ClientConnectionResetError) cancels
    the statement, and the log says nothing above INFO: no traceback."""
    import logging

    from aiohttp import ClientConnectionResetError, web

    prepare = web.StreamResponse.prepare
    calls = []

    async def closing(self, request):
        calls.append(type(self).__name__)
        if len(calls) == 1:
            raise ClientConnectionResetError("Cannot write to closing transport")
        return await prepare(self, request)
    monkeypatch.setattr(web.StreamResponse, "prepare", closing)
    with caplog.at_level(logging.WARNING):
        try:
            resp = await client.post("/v1/query", json={"query": ROWS}, headers=tokens.header("read"))
            await resp.read()
        except Exception:  # noqa: BLE001 - the response may come or not: the client is "gone"
            pass
    metrics = client.app[METRICS]
    assert metrics.queries.value(outcome="cancelled") == 1 and service.results[-1].closed
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text

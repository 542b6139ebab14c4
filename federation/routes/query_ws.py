"""GET /v1/query/ws — a WebSocket to submit statements, stream their rows and cancel them.

Messages are JSON text (or, with `?format=msgpack`, binary msgpack of the same maps, values kept
exact by streamql.codec). The client sends

    {"type": "query", "id": "q1", "query": "select …;", "limits": {"rows": 100},
     "device_timeout": 10, "status": "full"}                   (all but type, id, query optional)
    {"type": "cancel", "id": "q1"}

and the federation answers, per statement id,

    {"type": "columns", "id": "q1", "columns": […], "types": […], "kind": "stream"}
    {"type": "rows", "id": "q1", "rows": [[…], …]}             (batched: ≤ 500 rows, ≤ 20 ms late)
    {"type": "status", "id": "q1", "change": {device, outcome, rows, reason}}   (standing streams)
    {"type": "end", "id": "q1", "status": {…}, "rows": n, "message"?: …, "deployment_id"?: …}
  or {"type": "error", "id": "q1", "error": {kind, message, line, column}, "status"?: {…}, "rows"?: n}
  or {"type": "cancelled", "id": "q1", "status": {…}, "rows": n}

A bad message is answered with `{"type": "error", "id": null | its id, "error": …}`; several
statements may run at once (up to `max_socket_queries`). Closing the socket cancels them all.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from federation.auth import Principal, Role
from federation.errors import BadRequest
from federation.http import loads_json, principal, requires, statement_too_large, track_websocket
from federation.keys import CONFIG, METRICS, SESSIONS
from federation.results import (
    QueryTimer,
    RowWriter,
    bound_send_buffer,
    check_statement_off_loop,
    close_result,
    error_info,
    final_record,
    is_heavy,
    pump_rows,
)
from federation.routes.query import parse_limits, parse_options, query_service, start_statement
from federation.sessions import ws_closer
from streamql import codec
from streamql.errors import QueryError

log = logging.getLogger("streamql.federation.query")
BATCH_ROWS = 500


def _same(row: list) -> list:
    return row


class QuerySocket:
    def __init__(self, ws: web.WebSocketResponse, service: Any, caller: Principal, metrics, binary: bool,
                 max_running: int):
        self.ws, self.service, self.caller, self.metrics = ws, service, caller, metrics
        self.binary, self.max_running = binary, max_running
        self.running: dict[str, asyncio.Task] = {}

    async def send(self, message: dict) -> None:
        if self.ws.closed:
            return
        # rows with large values are encoded in a worker thread, never on the event loop
        heavy = message.get("type") == "rows" and is_heavy(message["rows"])
        encode = self._pack if self.binary else self._json
        data = await asyncio.to_thread(encode, message) if heavy else encode(message)
        if self.ws.closed:
            return
        if self.binary:
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    @staticmethod
    def _pack(message: dict) -> bytes:
        return codec.pack(message)

    @staticmethod
    def _json(message: dict) -> str:
        return json.dumps(codec.to_plain(message), allow_nan=False, ensure_ascii=False, separators=(",", ":"))

    async def refuse(self, qid: Any, error: BaseException) -> None:
        await self.send({"type": "error", "id": qid if isinstance(qid, str) else None, "error": error_info(error)})

    async def handle(self, message: Any) -> None:
        if not isinstance(message, dict) or message.get("type") not in ("query", "cancel"):
            await self.refuse(None, BadRequest('a message is {"type": "query" | "cancel", "id": …, …}'))
            return
        qid = message.get("id")
        if not isinstance(qid, str) or not 0 < len(qid) <= 256:
            await self.refuse(None, BadRequest("every message needs an \"id\": a string naming its statement"))
            return
        if message["type"] == "cancel":
            task = self.running.get(qid)
            if task is not None:
                task.cancel()
            return
        if qid in self.running:
            await self.refuse(qid, BadRequest(f"statement {qid!r} is still running"))
            return
        if len(self.running) >= self.max_running:
            await self.refuse(qid, BadRequest(f"at most {self.max_running} statements run at once on one socket"))
            return
        text = message.get("query")
        try:
            if not isinstance(text, str) or not text.strip():
                raise BadRequest("a query message needs \"query\": the statement to run")
            limits = parse_limits(message.get("limits"))
            options = parse_options(message)
        except QueryError as exc:
            await self.refuse(qid, exc)
            return
        task = asyncio.ensure_future(self.run(qid, text, limits, options))
        self.running[qid] = task
        task.add_done_callback(lambda _t, q=qid: self.running.pop(q, None))

    async def run(self, qid: str, text: str, limits: dict | None, options: dict) -> None:
        detail = options.get("detail")
        with QueryTimer(self.metrics) as timer:
            try:
                await check_statement_off_loop(self.service, text, self.caller)
                result = await start_statement(self.service, text, self.caller, limits, options)
                first = getattr(result, "first", None)
                if first is not None:
                    try:
                        await first()
                    except BaseException:
                        await close_result(result)
                        raise
            except QueryError as exc:
                timer.outcome = "rejected"
                self.metrics.errors.inc(kind=exc.kind)
                await self.refuse(qid, exc)
                return
            except asyncio.CancelledError:
                # cancelled while planning (selecting devices, reaching them): still one answer
                timer.outcome = "cancelled"
                with contextlib.suppress(Exception):
                    await self.send({"type": "cancelled", "id": qid, "status": {}, "rows": 0})
                return
            except Exception as exc:
                timer.outcome = "error"
                log.exception("a fleet statement failed to start")
                await self.refuse(qid, exc)
                return
            sent = 0
            try:
                head = {"type": "columns", "id": qid, "columns": list(result.columns),
                        "types": [str(t) for t in result.types], "kind": result.kind}
                if getattr(result, "deployment_id", None) is not None:
                    head["deployment_id"] = result.deployment_id
                await self.send(head)
                async def emit(rows: list) -> None:
                    await self.send({"type": "rows", "id": qid, "rows": rows})

                async def status(change: dict) -> None:
                    await self.send({"type": "status", "id": qid, "change": change})

                writer = RowWriter(emit, self.metrics, max_items=BATCH_ROWS)
                try:
                    await pump_rows(result, writer, _same, on_status=status)
                finally:
                    writer.close()
                    sent = writer.rows
                await self.send({"type": "end", "id": qid, **final_record(result, sent, None, detail)})
            except asyncio.CancelledError:
                timer.outcome = "cancelled"
                await close_result(result)
                with contextlib.suppress(Exception):
                    await self.send({"type": "cancelled", "id": qid, **final_record(result, sent, None, detail)})
            except ConnectionError:   # the socket went away: nobody to tell
                timer.outcome = "cancelled"
            except Exception as exc:
                timer.outcome = "error"
                self.metrics.errors.inc(kind=getattr(exc, "kind", None) or "InternalError")
                if not isinstance(exc, QueryError):
                    log.exception("a fleet statement failed while streaming")
                with contextlib.suppress(Exception):
                    await self.send({"type": "error", "id": qid, **final_record(result, sent, exc, detail)})
            finally:
                await close_result(result)

    async def close(self) -> None:
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


@requires(Role.READ)
async def query_socket(request: web.Request) -> web.StreamResponse:
    service = query_service(request.app)
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "msgpack"):
        raise BadRequest("format is json (text messages, the default) or msgpack (binary messages)")
    config = request.app[CONFIG]
    ws = web.WebSocketResponse(max_msg_size=config.max_request_bytes, heartbeat=30.0, compress=False)
    if not ws.can_prepare(request).ok:
        raise BadRequest("GET /v1/query/ws needs an Upgrade: websocket request")
    try:
        await ws.prepare(request)
    except ConnectionError:   # the client left before the handshake's answer: nothing to tell
        return ws
    track_websocket(request, ws)
    bound_send_buffer(request.transport)   # a session's streams wait for a client that stops reading
    socket = QuerySocket(ws, service, principal(request), request.app[METRICS], fmt == "msgpack",
                         config.max_socket_queries)
    session = request.app[SESSIONS].open(socket.caller.token_id, ws_closer(ws), label="query ws")
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                try:
                    message = loads_json(msg.data, config.max_json_depth)
                except BadRequest as exc:
                    await socket.refuse(None, BadRequest(f"a text message must be JSON: {exc.message}"))
                    continue
            elif msg.type is WSMsgType.BINARY:
                try:
                    message = codec.unpack(msg.data)
                except codec.CodecError:
                    await socket.refuse(None, BadRequest("a binary message must be msgpack"))
                    continue
            else:
                break
            too_large = statement_too_large(message.get("query"), config.max_statement_bytes) \
                if isinstance(message, dict) else None
            if too_large is not None:
                await socket.refuse(message.get("id"), too_large)
                continue
            await socket.handle(message)
    finally:
        request.app[SESSIONS].close(session)
        await socket.close()
    return ws


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/query/ws", query_socket, allow_head=False)

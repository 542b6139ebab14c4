"""Fleet results on the wire of the HTTP API: NDJSON or msgpack rows, the status line, errors.

    POST /v1/query → 200, headers X-StreamQL-Columns / -Types / -Kind (JSON), then the body:
        [1, "wl-1", 2.5]                  one JSON array per row, exactly the selected columns
        …
        {"status": {"wl-1": {"outcome": "answered", "rows": 2, …}}, "rows": 2}          the last line
    or, when the statement fails while rows stream:
        {"error": {"kind", "message", "line", "column"}, "status": {…}, "rows": 1}     the last line

With `Accept: application/x-msgpack` the body is the same sequence of values, each one msgpack
object encoded by `streamql.codec` (so numpy arrays, times and records keep their types).
Rows are written as they arrive: buffered up to 64 KiB, and never held back more than 20 ms.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from federation.auth import Principal, Role
from federation.errors import FederationError, Forbidden
from federation.metrics import FederationMetrics
from streamql import ast as A
from streamql import codec
from streamql.errors import QueryError
from streamql.syntax import parse_one

log = logging.getLogger("streamql.federation.query")

NDJSON = "application/x-ndjson"
MSGPACK = "application/x-msgpack"
FLUSH_BYTES = 64 * 1024
FLUSH_DELAY_S = 0.02
DEPLOYMENT_STATEMENTS = (A.Deploy, A.Rollback, A.Undeploy)
# the kernel's send buffer of a connection carrying a stream: left alone it grows to megabytes
# (tcp_wmem), which a client that stops reading lets fill for tens of seconds while every edge
# goes on computing its rows; bounded, the rows' writer waits within a second or so, and the
# wait reaches the edges through their credit (federation/hub.py). bench/README.md, soak
STREAM_SEND_BUFFER = 64 * 1024


def bound_send_buffer(transport: asyncio.BaseTransport | None) -> None:
    """Keep at most about STREAM_SEND_BUFFER bytes of this connection in the kernel (the
    connection of a stream's response or of a WebSocket session)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError, ValueError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SEND_BUFFER)


class NotAcceptable(FederationError):
    kind = "NotAcceptable"
    http_status = 406


def choose_format(accept: str | None) -> str:
    """NDJSON unless the client asks for msgpack; 406 for a client that accepts neither."""
    if not accept:
        return NDJSON
    wanted = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if MSGPACK in wanted or "application/msgpack" in wanted:
        return MSGPACK
    if any(w in (NDJSON, "application/json", "application/*", "*/*", "text/plain", "text/*") for w in wanted):
        return NDJSON
    raise NotAcceptable(f"rows come as {NDJSON} (the default) or {MSGPACK}, not {accept}")


_ENCODE = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode  # made once
_PLAIN_SCALARS = frozenset((str, int, bool, type(None)))


def plain_line(value: Any) -> bytes:
    """One NDJSON line. Rows of plain scalars (most rows) skip the conversion: a finite float is
    the one float with `v - v == 0` (inf and NaN give NaN, which to_plain turns into null)."""
    if type(value) is list and all(type(v) in _PLAIN_SCALARS or (type(v) is float and v - v == 0) for v in value):
        return _ENCODE(value).encode() + b"\n"
    return _ENCODE(codec.to_plain(value)).encode() + b"\n"


HEAVY_ITEMS = 4096          # a value with more elements (or bytes) than this is encoded off the loop


def is_heavy(rows: list) -> bool:
    """Whether encoding these rows could take the event loop more than a moment: a large array,
    string or list among the values (checked by type and size only, never by converting)."""
    for row in rows:
        for value in (row if isinstance(row, (list, tuple)) else (row,)):
            kind = type(value)
            if kind in _PLAIN_SCALARS or kind is float:
                if kind is str and len(value) > HEAVY_ITEMS * 16:
                    return True
                continue
            size = getattr(value, "size", None)           # numpy arrays
            if isinstance(size, int) and size > HEAVY_ITEMS:
                return True
            if isinstance(value, (list, tuple, dict, bytes, bytearray, str)) and len(value) > HEAVY_ITEMS:
                return True
            if isinstance(value, (list, tuple)) and any(not isinstance(v, (int, float, str, type(None)))
                                                        for v in value[:16]):
                return True    # nested values: their size is not known cheaply
    return False


async def encoded_rows(rows: list, encode: Callable[[Any], Any]) -> list:
    """Every row encoded — in a worker thread when the rows are heavy (`select zeros(30000000);`
    is one row of 240 MB: never JSON-encoded on the event loop)."""
    if is_heavy(rows):
        return await asyncio.to_thread(lambda: [encode(list(row)) for row in rows])
    return [encode(list(row)) for row in rows]


def encoder_for(fmt: str) -> Callable[[Any], bytes]:
    if fmt == MSGPACK:
        return codec.pack
    return plain_line


def error_info(exc: BaseException) -> dict:
    """The JSON error of an exception: a QueryError's kind and position, anything else internal."""
    if isinstance(exc, QueryError):
        return exc.to_dict()
    return {"kind": "InternalError", "message": "internal error; the service logged it", "line": None, "column": None}


def check_statement(text: str, principal: Principal) -> A.Statement:
    """One statement, parsed (a bad one → 400 with its position); deployments need the deploy role."""
    # several statements: a ParseError at the second (execute() splits scripts)
    return check_role(parse_one(text), principal)


def check_role(statement: A.Statement, principal: Principal) -> A.Statement:
    """Deployments need the deploy role (403 otherwise)."""
    if isinstance(statement, DEPLOYMENT_STATEMENTS) and not principal.allows(Role.DEPLOY):
        error = Forbidden(f"{type(statement).__name__.lower()} needs a token with the deploy role; this one is "
                          f"{principal.role.label}")
        error.span = statement.span
        raise error
    return statement


async def check_statement_off_loop(service: Any, text: str, principal: Principal) -> A.Statement:
    """check_statement in a worker thread, never on the event loop (a 64 KiB `in` list takes a
    second or more to parse): on the service's parsing threads when it has them, through its
    parse cache when it has one (the service parses the same text again to run it)."""
    parsed = getattr(service, "parsed", None)
    if parsed is not None:
        return check_role(await parsed(text), principal)
    pool = getattr(service, "pool", None)
    if pool is not None and hasattr(pool, "parse"):
        return await pool.parse(lambda t: check_statement(t, principal), text)
    return await asyncio.to_thread(check_statement, text, principal)


MAX_HEADER_BYTES = 4096  # clients refuse header lines past 8 KiB (aiohttp's default)


def bounded_names(names: list[str]) -> tuple[str, bool]:
    """A JSON list of names for a header, at most MAX_HEADER_BYTES: long names are shortened
    (ending in "…"), and when that is not enough the list is cut; whether anything was."""
    text = json.dumps(names)
    if len(text) <= MAX_HEADER_BYTES:
        return text, False
    width = max(8, MAX_HEADER_BYTES // max(1, len(names)) - 8)
    short = [n if len(n) <= width else n[:width - 1] + "…" for n in names]
    while short and len(json.dumps(short)) > MAX_HEADER_BYTES:
        short = short[:len(short) * 3 // 4]
    return json.dumps(short), True


def result_headers(result: Any, fmt: str) -> dict[str, str]:
    columns, cut = bounded_names([str(c) for c in result.columns])
    types, cut_types = bounded_names([str(t) for t in result.types])
    headers = {"Content-Type": fmt if fmt == MSGPACK else f"{NDJSON}; charset=utf-8",
               "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
               "X-StreamQL-Columns": columns, "X-StreamQL-Types": types,
               "X-StreamQL-Kind": str(result.kind)}
    if cut or cut_types:  # the rows still carry every column
        headers["X-StreamQL-Columns-Truncated"] = "true"
    if getattr(result, "deployment_id", None) is not None:
        headers["X-StreamQL-Deployment"] = str(result.deployment_id)
    return headers


def final_record(result: Any, rows: int, error: BaseException | None = None, detail: bool | None = None) -> dict:
    out: dict[str, Any] = {}
    if error is not None:
        out["error"] = error_info(error)
    status = result.status_dict(detail) if hasattr(result, "status_dict") else dict(getattr(result, "status", None) or {})
    out["status"] = status
    out["complete"] = bool(status.get("complete", True)) and error is None
    out["rows"] = rows
    for name in ("message", "deployment_id"):
        value = getattr(result, name, None)
        if value is not None:
            out[name] = value
    return out


class RowWriter:
    """Rows buffered on their way out, flushed when the buffer is full or 20 ms after the first
    row started waiting — so rows that trickle in are never held back while the next is awaited.

    `emit(items)` sends a list of buffered items (encoded rows for HTTP, row lists for the
    WebSocket); the buffer is full at `max_items` items or `max_bytes` bytes of encoded rows.
    """

    def __init__(self, emit: Callable[[list], Any], metrics: FederationMetrics | None = None, *,
                 max_items: int = 1 << 30, max_bytes: int = FLUSH_BYTES):
        self._emit = emit
        self.metrics = metrics
        self.max_items, self.max_bytes = max_items, max_bytes
        self.items: list = []
        self.size = 0
        self.rows = 0
        self._not_rows = 0          # buffered items that are not rows (status changes)
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task | None = None
        self.error: BaseException | None = None

    async def add(self, item: Any, *, row: bool = True) -> None:
        self.items.append(item)
        if not row:
            self._not_rows += 1
        if isinstance(item, (bytes, bytearray)):
            self.size += len(item)
        if len(self.items) >= self.max_items or self.size >= self.max_bytes:
            await self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_DELAY_S, self._flush_later)

    def _flush_later(self) -> None:
        self._timer = None
        if self.items and (self._flushing is None or self._flushing.done()):
            self._flushing = asyncio.ensure_future(self._quiet_flush())

    async def _quiet_flush(self) -> None:
        try:
            await self.flush()
        except Exception as exc:  # the client went away: the main loop sees it at its next add
            self.error = exc

    async def flush(self) -> None:
        if self.error is not None:
            raise self.error
        async with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self.items:
                return
            items, self.items, self.size = self.items, [], 0
            rows, self._not_rows = len(items) - self._not_rows, 0
            await self._emit(items)
            self.rows += rows
            if self.metrics is not None and rows:
                self.metrics.query_rows.inc(rows)
                self.metrics.query_rows_rate.mark(rows)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushing is not None and not self._flushing.done():
            self._flushing.cancel()


def client_is_there(request: web.Request) -> bool:
    """The client's connection is still open."""
    transport = request.transport
    return transport is not None and not transport.is_closing()


async def watch_disconnect(request: web.Request, interval: float = 0.25) -> None:
    """Returns when the client's connection is gone (aiohttp does not cancel handlers itself)."""
    while client_is_there(request):
        await asyncio.sleep(interval)


async def close_result(result: Any) -> None:
    """aclose the result, even from a task being cancelled, without letting it raise."""
    close = getattr(result, "aclose", None)
    if close is None:
        return
    try:
        await asyncio.shield(asyncio.ensure_future(close()))
    except asyncio.CancelledError:
        pass
    except Exception:
        log.exception("closing a fleet result failed")


class QueryTimer:
    """Counts a statement in the metrics: running while it streams, then by outcome."""

    def __init__(self, metrics: FederationMetrics):
        self.metrics = metrics
        self.started = time.monotonic()
        self.outcome = "ok"

    def __enter__(self) -> "QueryTimer":
        self.metrics.queries_running.inc()
        return self

    def __exit__(self, *exc: object) -> None:
        self.metrics.queries_running.dec()
        self.metrics.queries.inc(outcome=self.outcome)


async def pump_rows(result: Any, writer: RowWriter, encode: Callable[[Any], Any],
                    on_status: Callable[[dict], Any] | None = None) -> None:
    """Every row of the result into the writer, then a final flush. A standing fleet stream's
    status changes (a device joining, dropping its link) go to `on_status`, or into the writer
    as {"status_change": …} items between the rows."""
    rows = result.items() if hasattr(result, "items") else _batched(result.rows())
    try:
        async for item in rows:
            if isinstance(item, dict):
                if on_status is not None:
                    await writer.flush()
                    await on_status(item["status_change"])
                else:
                    await writer.add(encode(item), row=False)
                    await writer.flush()
                continue
            for encoded in await encoded_rows(item, encode):
                await writer.add(encoded)
    except asyncio.CancelledError:
        raise
    except BaseException:
        with contextlib.suppress(Exception):  # the rows before the error still go out
            await writer.flush()
        raise
    else:
        await writer.flush()
    finally:
        with contextlib.suppress(Exception):
            await rows.aclose()


async def _batched(rows):
    async for row in rows:
        yield [row]

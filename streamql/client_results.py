"""The federation client's results: a statement's rows read from the HTTP response as they arrive
(NDJSON or msgpack), blocking (`FederationResult`) or async (`AsyncFederationResult`), and the
errors the federation answers with, rebuilt as QueryErrors with their positions.

Closing never hangs and never leaks: a blocking result may be closed from another thread while
one waits for a row (the shell's Ctrl-C), and an async iteration that is abandoned closes its
HTTP session. `streamql.client` is the front door (`connect`, `Federation`).
"""
from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import msgpack

from . import codec
from .errors import (FleetError, ModelError, QueryCancelled, QueryError, QueryLimitError, QueryNameError,
                     QueryParseError, QueryRuntimeError, QueryTypeError, QueryValidationError, Span, StoreError)
from .fleet_status import StatusReport

__all__ = ["FederationResult", "AsyncFederationResult", "FederationRequestError", "FederationUnavailable",
           "error_from", "MSGPACK", "NDJSON"]

MSGPACK = "application/x-msgpack"
NDJSON = "application/x-ndjson"
READ_CHUNK = 64 * 1024

_KINDS: dict[str, type[QueryError]] = {
    cls.kind: cls for cls in (QueryParseError, QueryNameError, QueryTypeError, QueryRuntimeError, QueryLimitError,
                              QueryCancelled, QueryValidationError, ModelError, StoreError, FleetError)
}


class FederationUnavailable(FleetError):
    """The federation could not be reached, or the link to it broke while rows streamed."""

    kind = "FederationUnavailable"


class FederationRequestError(QueryError):
    """The federation refused a request (bad input, a wrong token, a missing role, not found…)."""

    def __init__(self, kind: str, message: str, status: int | None = None, span: Span | None = None,
                 source: str | None = None):
        super().__init__(message, span, source)
        self.kind = kind
        self.status = status


def _span(source: str | None, line: Any, column: Any) -> Span | None:
    if not isinstance(line, int) or not isinstance(column, int) or line < 1 or column < 1:
        return None
    if not source:
        return Span(0, 1, line, column, line, column + 1)
    lines = source.split("\n")
    offset = sum(len(text) + 1 for text in lines[:line - 1]) + column - 1
    return Span.at(source, min(offset, len(source)))


def error_from(info: Any, status: int | None = None, source: str | None = None) -> QueryError:
    """The QueryError of a JSON error `{"kind", "message", "line", "column"}`, position rebuilt."""
    if not isinstance(info, dict):
        return FederationRequestError("HTTPError", f"the federation answered {status} without an error", status)
    kind = str(info.get("kind") or "QueryError")
    message = str(info.get("message") or kind)
    span = _span(source, info.get("line"), info.get("column"))
    cls = _KINDS.get(kind)
    if cls is not None:
        error = cls(message, span, source)
        error.status = status  # type: ignore[attr-defined]
        return error
    return FederationRequestError(kind, message, status, span, source)


def _row(values: list, width: int) -> Any:
    return values[0] if width == 1 and len(values) == 1 else tuple(values)


class _Decoder:
    """Values of an NDJSON or msgpack body, one at a time, from `read(n)`/`readline()` callables."""

    def __init__(self, content_type: str):
        self.msgpack = content_type.startswith(MSGPACK)
        self.buffer = bytearray()
        self.offset = 0
        if self.msgpack:
            self._unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=256 << 20)
            self._out_of_data = msgpack.OutOfData

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        if self.msgpack:
            self._unpacker.feed(chunk)

    _NOTHING = object()

    def next_value(self) -> Any:
        """The next complete value in what was fed, or _NOTHING."""
        if self.msgpack:
            try:
                self._unpacker.skip()
            except self._out_of_data:
                return self._NOTHING
            end = self._unpacker.tell()
            size = end - self.offset
            data = bytes(self.buffer[:size])
            del self.buffer[:size]
            self.offset = end
            return codec.unpack(data)
        newline = self.buffer.find(b"\n")
        if newline < 0:
            return self._NOTHING
        line = bytes(self.buffer[:newline])
        del self.buffer[:newline + 1]
        return json.loads(line) if line.strip() else self.next_value()


class _ResultBase:
    columns: list[str]
    types: list[str]
    kind: str

    def _headers(self, headers: Callable[[str], str | None]) -> None:
        self.columns = json.loads(headers("X-StreamQL-Columns") or "[]")
        self.types = json.loads(headers("X-StreamQL-Types") or "[]")
        self.kind = headers("X-StreamQL-Kind") or "bag"
        self.deployment_id = headers("X-StreamQL-Deployment")
        self.message: str | None = None
        self.status: StatusReport | None = None
        self.status_changes: list[dict] = []      # a standing fleet stream's devices coming and going
        self.on_status_change: Callable[[dict], None] | None = None
        self.complete: bool | None = None
        self.rows_received = 0
        self.finished = False

    def _take(self, value: Any) -> tuple[bool, Any]:
        """(is a row, the row) for a value of the body; the last value ends the result."""
        if isinstance(value, list):
            self.rows_received += 1
            return True, _row(value, len(self.columns))
        if isinstance(value, dict) and "status_change" in value:
            change = value["status_change"]
            self.status_changes.append(change)
            if self.on_status_change is not None:
                self.on_status_change(change)
            return False, None
        if isinstance(value, dict):
            self.finished = True
            self.status = StatusReport(value.get("status"))
            self.complete = bool(value.get("complete", self.status.complete))
            self.message = value.get("message", self.message)
            self.deployment_id = value.get("deployment_id", self.deployment_id)
            if value.get("error") is not None:
                error = error_from(value["error"], 200, self.text)
                error.status_by_device = self.status  # type: ignore[attr-defined]
                raise error
            return False, None
        raise FleetError(f"the federation sent {type(value).__name__} where a row was expected")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} ({', '.join(self.columns)})>"


class FederationResult(_ResultBase):
    """Rows of one statement as they arrive (a blocking iterator). One-column rows are plain
    values, several columns tuples. `status` (each device's outcome) is there after the last row;
    `close()` stops the statement on the federation — from any thread, at once, even while
    another thread waits for a row that never comes (its iteration then raises QueryCancelled)."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, text: str):
        self.text = text
        self._conn, self._response = conn, response
        # kept apart: http.client may hand the socket over to the response and forget it
        self._sock = conn.sock or getattr(getattr(response.fp, "raw", None), "_sock", None)
        self._lock = threading.Lock()
        self._reading = False      # a thread is inside a blocking read
        self._closed = False
        self._decoder = _Decoder(response.getheader("Content-Type") or NDJSON)
        self._headers(response.getheader)
        self._materialized: Iterator | None = None
        self.rows: list | None = None

    def __iter__(self) -> "FederationResult":
        return self

    def __next__(self) -> Any:
        if self._materialized is not None:
            return next(self._materialized)
        while not self.finished:
            value = self._decoder.next_value()
            if value is _Decoder._NOTHING:
                chunk = self._read()
                if not chunk:
                    self.close()
                    raise FederationUnavailable("the federation closed the stream before its status line")
                self._decoder.feed(chunk)
                continue
            try:
                is_row, row = self._take(value)
            except QueryError:
                self.close()
                raise
            if is_row:
                return row
        self.close()
        raise StopIteration

    def _read(self) -> bytes:
        with self._lock:
            if self._closed:
                raise QueryCancelled("the result was closed")
            self._reading = True
        try:
            return self._response.read1(READ_CHUNK)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            if self._closed:
                raise QueryCancelled("the result was closed") from None
            raise FederationUnavailable(f"the link to the federation broke: {exc}") from None
        finally:
            with self._lock:
                self._reading = False
                closing = self._closed
            if closing:   # close() came from another thread while this one read: finish it here
                self._release()
                raise QueryCancelled("the result was closed")

    def fetchall(self) -> list:
        return list(self)

    def close(self) -> None:
        """Stop reading; the federation cancels the statement when the connection closes.

        Safe from another thread while one waits for a row: shutting the socket down wakes that
        read (closing the response here would wait for the reader's buffer lock, while the reader
        waits for a chunk that may never come), and the reading thread closes the rest."""
        with self._lock:
            if self._closed or self._conn is None:
                return
            self._closed = True
            reading = self._reading
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        if not reading:
            self._release()

    def _release(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):   # a socket shut down under it may complain
                conn.close()

    def __enter__(self) -> "FederationResult":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass


class AsyncFederationResult(_ResultBase):
    """`async for row in fleet.aquery(…)`; `await result.aclose()` stops the statement.

    Iteration that is abandoned — a `break`, an exception in the loop's body, the task cancelled
    while it waits for a row — closes the HTTP session too: a cancelled or failed read closes it
    before the exception goes on, and a result dropped unfinished closes its connection and lets
    go of its session when it is collected (no "Unclosed client session", no traceback)."""

    def __init__(self, federation: Any, text: str, limits: dict | None):   # client.Federation (imports this module)
        self.federation, self.text, self.limits = federation, text, limits
        self.columns, self.types, self.kind = [], [], ""
        self.status = None
        self.status_changes: list[dict] = []
        self.on_status_change = None
        self.complete: bool | None = None
        self._session = None
        self._response = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._decoder: _Decoder | None = None

    async def start(self) -> "AsyncFederationResult":
        """Send the statement (done by the first `__anext__` too); errors before any row raise here."""
        if self._response is not None:
            return self
        import aiohttp

        fed = self.federation
        self._loop = asyncio.get_running_loop()
        # one request per session, never pooled: dropping the response leaves nothing open
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        body = {"query": self.text}
        if self.limits:
            body["limits"] = self.limits
        try:
            response = await self._session.post(
                fed.url + "/v1/query", json=body, ssl=fed.ssl_context if fed.ssl_context is not None else True,
                headers=fed._headers({"Accept": MSGPACK}),
                timeout=aiohttp.ClientTimeout(total=None, connect=fed.timeout))
        except (OSError, aiohttp.ClientError) as exc:
            await self.aclose()
            raise FederationUnavailable(f"cannot reach the federation at {fed.url}: {exc}") from None
        except BaseException:      # cancelled while connecting
            await self.aclose()
            raise
        if response.status >= 300:
            try:
                info = (await response.json(content_type=None)).get("error")
            except (ValueError, AttributeError, aiohttp.ClientError):
                info = {"kind": "HTTPError", "message": f"HTTP {response.status}"}
            response.close()
            await self.aclose()
            raise error_from(info, response.status, self.text)
        self._response = response
        self._decoder = _Decoder(response.headers.get("Content-Type") or NDJSON)
        self._headers(response.headers.get)
        return self

    def __aiter__(self) -> "AsyncFederationResult":
        return self

    async def __anext__(self) -> Any:
        await self.start()
        while not self.finished:
            value = self._decoder.next_value()
            if value is _Decoder._NOTHING:
                try:
                    chunk = await self._response.content.readany()
                except Exception as exc:  # noqa: BLE001 - any broken link is the same to the caller
                    await self.aclose()
                    raise FederationUnavailable(f"the link to the federation broke: {exc}") from None
                except BaseException:     # cancelled while waiting for a row: nothing may stay open
                    await self.aclose()
                    raise
                if not chunk:
                    await self.aclose()
                    raise FederationUnavailable("the federation closed the stream before its status line")
                self._decoder.feed(chunk)
                continue
            try:
                is_row, row = self._take(value)
            except QueryError:
                await self.aclose()
                raise
            if is_row:
                return row
        await self.aclose()
        raise StopAsyncIteration

    async def fetchall(self) -> list:
        return [row async for row in self]

    async def aclose(self) -> None:
        response, session = self._response, self._session
        self._response = self._session = None
        if response is not None:
            response.close()
        if session is not None:
            await session.close()

    def _drop(self) -> None:
        """Close without awaiting (the result was dropped unfinished): closing the response closes
        its only connection, and the session, then holding nothing, is let go of."""
        response, session = self._response, self._session
        self._response = self._session = None
        if response is not None:
            response.close()
        if session is not None and not session.closed:
            session.detach()

    def __del__(self) -> None:
        if self._session is None and self._response is None:
            return
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        try:
            if loop is None or running is loop:
                self._drop()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(self._drop)
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

    async def __aenter__(self) -> "AsyncFederationResult":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

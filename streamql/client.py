"""The Python client of a StreamQL federation: the same `query`, `aquery` and `execute` as a local
`Engine`, over the federation's HTTP API (docs/http-api.md).

    import streamql
    fleet = streamql.connect("https://fed.example:8080", token, ca_file="ca.pem")
    result = fleet.query("select id(e), region(e) from Edge e;")
    for edge_id, region in result: ...
    result.columns, result.types, result.status        # status: each device's outcome, after the end
    async for row in fleet.aquery("select stream of …;"): ...
    fleet.execute("deploy model 'vib' version '1.2.0' to Edge e where region(e) = 'EU';")
    fleet.wait_deployment(result.deployment_id)
    fleet.edges(region="EU"), fleet.models(), fleet.deployment("7")

Rows travel as msgpack encoded by `streamql.codec`, so numeric vectors come back as numpy arrays,
times as `Time`, records as dicts — as from a local engine. Errors are `QueryError` subclasses
(`QueryParseError`, `QueryNameError`, …) with the line and column the federation reported; other
refusals (a wrong token, a missing role) are `FederationRequestError`s with the HTTP status.
This module uses only the standard library for blocking calls; `aquery` needs aiohttp.
"""
from __future__ import annotations

import http.client
import json
import os
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import msgpack

from . import codec
from .errors import (FleetError, ModelError, QueryCancelled, QueryError, QueryLimitError, QueryNameError,
                     QueryParseError, QueryRuntimeError, QueryTypeError, QueryValidationError, Span, StoreError)
from .library import default_library
from .syntax import parse

__all__ = ["connect", "Federation", "FederationResult", "AsyncFederationResult", "FederationRequestError",
           "FederationUnavailable"]

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


def connect(url: str, token: str | None = None, *, ca_file: str | os.PathLike | None = None, verify: bool = True,
            client_cert: str | os.PathLike | tuple | None = None, timeout: float = 30.0) -> "Federation":
    """A client for the federation at `url` (http:// or https://) with a bearer token.

    `token` defaults to $STREAMQL_TOKEN. `ca_file` trusts a private CA (a self-signed federation);
    `client_cert` (a PEM with the key, or (cert, key)) for federations that require one.
    """
    return Federation(url, token, ca_file=ca_file, verify=verify, client_cert=client_cert, timeout=timeout)


class Federation:
    def __init__(self, url: str, token: str | None = None, *, ca_file=None, verify: bool = True, client_cert=None,
                 timeout: float = 30.0):
        parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"a federation URL is http(s)://host[:port], not {url!r}")
        self.url = f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}"
        self._scheme, self._host, self._port = parsed.scheme, parsed.hostname, parsed.port
        self._base = parsed.path.rstrip("/")
        self.token = token if token is not None else os.environ.get("STREAMQL_TOKEN")
        self.timeout = timeout
        self.ssl_context = self._ssl_context(ca_file, verify, client_cert) if parsed.scheme == "https" else None

    def __repr__(self) -> str:
        return f"<Federation {self.url}>"

    @staticmethod
    def _ssl_context(ca_file, verify: bool, client_cert) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=os.fspath(ca_file) if ca_file else None)
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if client_cert:
            cert, key = client_cert if isinstance(client_cert, tuple) else (client_cert, None)
            context.load_cert_chain(os.fspath(cert), os.fspath(key) if key else None)
        return context

    # --- plumbing --------------------------------------------------------------------------------
    def _headers(self, extra: dict | None = None) -> dict:
        headers = {"User-Agent": "streamql-client"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(extra or {})
        return headers

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self.ssl_context)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _open(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
              timeout: float | None = None, source: str | None = None):
        """A response with a 2xx status (its connection still open for streaming), or the error raised."""
        conn = self._connection(self.timeout if timeout is None else timeout)
        try:
            conn.request(method, self._base + path, body=body, headers=self._headers(headers))
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise FederationUnavailable(f"cannot reach the federation at {self.url}: {exc}") from None
        if response.status >= 300:
            data = response.read()
            conn.close()
            try:
                info = json.loads(data).get("error")
            except (ValueError, AttributeError):
                info = {"kind": "HTTPError", "message": f"HTTP {response.status}: {data[:200]!r}"}
            raise error_from(info, response.status, source)
        return conn, response

    def _json(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn, response = self._open(method, path, data, headers, timeout)
        try:
            return json.loads(response.read())
        finally:
            conn.close()

    # --- statements ------------------------------------------------------------------------------
    def query(self, text: str, *, limits: dict | None = None, format: str = "msgpack",
              timeout: float | None = None) -> "FederationResult":
        """Run one statement; rows arrive as you iterate. Errors found before any row raise here."""
        body = {"query": text}
        if limits:
            body["limits"] = limits
        accept = MSGPACK if format == "msgpack" else NDJSON
        conn, response = self._open("POST", "/v1/query", json.dumps(body).encode(),
                                    {"Content-Type": "application/json", "Accept": accept}, timeout, source=text)
        if timeout is None:  # a stream may be quiet for long: the timeout was for connecting and the headers
            sock = conn.sock or getattr(getattr(response.fp, "raw", None), "_sock", None)
            if sock is not None:
                sock.settimeout(None)
        return FederationResult(conn, response, text)

    def aquery(self, text: str, *, limits: dict | None = None) -> "AsyncFederationResult":
        """`async for row in fleet.aquery(…)` (aiohttp); columns and types once the first row is awaited."""
        return AsyncFederationResult(self, text, limits)

    def execute(self, script: str) -> list["FederationResult"]:
        """Run every statement of a script in order; one result each (bag, vector, explain and
        statement results are read completely before the next statement runs, as on an Engine)."""

        results = []
        for statement in parse(script):
            start, end = statement.span.start, statement.span.end
            text = script[start:end] + ";"
            try:
                result = self.query(text)
                if result.kind != "stream":
                    result.rows = list(result)
                    result._materialized = iter(result.rows)
            except QueryError as exc:
                raise _rebased(exc, script, statement.span) from None
            results.append(result)
        return results

    # --- the fleet -------------------------------------------------------------------------------
    def edges(self, *, online: bool | None = None, limit: int = 10_000, **metadata: Any) -> list[dict]:
        """Devices, filtered by metadata (`region="EU"`, `kind=["dumper", "truck"]`) and presence."""
        query: list[tuple[str, str]] = [("limit", str(limit))]
        if online is not None:
            query.append(("online", "true" if online else "false"))
        for key, value in metadata.items():
            for item in value if isinstance(value, (list, tuple, set)) else [value]:
                query.append((f"meta.{key}", str(item)))
        edges = self._json("GET", "/v1/edges?" + urllib.parse.urlencode(query))["edges"]
        for edge in edges:  # the announced signal names, where tools look for them
            edge.setdefault("signals", list((edge.get("capabilities") or {}).get("signals") or []))
        return edges

    def metadata_keys(self) -> list[str]:
        """Every metadata key some device has (each is a function of the edge: `region(e)`)."""
        return sorted({key for edge in self.edges() for key in edge.get("metadata") or {}})

    def signals(self) -> list[str]:
        """Every signal some device announced."""
        return sorted({name for edge in self.edges() for name in edge.get("signals") or []})

    def functions(self) -> list[dict]:
        """The functions statements may call: the built-in library (the federation runs the same
        one), the fleet functions of LANGUAGE.md §8 and one function per metadata key."""

        out = default_library().describe()
        fleet = [(name, signature, doc) for name, signature, doc in FLEET_FUNCTIONS]
        fleet += [(key, f"{key}(Edge e) -> Object", f"the metadata value '{key}' of the edge")
                  for key in self.metadata_keys() if key not in {f[0] for f in FLEET_FUNCTIONS}]
        for name, signature, doc in fleet:
            out.append({"name": name, "signature": signature, "kind": "fleet", "doc": doc, "topic": "fleet",
                        "volatile": True, "elementwise": False, "aggregate_split": None})
        return out

    def edge(self, edge_id: str) -> dict:
        return self._json("GET", f"/v1/edges/{urllib.parse.quote(edge_id, safe='')}")

    def provision(self, edge_id: str, metadata: dict | None = None, capabilities: dict | None = None) -> dict:
        """Register a device (admin token): {id, token, edge}; the token is shown only here."""
        return self._json("POST", "/v1/edges", {"id": edge_id, "metadata": metadata or {},
                                                "capabilities": capabilities or {}})

    def models(self, name: str | None = None) -> list[dict]:
        path = "/v1/models" + (f"?name={urllib.parse.quote(name)}" if name else "")
        return self._json("GET", path)["models"]

    def upload_model(self, bundle: bytes | str | os.PathLike) -> dict:
        """Upload a signed bundle (its bytes or its file) with a deploy token."""
        data = bundle if isinstance(bundle, (bytes, bytearray)) else open(os.fspath(bundle), "rb").read()
        conn, response = self._open("POST", "/v1/models", bytes(data), {"Content-Type": "application/octet-stream"})
        try:
            return json.loads(response.read())
        finally:
            conn.close()

    def deployments(self, state: str | None = None) -> list[dict]:
        return self._json("GET", "/v1/deployments" + (f"?state={state}" if state else ""))["deployments"]

    def deployment(self, deployment_id: str | int) -> dict:
        """Progress of a deployment per device: state, counts, devices [{id, state, reason, variant}]."""
        return self._json("GET", f"/v1/deployments/{deployment_id}")

    def wait_deployment(self, deployment_id: str | int, timeout: float | None = None) -> dict:
        """The progress once the deployment has settled: finished, or only waiting for offline
        devices (`progress["settled"]`); after `timeout` seconds, the progress as it is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 30.0 if deadline is None else max(0.0, deadline - time.monotonic())
            wait = max(1, min(30, int(left))) if left >= 1 else 0
            progress = self._json("GET", f"/v1/deployments/{deployment_id}" + (f"?wait={wait}" if wait else ""),
                                  timeout=self.timeout + wait)
            if progress.get("settled") or (deadline is not None and time.monotonic() >= deadline):
                return progress

    def deployment_progress(self, deployment_id: str | int, *, poll: float = 0.5,
                            timeout: float | None = None, stop: threading.Event | None = None) -> Iterator[dict]:
        """Progress records of a deployment as it changes, for progress bars: {action, model,
        version, deployment, devices: {id: {state, reason}}, complete}; the last one is settled.
        Setting `stop` ends the watching (not the rollout) at once, from any thread."""
        deadline = None if timeout is None else time.monotonic() + timeout
        stop = stop or threading.Event()
        last = None
        while not stop.is_set():
            progress = self.deployment(deployment_id)
            record = {"action": progress["action"], "model": progress["model"], "version": progress["version"],
                      "deployment": progress["id"], "state": progress["state"],
                      "devices": {d["id"]: {"state": d["state"], "reason": d["reason"]} for d in progress["devices"]},
                      "complete": bool(progress.get("settled"))}
            if record != last:
                yield record
                last = record
            if record["complete"] or (deadline is not None and time.monotonic() >= deadline):
                return
            stop.wait(poll)

    def metrics(self) -> str:
        conn, response = self._open("GET", "/metrics")
        try:
            return response.read().decode()
        finally:
            conn.close()

    def close(self) -> None:
        """Nothing stays open between calls; here for symmetry with Engine."""

    def __enter__(self) -> "Federation":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


FLEET_FUNCTIONS = (
    ("id", "id(Edge e) -> Charstring", "the device id"),
    ("meta", "meta(Edge e, Charstring key) -> Object", "a metadata value of the edge"),
    ("online", "online(Edge e) -> Boolean", "whether the edge is connected now"),
    ("last_seen", "last_seen(Edge e) -> Time", "when the edge was last heard from"),
    ("health", "health(Edge e) -> Record", "the edge's latest health: cpu, memory, battery, queues, link"),
    ("capability", "capability(Edge e, Charstring key) -> Object", "a capability of the edge (ram_kb, cpu, …)"),
    ("model_version", "model_version(Edge e, Charstring model) -> Charstring", "the version of a model running there"),
    ("signals", "signals(Edge e) -> Vector of Charstring", "the signals the edge announced"),
    ("edges_with_signal", "edges_with_signal(Charstring name) -> Bag of Edge", "the edges that have this signal"),
)


def _rebased(exc: QueryError, script: str, span: Span) -> QueryError:
    """An error in one statement of a script, positioned in the whole script."""
    if exc.span is not None:
        line = exc.span.line + span.line - 1
        column = exc.span.column + (span.column - 1 if exc.span.line == 1 else 0)
        exc.span = _span(script, line, column)
    exc.source = script
    return exc


# --- reading the stream -----------------------------------------------------------------------------
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
        self.status: dict | None = None
        self.rows_received = 0
        self.finished = False

    def _take(self, value: Any) -> tuple[bool, Any]:
        """(is a row, the row) for a value of the body; the last value ends the result."""
        if isinstance(value, list):
            self.rows_received += 1
            return True, _row(value, len(self.columns))
        if isinstance(value, dict):
            self.finished = True
            self.status = value.get("status") or {}
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
    `close()` stops the statement on the federation."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, text: str):
        self.text = text
        self._conn, self._response = conn, response
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
        try:
            return self._response.read1(READ_CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            raise FederationUnavailable(f"the link to the federation broke: {exc}") from None

    def fetchall(self) -> list:
        return list(self)

    def close(self) -> None:
        """Stop reading; the federation cancels the statement when the connection closes."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

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
    """`async for row in fleet.aquery(…)`; `await result.aclose()` stops the statement."""

    def __init__(self, federation: Federation, text: str, limits: dict | None):
        self.federation, self.text, self.limits = federation, text, limits
        self.columns, self.types, self.kind = [], [], ""
        self.status = None
        self._session = None
        self._response = None
        self._decoder: _Decoder | None = None

    async def start(self) -> "AsyncFederationResult":
        """Send the statement (done by the first `__anext__` too); errors before any row raise here."""
        if self._response is not None:
            return self
        import aiohttp  # only the async client needs it: imported when one is used

        fed = self.federation
        self._session = aiohttp.ClientSession()
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
        if response.status >= 300:
            try:
                info = (await response.json(content_type=None)).get("error")
            except (ValueError, AttributeError, aiohttp.ClientError):
                info = {"kind": "HTTPError", "message": f"HTTP {response.status}"}
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
        if self._response is not None:
            self._response.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "AsyncFederationResult":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

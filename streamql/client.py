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
from collections.abc import Iterator
from typing import Any

from .client_results import (MSGPACK, NDJSON, AsyncFederationResult, FederationRequestError, FederationResult,
                             FederationUnavailable, _span, error_from)
from .errors import QueryError, Span
from .library import default_library
from .syntax import parse

__all__ = ["connect", "Federation", "FederationResult", "AsyncFederationResult", "FederationRequestError",
           "FederationUnavailable"]


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
        """The functions statements may call: the built-in library, the fleet functions of
        LANGUAGE.md §8 (one per metadata key among them), the functions defined at the federation
        and those the edges announced — as the federation lists them (GET /v1/functions); from an
        older federation without that route, the library and fleet functions known here."""
        try:
            return self._json("GET", "/v1/functions")["functions"]
        except FederationRequestError as exc:
            if exc.status != 404:
                raise
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
        version, deployment, wave: {current, count, state, sizes}, abort, devices: {id: {state, reason}},
        complete}; the last one is settled.
        Setting `stop` ends the watching (not the rollout) at once, from any thread."""
        deadline = None if timeout is None else time.monotonic() + timeout
        stop = stop or threading.Event()
        last = None
        while not stop.is_set():
            progress = self.deployment(deployment_id)
            waves = progress.get("waves") or {}
            current = waves.get("current") or 0
            wave = {"current": current, "count": waves.get("count"), "sizes": waves.get("sizes"),
                    "state": next((w.get("state") for w in waves.get("list") or () if w.get("wave") == current), None)}
            record = {"action": progress["action"], "model": progress["model"], "version": progress["version"],
                      "deployment": progress["id"], "state": progress["state"], "wave": wave,
                      "abort": progress.get("abort"),
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

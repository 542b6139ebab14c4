"""A small fake federation for tests, benchmarks and demos of edge engines.

It speaks docs/protocol.md with `streamql.wire` and nothing else from the federation package,
so edge tests depend only on the contract:

    fed = FakeFederation(tokens={"t-1": "wl-1"})
    url = await fed.start()                      # ws://127.0.0.1:PORT
    conn = await fed.connection("wl-1")          # waits for hello → welcome
    rows, end = await conn.run_query("select 1;")
    frame = await conn.deploy("d-1", bundle_bytes, "vib", "1.0.0")   # ack or nack
    await fed.stop()

Publish frames are deduplicated with `wire.PublishReceiver` and acknowledged (every one, or
every `ack_every`, or never with `ack_publish=False`); `fed.published[edge]` holds the
accepted records in order. Every frame an edge sent is kept in `conn.frames`.
"""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from typing import Any, Callable

from aiohttp import WSMsgType, web

from streamql import wire

__all__ = ["FakeFederation", "FakeConnection"]


class FakeConnection:
    """One edge's WebSocket as the fake federation sees it."""

    def __init__(self, fed: "FakeFederation", ws: web.WebSocketResponse, hello: wire.Frame):
        self.fed = fed
        self.ws = ws
        self.hello = hello
        self.edge: str = hello["edge"]
        self.frames: list[wire.Frame] = []
        self.errors: list[wire.ProtocolError] = []      # frames from the edge that failed validation
        self._changed = asyncio.Condition()
        self._qids = itertools.count(1)
        self.closed = asyncio.Event()

    async def _received(self, frame: wire.Frame) -> None:
        async with self._changed:
            self.frames.append(frame)
            self._changed.notify_all()

    async def send(self, frame: wire.Frame | str, **fields: Any) -> None:
        if isinstance(frame, str):
            frame = wire.make(frame, **fields)
        await self.ws.send_bytes(wire.encode(frame))

    async def send_raw(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def send_text(self, text: str) -> None:
        await self.ws.send_str(text)

    async def drop(self) -> None:
        """Cut the socket without a closing handshake (as a network failure would)."""
        transport = self.ws._req.transport if self.ws._req is not None else None
        if transport is not None:
            transport.abort()
        await self.closed.wait()

    async def close(self, code: int = 1000) -> None:
        await self.ws.close(code=code)

    async def wait_for(self, predicate: Callable[[wire.Frame], bool], timeout: float = 10.0,
                       start: int = 0) -> wire.Frame:
        """The first frame (from index `start`) satisfying `predicate`, waiting for it."""
        async def find():
            async with self._changed:
                while True:
                    for frame in self.frames[start:]:
                        if predicate(frame):
                            return frame
                    if self.closed.is_set():
                        raise ConnectionError(f"{self.edge} disconnected")
                    await self._changed.wait()
        return await asyncio.wait_for(find(), timeout)

    async def next(self, t: str, timeout: float = 10.0, start: int | None = None, **match: Any) -> wire.Frame:
        return await self.wait_for(lambda f: f.t == t and all(f.get(k) == v for k, v in match.items()),
                                   timeout, len(self.frames) if start is None else start)

    def of_type(self, t: str, **match: Any) -> list[wire.Frame]:
        return [f for f in self.frames if f.t == t and all(f.get(k) == v for k, v in match.items())]

    # -- queries --------------------------------------------------------------------------------
    async def start_query(self, source: str, *, qid: str | None = None, credit: int = 1 << 30,
                          limits: dict | None = None, **extra: Any) -> str:
        qid = qid or f"q-{next(self._qids)}"
        await self.send("query", qid=qid, source=source, limits=limits or {}, credit=credit, **extra)
        return qid

    async def run_query(self, source: str, *, timeout: float = 20.0, **options: Any) -> tuple[list, wire.Frame]:
        """Run a query with plenty of credit; (rows, end frame)."""
        start = len(self.frames)
        qid = await self.start_query(source, **options)
        end = await self.wait_for(lambda f: f.t == "end" and f["qid"] == qid, timeout, start)
        return self.rows_of(qid, start), end

    def rows_of(self, qid: str, start: int = 0) -> list:
        rows = []
        for frame in self.frames[start:]:
            if frame.t == "rows" and frame["qid"] == qid:
                rows.extend(wire.rows_of(frame["n"], frame["cols"]))
        return rows

    # -- deployments ----------------------------------------------------------------------------
    async def deploy(self, did: str, data: bytes, model: str, version: str, *, chunk_bytes: int = 1 << 20,
                     order: list[int] | None = None, sha256: str | None = None, wait: bool = True,
                     timeout: float = 30.0) -> wire.Frame | None:
        pieces = [data[i:i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or [b""]
        start = len(self.frames)
        digest = sha256 or hashlib.sha256(data).hexdigest()
        for i in (order if order is not None else range(len(pieces))):
            await self.send("deploy", did=did, model=model, version=version, sha256=digest, size=len(data),
                            chunk=i, chunks=len(pieces), data=pieces[i])
        if not wait:
            return None
        return await self.answer(did, start, timeout)

    async def answer(self, did: str, start: int = 0, timeout: float = 30.0) -> wire.Frame:
        return await self.wait_for(lambda f: f.t in ("ack", "nack") and f["did"] == did, timeout, start)


class FakeFederation:
    """An aiohttp server on 127.0.0.1 with the edge side of docs/protocol.md (module docstring)."""

    def __init__(self, *, tokens: dict[str, str] | None = None, heartbeat_s: float = 1.0,
                 ack_publish: bool = True, ack_every: int = 1, accept: Callable[[wire.Frame], str | None] | None = None,
                 answer_pings: bool = True, admin_token: str | None = None, max_frame: int | None = None,
                 max_msg_size: int = wire.MAX_FRAME_BYTES + (1 << 20)):
        self.tokens = tokens                  # token → edge id; None: any token, any edge
        self.heartbeat_s = heartbeat_s
        self.ack_publish = ack_publish
        self.ack_every = max(1, ack_every)
        self.accept = accept                  # hello → None (accept) or the reason to refuse
        self.answer_pings = answer_pings      # False: a federation that went silent
        self.max_frame = max_frame            # announced in welcome
        self.admin_token = admin_token        # enables POST /v1/edges (provisioning)
        self.provisioned: dict[str, dict] = {}
        self.max_msg_size = max_msg_size
        self.receiver = wire.PublishReceiver()
        self.published: dict[str, list[dict]] = {}      # edge → accepted records, in order
        self.publish_frames: dict[str, int] = {}        # edge → publish frames received (duplicates too)
        self.connections: dict[str, FakeConnection] = {}
        self.history: list[FakeConnection] = []
        self.refused_auth = 0
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.ssl_context = None

    @property
    def url(self) -> str:
        return f"{'wss' if self.ssl_context is not None else 'ws'}://127.0.0.1:{self.port}"

    async def start(self, port: int = 0, ssl_context=None) -> str:
        """Listen (again, on the same port after a stop); `ssl_context` serves wss://."""
        if ssl_context is not None:
            self.ssl_context = ssl_context
        app = web.Application()
        app.router.add_get("/v1/edges/connect", self._connect)
        app.router.add_post("/v1/edges", self._provision)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port or self.port or 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self.url

    async def stop(self) -> None:
        """Stop listening and drop every connection (the federation went away)."""
        for conn in list(self.connections.values()):
            transport = conn.ws._req.transport if conn.ws._req is not None else None
            if transport is not None:
                transport.abort()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def connection(self, edge: str, timeout: float = 15.0, newer_than: FakeConnection | None = None
                         ) -> FakeConnection:
        """The edge's welcomed connection (a newer one than `newer_than`, when given)."""
        async def find():
            async with self._arrived:
                while True:
                    conn = self.connections.get(edge)
                    if conn is not None and conn is not newer_than and not conn.closed.is_set():
                        return conn
                    await self._arrived.wait()
        return await asyncio.wait_for(find(), timeout)

    def values(self, edge: str) -> list:
        """Every row published by the edge (accepted records, in order)."""
        return [row for record in self.published.get(edge, []) for row in record["rows"]]

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else request.query.get("access_token")
        bound = None
        if self.tokens is not None:
            bound = self.tokens.get(token or "")
            if bound is None:
                self.refused_auth += 1
                raise web.HTTPUnauthorized(text="unknown device token")
        ws = web.WebSocketResponse(max_msg_size=self.max_msg_size, autoping=True)
        await ws.prepare(request)
        first = await ws.receive()
        if first.type != WSMsgType.BINARY:
            await ws.close(code=wire.CLOSE_CODES["protocol_error"])
            return ws
        try:
            hello = wire.decode(first.data, accept=wire.FROM_EDGE)
        except wire.ProtocolError as exc:
            if exc.code == "unsupported_version":
                await ws.send_bytes(wire.version_error(exc.version))
                await ws.close(code=wire.CLOSE_CODES["unsupported_version"])
            else:
                await ws.send_bytes(wire.encode(wire.error_frame(exc, fatal=True)))
                await ws.close(code=wire.CLOSE_CODES["protocol_error"])
            return ws
        if hello.t != "hello":
            await ws.send_bytes(wire.encode(wire.error_frame("no_hello", "the first frame must be hello", fatal=True)))
            await ws.close(code=wire.CLOSE_CODES["protocol_error"])
            return ws
        edge = hello["edge"]
        refusal = None
        if bound is not None and bound != edge:
            refusal = f"this token belongs to {bound}, not {edge}"
        elif self.accept is not None:
            refusal = self.accept(hello)
        if refusal is not None:
            await ws.send_bytes(wire.encode(wire.make("welcome", accepted=False, server_time=time.time(),
                                                      heartbeat_s=self.heartbeat_s, publish_acked=0, reason=refusal)))
            await ws.close(code=wire.CLOSE_CODES["unauthorized"])
            return ws
        resume = hello.get("resume") or {}
        acked = self.receiver.hello(edge, resume.get("log"))
        older = self.connections.get(edge)
        if older is not None:
            await older.close(wire.CLOSE_CODES["replaced"])
        conn = FakeConnection(self, ws, hello)
        await ws.send_bytes(wire.encode(wire.make("welcome", accepted=True, server_time=time.time(),
                                                  heartbeat_s=self.heartbeat_s, publish_acked=acked, edge=edge,
                                                  **({"max_frame": self.max_frame} if self.max_frame else {}))))
        async with self._arrived:
            self.connections[edge] = conn
            self.history.append(conn)
            self._arrived.notify_all()
        await conn._received(hello)
        unacked = 0
        try:
            async for message in ws:
                if message.type != WSMsgType.BINARY:
                    continue
                try:
                    frame = wire.decode(message.data, accept=wire.FROM_EDGE)
                except wire.ProtocolError as exc:
                    conn.errors.append(exc)
                    continue
                if frame.t == "ping" and self.answer_pings:
                    await ws.send_bytes(wire.encode(wire.make("pong", nonce=frame["nonce"],
                                                              **({"time": frame["time"]} if "time" in frame else {}))))
                elif frame.t == "publish":
                    self._publish(edge, frame)
                    unacked += 1
                    if self.ack_publish and unacked >= self.ack_every:
                        unacked = 0
                        await ws.send_bytes(wire.encode(wire.make("publish_ack", upto=self.receiver.last(edge))))
                await conn._received(frame)
        finally:
            conn.closed.set()
            async with conn._changed:
                conn._changed.notify_all()
            async with self._arrived:
                if self.connections.get(edge) is conn:
                    del self.connections[edge]
                self._arrived.notify_all()
        return ws

    async def _provision(self, request: web.Request) -> web.Response:
        if self.admin_token is None or request.headers.get("Authorization") != f"Bearer {self.admin_token}":
            raise web.HTTPUnauthorized(text="an admin token is needed")
        body = await request.json()
        batch = "devices" in body      # {"devices": [...]}: many in one request, all or none
        devices = body["devices"] if batch else [body]
        for device in devices:
            if device["id"] in self.provisioned:
                raise web.HTTPConflict(text=f"{device['id']} exists")
        made = []
        for device in devices:
            edge = device["id"]
            token = f"token-{edge}-{len(self.provisioned)}"
            self.provisioned[edge] = device
            if self.tokens is not None:
                self.tokens[token] = edge
            made.append({"id": edge, "token": token})
        return web.json_response({"edges": made} if batch else made[0], status=201)

    def _publish(self, edge: str, frame: wire.Frame) -> None:
        self.publish_frames[edge] = self.publish_frames.get(edge, 0) + 1
        if self.receiver.accept(edge, frame["seq"]):
            self.published.setdefault(edge, []).append({
                "seq": frame["seq"], "flow": frame["flow"], "dropped": frame.get("dropped", 0),
                "names": frame.get("names"), "rows": wire.rows_of(frame["n"], frame["cols"])})


# == bundles for tests =========================================================================
def make_keys(directory) -> tuple[str, str]:
    """An Ed25519 key pair in `directory`: (private key path, public key path)."""
    from pathlib import Path

    from streamql.models import keygen
    return keygen(str(Path(directory) / "signer"), overwrite=True)


def make_bundle(directory, *, name: str = "vib", version: str = "1.0.0", key: str | None = None,
                model: str = "m", bias: float = 0.5, requirements: dict | None = None,
                functions: str | None = None, autostart: dict[str, str] | None = None,
                tests: str | None = None, native: bool = False) -> bytes:
    """A packed (and, with `key`, signed) bundle: one 4 → 2 dense model with weights
    [[1, 1, 1, 1], [1, -1, 0, 0]] and bias [0, `bias`] (so predict(m, [0, 0, 0, 0]) = [0, bias]),
    `version()`-style function `<model>_version()`, an autostart query over `vibration`
    windows and a passing test, unless given otherwise."""
    import json
    from pathlib import Path

    from streamql import models
    from streamql.testing.tflite import fully_connected

    weights = [[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 0.0, 0.0]]
    root = Path(directory) / f"{name}-{version}"
    root.mkdir(parents=True, exist_ok=True)
    if native:
        spec = {"type": "dense", "layers": [{"weights": [list(c) for c in zip(*weights)], "bias": [0.0, bias],
                                             "activation": "linear"}]}
        (root / "model.json").write_text(json.dumps(spec))
        variant = {"id": "numpy", "kind": "native", "artifact": "model.json"}
    else:
        (root / "model.tflite").write_bytes(fully_connected(weights, [0.0, bias]))
        variant = {"id": "float32", "kind": "tflite", "artifact": "model.tflite"}
    manifest = {"format_version": 1, "name": name, "version": version,
                "requirements": {"signals": ["vibration"]} if requirements is None else requirements,
                "models": [{"name": model, "variants": [variant]}]}
    files = {
        "functions.sql": functions if functions is not None else
        f"create function {model}_version() -> Charstring as '{version}';\n",
        "tests/smoke.sql": tests if tests is not None else
        f"validate '{model} predicts' check predict('{model}', [1, 2, 3, 4]) => [10.0, {-1.0 + bias}];\n",
    }
    for path, text in (autostart if autostart is not None else {
            "autostart/scores.sql": f"select stream of predict('{model}', w) from Vector of Real w\n"
                                    f"  where w in winagg(signal_stream('vibration'), 4, 4);\n"}).items():
        files[path] = text
    manifest["scripts"] = ["functions.sql"]
    manifest["autostart"] = sorted(p for p in files if p.startswith("autostart/"))
    manifest["tests"] = ["tests/smoke.sql"]
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    packed = models.pack(str(root), str(root) + ".sqlbundle")
    if key is not None:
        models.sign(packed, key)
    return Path(packed).read_bytes()

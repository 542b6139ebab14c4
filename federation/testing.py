"""A scripted edge engine for tests and benchmarks: the edge's role of docs/protocol.md, built only
on `streamql.wire`, never on `edge_engine` (each side is tested against the contract).

    edge = FakeEdge(url, token, "wl-1", metadata={"region": "US"}, answer=lambda source, frame: rows)
    welcome = await edge.connect()
    edge.publish("alerts", [1.5, 2.5])            # store-and-forward: numbered, resent until acked
    await edge.send_health(cpu_percent=3.0)
    await edge.close()

It answers `query` frames with what `answer(source, frame)` returns — a list of rows, an iterable
or async iterable of batches (each a list of rows, or an `(n, cols)` pair) — honouring the credit
window exactly (`rows_sent` and `credit_given` let tests check it), with `end` ok, `error` when
`answer` raises a QueryError (its line/column kept), or `cancelled` after a `cancel`. It installs
deploy chunks (in any order, idempotent by `did`), rolls back and undeploys, answering ack/nack
with what is active; `install(model, version, data, variants)` may raise `Nack(code, reason)`.
With `autostart(model, version)` — the autostart queries of that bundle as a health frame reports
them, [{query, status, restarts?, error?}] — an ack names those queries and the bundle's model as
loaded, and a health frame showing them follows (as a real edge does); without it, acks name
nothing to watch (as older edges).
Every frame it receives is kept in `received` and queued in `inbox` for tests to inspect.
`await until(lambda: …)` waits for a condition of the event loop's world, generously.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import secrets
import ssl as ssl_module
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from streamql import wire
from streamql.errors import QueryError


async def until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition",
                step: float = 0.01) -> None:
    """Poll `predicate` on the event loop until it is true; an AssertionError after `timeout` s
    (generous: the box running the tests may be busy)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        await asyncio.sleep(step)


class Nack(Exception):
    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


class FakeEdge:
    def __init__(self, url: str, token: str, edge_id: str, *, metadata: dict | None = None,
                 capabilities: dict | None = None, models: dict | None = None, software: str = "fake-edge 1.0",
                 restarts: int = 0, answer: Callable | None = None, install: Callable | None = None,
                 ssl: ssl_module.SSLContext | bool = True, session: aiohttp.ClientSession | None = None,
                 log_id: str | None = None, versions: list[int] | None = None, auto: bool = True,
                 keep_frames: bool = True, autostart: Callable[[str, str], list[dict]] | None = None):
        self.url = url.rstrip("/") + "/v1/edges/connect" if not url.endswith("/v1/edges/connect") else url
        self.token, self.edge_id = token, edge_id
        self.metadata = dict(metadata or {})
        self.capabilities = dict(capabilities or {})
        self.models: dict[str, str] = dict(models or {})
        self.history: dict[str, list[str]] = {m: [v] for m, v in self.models.items()}
        self.software, self.restarts = software, restarts
        self.answer = answer or (lambda source, frame: [])
        self.install = install
        self.autostart = autostart
        self.ssl = ssl
        self.versions = versions or [1]
        self.auto = auto
        self.keep_frames = keep_frames
        self._session, self._own_session = session, session is None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.welcome: wire.Frame | None = None
        self.received: list[wire.Frame] = []
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._reader: asyncio.Task | None = None
        self._queries: dict[str, dict] = {}
        self._tasks: set[asyncio.Task] = set()
        # deployments
        self.chunks: dict[str, dict[int, bytes]] = {}
        self.done_dids: dict[str, dict] = {}
        self.installed: list[tuple[str, str, list[str]]] = []
        self.reply_deploys = True  # False: never answer deploy frames (to test timeouts)
        # publish (store and forward)
        self.log_id = log_id or secrets.token_hex(8)
        self.next_seq = 1
        self.buffer: list[tuple[int, dict]] = []  # (seq, publish fields), oldest first, until acked
        self.acked = 0
        self.sent_upto = 0
        self.drop_acks = False  # ignore publish_ack (as if they were lost)
        self.max_in_flight = 256
        # query statistics (for credit tests)
        self.rows_sent: dict[str, int] = {}
        self.credit_given: dict[str, int] = {}  # initial credit + every credit.add, per qid
        self.ended: dict[str, wire.Frame] = {}

    # --- connection --------------------------------------------------------------------------------
    def hello_fields(self) -> dict:
        fields = {"edge": self.edge_id, "software": self.software, "metadata": self.metadata,
                  "capabilities": self.capabilities, "models": dict(self.models), "restarts": self.restarts,
                  "versions": self.versions, "time": time.time()}
        if self.buffer or self.log_id:
            first = self.buffer[0][0] if self.buffer else self.next_seq
            fields["resume"] = {"log": self.log_id, "first": first, "last": self.next_seq - 1,
                                "count": len(self.buffer), "dropped": 0}
        return fields

    async def open(self) -> aiohttp.ClientWebSocketResponse:
        """Only the WebSocket (no hello): for tests that speak raw frames."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self.ws = await self._session.ws_connect(self.url, headers={"Authorization": f"Bearer {self.token}"},
                                                 max_msg_size=wire.MAX_FRAME_BYTES, ssl=self.ssl, autoping=True,
                                                 compress=0)
        self.closed.clear()
        return self.ws

    async def connect(self, **hello_overrides: Any) -> wire.Frame:
        """Open, say hello, read the welcome, then handle frames in the background; the welcome."""
        await self.open()
        fields = {**self.hello_fields(), **hello_overrides}
        await self.ws.send_bytes(wire.encode(wire.make("hello", **fields)))
        msg = await self.ws.receive(timeout=10)
        if msg.type is not aiohttp.WSMsgType.BINARY:
            await self._finish_close()
            raise ConnectionError(f"no welcome: {msg.type.name} {msg.data!r} {msg.extra!r}")
        frame = wire.decode(msg.data, accept=wire.FROM_FEDERATION)
        self.welcome = frame
        if frame.t != "welcome" or not frame["accepted"]:
            self.received.append(frame)
            await self._wait_close()
            return frame
        self.acked = max(self.acked, frame["publish_acked"])
        self._trim(self.acked)
        self.sent_upto = self.acked
        self._reader = asyncio.create_task(self._read(), name=f"fake-edge-{self.edge_id}")
        await self._pump_publish()
        return frame

    async def _wait_close(self) -> None:
        with contextlib.suppress(Exception):
            msg = await self.ws.receive(timeout=5)
            while msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                msg = await self.ws.receive(timeout=5)
        await self._finish_close()

    async def _finish_close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
            self.close_code = self.ws.close_code
        self.closed.set()

    async def close(self) -> None:
        """Close the link (queries running on it are cancelled, as a real edge does)."""
        for task in list(self._tasks):
            task.cancel()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        self._queries.clear()
        self.closed.set()

    async def shutdown(self) -> None:
        await self.close()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, frame: wire.Frame | dict | bytes) -> None:
        data = frame if isinstance(frame, bytes) else wire.encode(frame)
        await self.ws.send_bytes(data)

    async def receive(self, t: str | None = None, timeout: float = 5.0) -> wire.Frame:
        """The next received frame (of type `t`), skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await asyncio.wait_for(self.inbox.get(), max(0.001, deadline - time.monotonic()))
            if t is None or frame.t == t:
                return frame

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    continue
                try:
                    frame = wire.decode(msg.data, accept=wire.FROM_FEDERATION)
                except wire.ProtocolError as exc:
                    frame = wire.Frame("error", {"code": exc.code, "message": exc.reason})
                if self.keep_frames:
                    self.received.append(frame)
                    self.inbox.put_nowait(frame)
                if self.auto:
                    await self._handle(frame)
        finally:
            self.close_code = self.ws.close_code
            for task in list(self._tasks):
                task.cancel()
            self._queries.clear()
            self.closed.set()

    async def _handle(self, frame: wire.Frame) -> None:
        t = frame.t
        if t == "query":
            if frame["qid"] in self._queries:
                await self.send(wire.error_frame("duplicate_query", "already running", ref=frame["qid"]))
                return
            query = {"frame": frame, "window": wire.CreditWindow(frame["credit"]), "more": asyncio.Event(),
                     "cancelled": False}
            self.credit_given[frame["qid"]] = frame["credit"]
            self._queries[frame["qid"]] = query
            self._spawn(self._run_query(query))
        elif t == "credit":
            query = self._queries.get(frame["qid"])
            if query is not None:
                query["window"].add(frame["add"])
                self.credit_given[frame["qid"]] += frame["add"]
                query["more"].set()
        elif t == "cancel":
            query = self._queries.get(frame["qid"])
            if query is not None:
                query["cancelled"] = True
                query["more"].set()
        elif t == "deploy":
            await self._on_deploy(frame)
        elif t in ("rollback", "undeploy"):
            await self._on_change(frame)
        elif t == "publish_ack":
            if not self.drop_acks:
                self.acked = max(self.acked, frame["upto"])
                self._trim(self.acked)
                await self._pump_publish()
        elif t == "ping":
            fields = {"nonce": frame["nonce"]}
            if "time" in frame:
                fields["time"] = frame["time"]
            await self.send(wire.make("pong", **fields))

    # --- queries -----------------------------------------------------------------------------------
    async def _run_query(self, query: dict) -> None:
        frame = query["frame"]
        qid, window = frame["qid"], query["window"]
        batch_rows = frame.get("batch_rows") or 1024
        limit = (frame.get("limits") or {}).get("rows")
        self.rows_sent[qid] = 0
        sent, seq, outcome, error = 0, 0, "ok", None
        try:
            produced = self.answer(frame["source"], frame)
            if inspect.isawaitable(produced):
                produced = await produced
            async for n, cols in _batches(produced):
                for piece_n, piece in wire.split_columns(n, cols, batch_rows):
                    offset = 0
                    while offset < piece_n:
                        if query["cancelled"]:
                            outcome = "cancelled"
                            raise _Stop
                        if limit is not None and sent >= limit:
                            outcome = "limit"
                            raise _Stop
                        want = piece_n - offset if limit is None else min(piece_n - offset, limit - sent)
                        granted = window.take(want)
                        if granted == 0:
                            query["more"].clear()
                            await query["more"].wait()
                            continue
                        part = [c[offset:offset + granted] for c in piece]
                        await self.send(wire.make("rows", qid=qid, seq=seq, n=granted, cols=part))
                        seq += 1
                        sent += granted
                        offset += granted
                        self.rows_sent[qid] = sent
            if query["cancelled"]:
                outcome = "cancelled"
        except _Stop:
            pass
        except QueryError as exc:
            outcome, error = "error", {"kind": exc.kind, "message": exc.message, "line": exc.line, "column": exc.column}
        except asyncio.CancelledError:
            self._queries.pop(qid, None)
            raise
        except Exception as exc:  # noqa: BLE001 - a fake edge reports what broke
            outcome, error = "error", {"kind": "RuntimeError", "message": f"{type(exc).__name__}: {exc}"}
        self._queries.pop(qid, None)
        end = {"qid": qid, "outcome": outcome, "rows": sent}
        if error is not None:
            end["error"] = error
        with contextlib.suppress(Exception):
            await self.send(wire.make("end", **end))
        self.ended[qid] = wire.make("end", **end)

    # --- deployments -------------------------------------------------------------------------------
    async def _on_deploy(self, frame: wire.Frame) -> None:
        did = frame["did"]
        if did in self.done_dids:
            await self.send(wire.make("ack", did=did, model=frame["model"], version=frame["version"],
                                      active=dict(self.models)))
            return
        parts = self.chunks.setdefault(did, {})
        parts[frame["chunk"]] = frame["data"]
        if len(parts) < frame["chunks"]:
            return
        data = b"".join(parts[i] for i in range(frame["chunks"]))
        del self.chunks[did]
        if not self.reply_deploys:
            return
        model, version = frame["model"], frame["version"]
        try:
            if len(data) != frame["size"] or hashlib.sha256(data).hexdigest() != frame["sha256"]:
                raise Nack("hash", "the bundle does not match its sha256")
            if self.install is not None:
                done = self.install(model, version, data, frame.get("variants") or [])
                if inspect.isawaitable(done):
                    await done
        except Nack as exc:
            await self.send(wire.make("nack", did=did, code=exc.code, reason=exc.reason, model=model,
                                      active=dict(self.models)))
            return
        self.history.setdefault(model, [])
        if version in self.history[model]:
            self.history[model].remove(version)
        self.history[model].append(version)
        self.models[model] = version
        self.installed.append((model, version, list(frame.get("variants") or [])))
        self.done_dids[did] = {"model": model, "version": version}
        await self._ack(did, model, version)

    async def _ack(self, did: str, model: str, version: str | None) -> None:
        """An ack; with `autostart`, naming what to watch and followed by the health that shows it."""
        if self.autostart is None or version is None:
            await self.send(wire.make("ack", did=did, model=model, version=version, active=dict(self.models)))
            return
        queries = [{"bundle": model, "flow": None, "rows": 0, "restarts": 0, "error": None, **q}
                   for q in self.autostart(model, version)]
        loaded = {model.replace("-", "_"): version}
        await self.send(wire.make("ack", did=did, model=model, version=version, active=dict(self.models),
                                  autostart=[q["query"] for q in queries], loaded=loaded))
        await self.send_health(models=dict(self.models), loaded=loaded, autostart=queries)

    async def _on_change(self, frame: wire.Frame) -> None:
        did, model = frame["did"], frame["model"]
        if not self.reply_deploys:
            return
        if did in self.done_dids:
            await self.send(wire.make("ack", did=did, model=model, version=self.models.get(model),
                                      active=dict(self.models)))
            return
        if model not in self.models:
            await self.send(wire.make("nack", did=did, code="unknown_model", reason=f"no model {model!r}",
                                      model=model, active=dict(self.models)))
            return
        if frame.t == "undeploy":
            del self.models[model]
            self.history.pop(model, None)
        else:
            history = self.history[model]
            wanted = frame.get("version")
            if wanted is None:
                if len(history) < 2:
                    await self.send(wire.make("nack", did=did, code="install", reason="no previous version",
                                              model=model, active=dict(self.models)))
                    return
                history.pop()
                wanted = history[-1]
            elif wanted not in history:
                await self.send(wire.make("nack", did=did, code="install", reason=f"version {wanted} is not "
                                          "installed", model=model, active=dict(self.models)))
                return
            else:
                history.remove(wanted)
                history.append(wanted)
            self.models[model] = wanted
        self.done_dids[did] = {"model": model}
        await self._ack(did, model, self.models.get(model))

    # --- publish -----------------------------------------------------------------------------------
    def publish(self, flow: str, rows: list, *, width: int | None = None) -> int:
        """Append a record to the store-and-forward buffer (sent when connected); its sequence."""
        width = width or (len(rows[0]) if rows and isinstance(rows[0], tuple) else 1)
        n, cols = wire.columns_of(rows, width)
        seq = self.next_seq
        self.next_seq += 1
        self.buffer.append((seq, {"seq": seq, "flow": flow, "n": n, "cols": cols, "time": time.time()}))
        if self.ws is not None and not self.ws.closed and self.welcome is not None:
            self._spawn(self._pump_publish())
        return seq

    def _trim(self, upto: int) -> None:
        while self.buffer and self.buffer[0][0] <= upto:
            self.buffer.pop(0)

    async def _pump_publish(self) -> None:
        for seq, fields in list(self.buffer):
            if seq <= self.sent_upto:
                continue
            if seq - self.acked > self.max_in_flight or self.ws is None or self.ws.closed:
                return
            self.sent_upto = seq
            try:
                await self.send(wire.make("publish", **fields))
            except Exception:
                self.sent_upto = seq - 1
                return

    async def resend_published(self, seqs: list[int]) -> None:
        """Send some buffered records again (as after a lost ack)."""
        for seq, fields in self.buffer:
            if seq in seqs:
                await self.send(wire.make("publish", **fields))

    async def send_health(self, **fields: Any) -> None:
        base = {"time": time.time(), "uptime_s": 1.0, "restarts": self.restarts}
        await self.send(wire.make("health", **{**base, **fields}))


class _Stop(Exception):
    pass


async def _batches(produced: Any):
    """(n, cols) pairs from a list of rows, or an (async) iterable of batches."""
    if isinstance(produced, list):
        if produced:
            yield _as_columns(produced)
        return
    if hasattr(produced, "__aiter__"):
        async for batch in produced:
            if batch is not None and (not isinstance(batch, list) or batch):
                yield _as_columns(batch)
        return
    for batch in produced:
        if batch is not None and (not isinstance(batch, list) or batch):
            yield _as_columns(batch)


def _as_columns(batch: Any) -> tuple[int, list]:
    if isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[0], int):
        return batch
    rows = list(batch)
    width = len(rows[0]) if isinstance(rows[0], tuple) else 1
    return wire.columns_of(rows, width)


def make_bundle(directory, name: str, version: str, *, private_key=None, requirements: dict | None = None,
                variants: list[dict] | None = None, padding: int = 0, files: dict[str, str] | None = None) -> bytes:
    """A packed bundle (signed when `private_key` is given) of one native model named after the
    bundle, with `variants` (default one numpy variant), `padding` bytes of extra data (to make
    it as large as a benchmark wants) and `files` (path → text: scripts `*.sql`, `autostart/*.sql`)."""
    import json
    import os
    from pathlib import Path

    from streamql.models import bundle as bundles

    root = Path(directory) / f"{name}-{version}"
    (root / "models").mkdir(parents=True, exist_ok=True)
    spec = {"type": "linear_regression", "weights": [1.0, 2.0], "bias": 0.5}
    (root / "models" / "model.json").write_text(json.dumps(spec))
    if padding:
        (root / "data").mkdir(exist_ok=True)
        (root / "data" / "padding.bin").write_bytes(os.urandom(padding))
    for path, text in (files or {}).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    manifest = {"format_version": 1, "name": name, "version": version,
                "requirements": dict(requirements or {}),
                "models": [{"name": name.replace("-", "_"), "variants": variants or [
                    {"id": "numpy", "kind": "native", "artifact": "models/model.json", "requirements": {}}]}]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    packed = Path(directory) / f"{name}-{version}.bundle"
    bundles.pack(root, packed)
    if private_key is not None:
        bundles.sign(packed, private_key)
    return packed.read_bytes()

"""One edge's WebSocket, the federation side of docs/protocol.md: handshake, frames in, frames out.

`serve_edge` upgrades `GET /v1/edges/connect` (the device token was checked by the middleware),
waits for `hello`, checks that the token's device is the one announced, negotiates the version,
answers `welcome`, and then reads frames until the socket closes, handing each valid frame to the
hub (`EdgeHub.on_rows`, `on_end`, `on_health`, `on_reply`, `on_publish`, …). Bad frames are
answered with `error` frames as section 9 says and never end the connection by themselves; a
flood of them (100 within a minute) does.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from federation.auth import Principal
from federation.errors import BadRequest
from federation.http import track_websocket
from federation.keys import SESSIONS
from streamql import codec, wire

if TYPE_CHECKING:
    from federation.hub import EdgeHub, FragmentState

log = logging.getLogger("streamql.federation.hub")

MALFORMED_LIMIT = 100  # bad frames within a minute before the connection is closed
CLOSE_TIMEOUT_S = 5.0  # how long a close waits for the peer's close frame


class EdgeConnection:
    """A connected, welcomed edge: its socket, its running fragments, when it was last heard."""

    def __init__(self, hub: "EdgeHub", ws: web.WebSocketResponse, edge_id: str, version: int):
        self.hub, self.ws, self.edge_id, self.version = hub, ws, edge_id, version
        self.session = secrets.token_hex(8)
        self.fragments: dict[str, "FragmentState"] = {}
        self.last_frame = time.monotonic()
        self.last_seen = time.time()
        self.closing = False
        self.close_reason = "closed"
        self.rtt_ms: float | None = None
        self.frame_bytes = 0  # size of the frame being handled (the publish quota charges it)
        self.publish_hold: int | None = None  # a refused publish: frames are refused until one carries it
        self._bad: collections.deque[float] = collections.deque()
        self.transport = None   # the request's transport (set by serve_edge): abort() drops it

    def __repr__(self) -> str:
        return f"<EdgeConnection {self.edge_id} session={self.session}>"

    async def send(self, frame: wire.Frame | bytes) -> None:
        """Send a frame (validated and encoded here) or bytes already encoded."""
        from federation.hub import EdgeOffline

        data = frame if isinstance(frame, (bytes, bytearray)) else wire.encode(frame)
        if self.closing or self.ws.closed:
            raise EdgeOffline(self.edge_id, "dropped its link", dropped=True)
        try:
            await self.ws.send_bytes(data)
        except (ConnectionError, RuntimeError) as exc:  # the transport went away under us
            raise EdgeOffline(self.edge_id, f"dropped its link ({exc})", dropped=True) from None

    def post(self, frame: wire.Frame | bytes) -> None:
        """Send without waiting (from code that cannot await); a failure only means the edge left."""
        self.hub.spawn(self._send_quietly(frame), name=f"send-{self.edge_id}")

    async def _send_quietly(self, frame: wire.Frame | bytes) -> None:
        with contextlib.suppress(Exception):
            await self.send(frame)

    def abort(self) -> bool:
        """Drop the connection without waiting for the edge (shutdown, after the close frame had
        its chance); True when there was one to drop."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        self.closing = True
        transport.abort()
        return True

    async def close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        self.close_reason = reason
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=reason.encode()[:120])

    def malformed(self) -> bool:
        """Count a bad frame; True when the flood limit is reached."""
        now = time.monotonic()
        self._bad.append(now)
        while self._bad and now - self._bad[0] > 60:
            self._bad.popleft()
        return len(self._bad) >= MALFORMED_LIMIT


async def _send_raw(ws: web.WebSocketResponse, data: bytes) -> None:
    with contextlib.suppress(Exception):
        await ws.send_bytes(data)


async def _refuse(ws: web.WebSocketResponse, frame: wire.Frame | bytes, code: int, reason: str) -> None:
    await _send_raw(ws, frame if isinstance(frame, bytes) else wire.encode(frame))
    with contextlib.suppress(Exception):
        await ws.close(code=code, message=reason.encode()[:120])


def _welcome_refused(reason: str) -> wire.Frame:
    return wire.make("welcome", accepted=False, server_time=time.time(), heartbeat_s=5.0, publish_acked=0,
                     reason=reason)


async def serve_edge(hub: "EdgeHub", request: web.Request, principal: Principal) -> web.StreamResponse:
    ws = web.WebSocketResponse(max_msg_size=wire.MAX_FRAME_BYTES, compress=False, autoping=True,
                               timeout=CLOSE_TIMEOUT_S)
    if not ws.can_prepare(request).ok:
        raise BadRequest("GET /v1/edges/connect is the edge engines' WebSocket: it needs an Upgrade: websocket request")
    await ws.prepare(request)
    track_websocket(request, ws)
    conn = await _handshake(hub, ws, principal)
    if conn is None:
        return ws
    conn.transport = request.transport
    sessions = request.app[SESSIONS]

    async def revoked(reason: str) -> None:
        conn.close_reason = reason
        await conn.close(wire.CLOSE_CODES["unauthorized"], reason)

    session = sessions.open(principal.token_id, revoked, label=f"edge {conn.edge_id}")
    try:
        hub.connected(conn)
        await _read_frames(hub, conn)
    finally:
        sessions.close(session)
        conn.closing = True
        hub.detach(conn, conn.close_reason)
        if getattr(hub, "stopping", False):
            conn.abort()    # the close had its chance (EdgeHub.shutdown): waiting for it would hold up the stop
        elif not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()
    return ws


async def _handshake(hub: "EdgeHub", ws: web.WebSocketResponse, principal: Principal) -> EdgeConnection | None:
    """hello → welcome; None when the edge was refused (and the socket closed)."""
    protocol_error = wire.CLOSE_CODES["protocol_error"]
    try:
        msg = await ws.receive(timeout=hub.config.hello_timeout_s)
    except asyncio.TimeoutError:
        hub.m_connects.inc(result="no_hello")
        await _refuse(ws, wire.error_frame("no_hello", "no hello arrived in time", fatal=True), protocol_error,
                      "no hello")
        return None
    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
        hub.m_connects.inc(result="closed")
        return None
    try:
        if msg.type is not WSMsgType.BINARY:
            raise wire.ProtocolError("malformed", "a frame is one binary WebSocket message, not text")
        hello = wire.decode(msg.data, accept=wire.FROM_EDGE)
    except wire.ProtocolError as exc:
        hub.m_protocol.inc(code=exc.code)
        hub.m_connects.inc(result=exc.code)
        if exc.code == "unsupported_version":
            await _refuse(ws, wire.version_error(exc.version), wire.CLOSE_CODES["unsupported_version"],
                          "unsupported version")
        else:
            await _refuse(ws, wire.error_frame(exc, fatal=True), protocol_error, "bad hello")
        return None
    if hello.t != "hello":
        hub.m_connects.inc(result="no_hello")
        await _refuse(ws, wire.error_frame("no_hello", f"the first frame must be hello, not {hello.t}",
                                           ref=hello.t, fatal=True), protocol_error, "no hello")
        return None
    version = wire.negotiate(hello.get("versions") or [hello.v])
    if version is None:
        hub.m_connects.inc(result="unsupported_version")
        await _refuse(ws, wire.version_error(max(hello.get("versions") or [hello.v])),
                      wire.CLOSE_CODES["unsupported_version"], "unsupported version")
        return None
    edge_id = hello["edge"]
    oversized = hello_too_large(hello, len(msg.data), hub.config)
    if oversized is not None:
        hub.m_connects.inc(result="hello_too_large")
        log.warning("the hello of %s was refused: %s", edge_id, oversized)
        await _refuse(ws, _welcome_refused(oversized), wire.CLOSE_CODES["policy"], "hello too large")
        return None
    unauthorized = wire.CLOSE_CODES["unauthorized"]
    if not principal.may_act_as(edge_id):
        hub.m_connects.inc(result="impersonation")
        log.warning("a token of device %s said hello as %s: refused", principal.device_id, edge_id)
        await _refuse(ws, _welcome_refused(f"this token belongs to another device than {edge_id!r}"),
                      unauthorized, "token of another device")
        return None
    if getattr(hub, "stopping", False):
        hub.m_connects.inc(result="shutting_down")
        await _refuse(ws, _welcome_refused("the federation is shutting down"), wire.CLOSE_CODES["going_away"],
                      "shutting down")
        return None
    device = hub.registry.get_device(edge_id)
    if device is None:
        hub.m_connects.inc(result="unknown")
        await _refuse(ws, _welcome_refused(f"no device {edge_id!r} is registered"), unauthorized, "unknown edge")
        return None
    conn = EdgeConnection(hub, ws, edge_id, version)
    try:
        acked, replaced = hub.attach(conn, device, hello)
    except Exception as exc:  # the registry failed us (or the device was deleted meanwhile)
        log.exception("accepting the hello of %s failed", edge_id)
        hub.m_connects.inc(result="internal")
        await _refuse(ws, _welcome_refused(f"the federation could not accept the connection: {type(exc).__name__}"),
                      1011, "internal error")
        return None
    if replaced is not None:
        replaced.close_reason = "replaced by a newer connection"
        hub.spawn(replaced.close(wire.CLOSE_CODES["replaced"], "replaced by a newer connection"))
        hub.detach(replaced, "replaced by a newer connection")
    welcome = wire.make("welcome", accepted=True, server_time=time.time(), heartbeat_s=float(hub.config.heartbeat_s),
                        publish_acked=acked, max_frame=wire.MAX_FRAME_BYTES, edge=edge_id, session=conn.session)
    try:
        await conn.send(welcome)
    except Exception:
        conn.closing = True
        hub.detach(conn, "closed during the handshake")
        return None
    log.info("edge %s connected (protocol %d, %s)", edge_id, version, hello["software"])
    return conn


def hello_too_large(hello: wire.Frame, size: int, config) -> str | None:
    """Why a hello is refused for its size (None when it is fine): what it announces is stored in
    the registry and the selection index, so it is bounded in keys, value sizes and bytes."""
    if size > config.max_hello_bytes:
        return f"the hello is {size} bytes; at most {config.max_hello_bytes} are accepted"
    capabilities = hello["capabilities"]
    for what, values in (("metadata", hello["metadata"]), ("capabilities", capabilities)):
        if len(values) > config.max_hello_keys:
            return f"hello {what} has {len(values)} keys; at most {config.max_hello_keys} are accepted"
        for key, value in values.items():
            if key in ("signals", "runtimes") and what == "capabilities":
                continue
            if len(key) > 128:
                return f"a hello {what} key is {len(key)} characters; at most 128 are accepted"
            encoded = _json_size(value)
            if encoded > config.max_hello_value_bytes:
                return (f"hello {what}.{key} is {encoded} bytes; a value may have at most "
                        f"{config.max_hello_value_bytes}")
    signals = capabilities.get("signals") or []
    if len(signals) > config.max_hello_signals:
        return f"the hello announces {len(signals)} signals; at most {config.max_hello_signals} are accepted"
    if len(capabilities.get("runtimes") or {}) > config.max_hello_keys:
        return f"the hello announces more than {config.max_hello_keys} runtimes"
    return None


def _json_size(value: Any) -> int:
    try:
        return len(json.dumps(codec.to_plain(value), default=str))
    except (codec.CodecError, TypeError, ValueError, RecursionError):
        return len(repr(value))


_DISPATCH = {"rows": "on_rows", "end": "on_end", "health": "on_health", "ack": "on_reply", "nack": "on_reply",
             "publish": "on_publish", "error": "on_error"}


async def _read_frames(hub: "EdgeHub", conn: EdgeConnection) -> None:
    ws = conn.ws
    frames = hub.m_frames
    while True:
        msg = await ws.receive()
        if msg.type is WSMsgType.BINARY:
            conn.last_frame = time.monotonic()
            conn.last_seen = time.time()
            conn.frame_bytes = len(msg.data)
            _on_frame(hub, conn, msg.data, frames)
            if conn.closing:
                return
        elif msg.type is WSMsgType.TEXT:
            conn.last_frame = time.monotonic()
            _bad_frame(hub, conn, wire.ProtocolError("malformed", "a frame is one binary WebSocket message, not text"))
        elif msg.type is WSMsgType.ERROR:
            conn.close_reason = f"socket error: {msg.data}"
            if isinstance(msg.data, Exception) and getattr(msg.data, "code", None) == wire.CLOSE_CODES["too_large"]:
                hub.m_protocol.inc(code="too_large")
            return
        else:  # CLOSE, CLOSING, CLOSED
            if conn.close_reason == "closed":
                conn.close_reason = "the edge closed its link"
            return


def _on_frame(hub: "EdgeHub", conn: EdgeConnection, data: bytes, frames: Any) -> None:
    try:
        frame = wire.decode(data, accept=wire.FROM_EDGE)
    except wire.ProtocolError as exc:
        _bad_frame(hub, conn, exc, data)
        return
    frames.inc(type=frame.t)
    t = frame.t
    try:
        if t == "ping":
            pong = {"nonce": frame["nonce"]}
            if "time" in frame:
                pong["time"] = frame["time"]
            conn.post(wire.make("pong", **pong))
        elif t == "pong":
            sent = frame.get("time")
            if isinstance(sent, (int, float)):
                conn.rtt_ms = max(0.0, (time.time() - sent) * 1000.0)
        elif t == "hello":
            conn.post(wire.error_frame("unexpected_type", "hello is sent once per connection", ref="hello"))
        else:
            getattr(hub, _DISPATCH[t])(conn, frame)
    except Exception as exc:  # a valid frame we failed to handle: answer, keep the connection
        log.exception("handling a %s frame from %s failed", t, conn.edge_id)
        if t != "error":
            conn.post(wire.error_frame("internal", f"the federation failed handling this {t} frame: "
                                                   f"{type(exc).__name__}", ref=t))


def _frame_type(data: Any) -> str | None:
    with contextlib.suppress(Exception):
        document = codec.unpack(data)
        if isinstance(document, dict) and isinstance(document.get("t"), str):
            return document["t"]
    return None


def _bad_frame(hub: "EdgeHub", conn: EdgeConnection, exc: wire.ProtocolError, data: Any = None) -> None:
    hub.m_protocol.inc(code=exc.code)
    log.debug("bad frame from %s: %s", conn.edge_id, exc)
    if exc.code == "unsupported_version":
        conn.post(wire.version_error(exc.version))
        conn.close_reason = "spoke an unsupported protocol version"
        hub.spawn(conn.close(wire.CLOSE_CODES["unsupported_version"], "unsupported version"))
        return
    if exc.code == "too_large":
        conn.post(wire.error_frame(exc, fatal=True))
        hub.spawn(conn.close(wire.CLOSE_CODES["too_large"], "frame too large"))
        return
    if _frame_type(data) != "error":  # an error frame is never answered with an error frame
        conn.post(wire.error_frame(exc))
    if conn.malformed():
        conn.close_reason = f"sent {MALFORMED_LIMIT} bad frames within a minute"
        hub.spawn(conn.close(wire.CLOSE_CODES["protocol_error"], "too many bad frames"))

"""The edge's WebSocket link to the federation: connect, handshake, heartbeat, reconnect.

`Link.run()` keeps one connection up for as long as the daemon runs (docs/protocol.md §1, §4,
§5, §9):

- connects to `{federation}/v1/edges/connect` with `Authorization: Bearer <device token>`;
- sends `hello`, expects `welcome` (refused: `accepted: false`, `unsupported_version`, 401 — each
  logged, then retried with backoff);
- every `heartbeat_s` (the federation's, from `welcome`) sends `health` and a `ping`, answers
  pings with pongs and keeps the round-trip times of its own pings;
- closes and reconnects when nothing arrived for 3 × `heartbeat_s`;
- between attempts waits `uniform(0, min(max_s, initial_s · 2^n))` (full jitter), with n reset
  once a connection has lasted a minute;
- answers what it cannot accept with an `error` frame and goes on (never answering an `error`
  with an `error`); a frame in an unknown version gets the v1 `unsupported_version` error and
  close 4001; one over the size limit a fatal `too_large` and close 1009; after 100 bad frames in
  a minute it closes with 4000. Nothing the federation sends stops the daemon.

The daemon behind it is a `LinkHandler`: `hello()`, `connected(conn, welcome)`, `handle(conn,
frame)`, `health()`, `disconnected()`.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import ssl
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from streamql import codec, wire
from streamql.clock import SYSTEM_CLOCK, Clock

from .config import Reconnect
from .health import LinkStats

__all__ = ["Link", "Connection", "LinkHandler", "connect_url", "backoff_delay", "tls_context"]

CONNECT_PATH = "/v1/edges/connect"
STABLE_AFTER_S = 60.0
MAX_BAD_FRAMES = 100
MAX_MESSAGE = wire.MAX_FRAME_BYTES + (1 << 20)   # a little over the limit, so too_large is ours to answer


def connect_url(federation: str) -> str:
    """`ws://host:8080/v1/edges/connect` from a federation URL (http(s) or ws(s), with or without the path)."""
    parts = urlsplit(federation)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if not path.endswith(CONNECT_PATH):
        path += CONNECT_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def tls_context(tls) -> ssl.SSLContext | None:
    """The TLS context of a `Tls` setting (CA file, client certificate); None: aiohttp's default."""
    if tls is None or (tls.ca_file is None and tls.cert_file is None):
        return None
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    return context


def backoff_delay(attempt: int, reconnect: Reconnect, rng: random.Random) -> float:
    """Full jitter: uniform(0, min(max_s, initial_s · 2^attempt))."""
    return rng.uniform(0.0, min(reconnect.max_s, reconnect.initial_s * (2 ** min(attempt, 30))))


class LinkHandler(Protocol):
    def hello(self) -> dict: ...
    async def connected(self, conn: "Connection", welcome: wire.Frame) -> None: ...
    async def handle(self, conn: "Connection", frame: wire.Frame) -> None: ...
    def health(self) -> dict: ...
    async def disconnected(self, conn: "Connection") -> None: ...
    # optional: over_quota(seq, hold, retry_after_s, message), an `error {code: over_quota}` (§8)


class Refused(Exception):
    """The federation would not have this connection (welcome refused, version, auth)."""


class Connection:
    """One WebSocket to the federation: sending frames in order, closing."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, stats: LinkStats, log: logging.Logger):
        self.ws = ws
        self.stats = stats
        self.log = log
        self._lock = asyncio.Lock()
        self.closed = False
        self.close_reason: str | None = None
        self.welcome: wire.Frame | None = None

    async def send(self, frame: wire.Frame) -> None:
        await self.send_bytes(wire.encode(frame))

    async def send_bytes(self, data: bytes) -> None:
        async with self._lock:
            if self.closed or self.ws.closed:
                raise ConnectionResetError("the connection to the federation is closed")
            await self.ws.send_bytes(data)
            self.stats.sent(len(data))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = f"closed by this edge ({code} {reason})".strip()
            try:
                await self.ws.close(code=code, message=reason.encode()[:120])
            except Exception:  # noqa: BLE001 - closing a broken socket
                pass


class Link:
    """Keeps the connection to the federation (see the module docstring)."""

    def __init__(self, handler: LinkHandler, federation: str, token: str | None, *,
                 reconnect: Reconnect | None = None, heartbeat_s: float = 5.0,
                 session: aiohttp.ClientSession | None = None, clock: Clock = SYSTEM_CLOCK,
                 stats: LinkStats | None = None, rng: random.Random | None = None,
                 log: logging.Logger | None = None, handshake_timeout_s: float = 10.0, tls=None,
                 start_delay_s: float = 0.0, gate: asyncio.Semaphore | None = None, heartbeat_jitter: float = 0.0):
        self.handler = handler
        self.url = connect_url(federation)
        self.token = token
        self.reconnect = reconnect or Reconnect()
        self.configured_heartbeat_s = heartbeat_s
        self.heartbeat_s = heartbeat_s
        self.clock = clock
        self.stats = stats or LinkStats(clock)
        self.rng = rng or random.Random()
        self.log = log or logging.getLogger("streamql.edge.link")
        self.handshake_timeout_s = handshake_timeout_s
        self.ssl = tls_context(tls) if self.url.startswith("wss:") else None
        self._session = session
        self._own_session = session is None
        self._stopping = asyncio.Event()
        self.connection: Connection | None = None
        self.connected = asyncio.Event()       # set while a welcomed connection is up
        self.attempts = 0                      # failed attempts in a row (the backoff's n)
        self.last_error: str | None = None
        self._nonce = 0
        self._pings: dict[int, float] = {}
        self._bad: collections.deque[float] = collections.deque()
        # many edges in one process (a simulated fleet): the first attempt waits `start_delay_s`
        # and at most `gate`'s value of handshakes run at once, so thousands of hellos arrive as
        # a ramp the federation keeps up with instead of a stampede
        self.start_delay_s = start_delay_s
        self.gate = gate
        self.heartbeat_jitter = heartbeat_jitter   # each beat up to this fraction early: phases spread

    # == the loop ===============================================================================
    async def run(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            if self.start_delay_s > 0:
                try:
                    await asyncio.wait_for(self._stopping.wait(), self.start_delay_s)
                except asyncio.TimeoutError:
                    pass
            while not self._stopping.is_set():
                up_since = None
                try:
                    up_since = await self._connect_once()
                except asyncio.CancelledError:
                    raise
                except Refused as exc:
                    self._failed(f"refused: {exc}")
                except aiohttp.WSServerHandshakeError as exc:
                    self._failed(f"handshake refused: HTTP {exc.status} {exc.message}")
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ConnectionError) as exc:
                    self._failed(f"{type(exc).__name__}: {exc}")
                except Exception as exc:  # noqa: BLE001 - the link must outlive any bug in a handler
                    self.log.exception("link to %s failed", self.url)
                    self._failed(f"{type(exc).__name__}: {exc}")
                if self._stopping.is_set():
                    break
                if up_since is not None and self.clock.monotonic() - up_since >= STABLE_AFTER_S:
                    self.attempts = 0
                delay = backoff_delay(self.attempts, self.reconnect, self.rng)
                self.attempts += 1
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                except asyncio.TimeoutError:
                    pass
        finally:
            if self._own_session and self._session is not None:
                await self._session.close()

    def _failed(self, message: str) -> None:
        self.last_error = message
        level = logging.INFO if self.attempts < 3 else logging.WARNING
        self.log.log(level, "federation %s: %s (attempt %d)", self.url, message, self.attempts + 1)

    async def stop(self) -> None:
        self._stopping.set()
        conn = self.connection
        if conn is not None:
            await conn.close(wire.CLOSE_CODES["going_away"], "shutting down")

    async def _connect_once(self) -> float | None:
        if self.gate is None:
            return await self._connect_and_run(None)
        await self.gate.acquire()
        try:
            if self._stopping.is_set():    # stopped while waiting for its turn
                return None
            return await self._connect_and_run(self.gate)
        finally:   # released at the welcome already, or here when the handshake failed
            if self._holding_gate:
                self._holding_gate = False
                self.gate.release()

    _holding_gate = False

    async def _connect_and_run(self, gate: asyncio.Semaphore | None) -> float | None:
        self._holding_gate = gate is not None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        options = {"ssl": self.ssl} if self.ssl is not None else {}
        ws = await self._session.ws_connect(
            self.url, headers=headers, max_msg_size=MAX_MESSAGE, autoping=True, heartbeat=None,
            compress=0, timeout=aiohttp.ClientWSTimeout(ws_close=2.0), autoclose=True, **options)
        conn = Connection(ws, self.stats, self.log)
        self.connection = conn
        self._bad.clear()
        self._pings.clear()
        up_since = None
        try:
            await conn.send(wire.make("hello", **self.handler.hello()))
            welcome = await self._welcome(conn)
            if self._holding_gate:
                self._holding_gate = False
                gate.release()
            conn.welcome = welcome
            if self._stopping.is_set():    # stopped during the handshake: leave at once
                await conn.close(wire.CLOSE_CODES["going_away"], "shutting down")
                return None
            self.heartbeat_s = min(3600.0, max(0.1, float(welcome["heartbeat_s"])))   # whatever it says
            up_since = self.clock.monotonic()
            self.stats.connected()
            self.last_heard = self.clock.monotonic()
            self.connected.set()
            self.log.info("connected to %s (heartbeat %g s, %d records acknowledged)", self.url,
                          self.heartbeat_s, welcome["publish_acked"])
            await self.handler.connected(conn, welcome)
            beat = asyncio.get_running_loop().create_task(self._heartbeat(conn))
            try:
                await self._receive(conn)
            finally:
                beat.cancel()
                try:
                    await beat
                except (asyncio.CancelledError, Exception):  # noqa: BLE001
                    pass
            reason = conn.close_reason or f"closed by the federation ({ws.close_code})"
            if ws.close_code == wire.CLOSE_CODES["replaced"]:
                reason = "replaced by a newer connection of this edge"
            self.last_error = reason
            self.log.info("federation connection %s", reason)
        finally:
            self.connected.clear()
            self.connection = None
            await conn.close()
            self.stats.disconnected(self.last_error or "closed")
            if up_since is not None:
                await self.handler.disconnected(conn)
        return up_since

    async def _welcome(self, conn: Connection) -> wire.Frame:
        try:
            message = await conn.ws.receive(timeout=self.handshake_timeout_s)
        except asyncio.TimeoutError:
            raise Refused("no welcome within the handshake timeout") from None
        if message.type != aiohttp.WSMsgType.BINARY:
            raise Refused(f"the connection closed before welcome ({message.type.name}, {conn.ws.close_code})")
        self.stats.received(len(message.data))
        try:
            frame = wire.decode(message.data, accept=wire.FROM_FEDERATION)
        except wire.ProtocolError as exc:
            await self._bad_frame(conn, message.data, exc)
            raise Refused(f"bad first frame: {exc}") from None
        if frame.t == "error":
            if frame["code"] == "unsupported_version":
                raise Refused(f"the federation speaks protocol versions {frame.get('supported')}, this edge "
                              f"{list(wire.SUPPORTED_VERSIONS)}")
            raise Refused(f"{frame['code']}: {frame['message']}")
        if frame.t != "welcome":
            await conn.send(wire.error_frame("unexpected_type", f"expected welcome, got {frame.t}", ref=frame.t))
            raise Refused(f"expected welcome, got {frame.t}")
        if not frame["accepted"]:
            raise Refused(frame.get("reason") or "not accepted")
        return frame

    # == receiving ==============================================================================
    async def _receive(self, conn: Connection) -> None:
        ws = conn.ws
        while not conn.closed:
            message = await ws.receive()
            kind = message.type
            if kind == aiohttp.WSMsgType.BINARY:
                self.last_heard = self.clock.monotonic()
                self.stats.received(len(message.data))
                await self._frame(conn, message.data)
            elif kind == aiohttp.WSMsgType.TEXT:
                self.last_heard = self.clock.monotonic()
                await self._bad_frame(conn, None, wire.ProtocolError("malformed", "a text message is not a frame"))
            elif kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return
            elif kind == aiohttp.WSMsgType.ERROR:
                exc = ws.exception()
                self.last_error = f"socket error: {exc}"
                self.log.warning("federation connection error: %s", exc)
                return

    async def _frame(self, conn: Connection, data: bytes) -> None:
        try:
            frame = wire.decode(data, accept=wire.FROM_FEDERATION)
        except wire.ProtocolError as exc:
            await self._bad_frame(conn, data, exc)
            return
        t = frame.t
        if t == "ping":
            pong = {"nonce": frame["nonce"]}
            if "time" in frame:
                pong["time"] = frame["time"]
            await self._send_quietly(conn, wire.make("pong", **pong))
        elif t == "pong":
            sent = self._pings.pop(frame["nonce"], None)
            if sent is not None:
                self.stats.record_rtt(self.clock.monotonic() - sent)
        elif t == "error" and frame["code"] == "over_quota":
            over_quota = getattr(self.handler, "over_quota", None)
            if over_quota is not None and isinstance(frame.get("ref"), int):
                over_quota(frame["ref"], frame.get("hold") or 0, frame.get("retry_after_s") or 1.0, frame["message"])
        elif t == "error":
            self.log.warning("the federation reports %s: %s (ref %r)", frame["code"], frame["message"], frame.get("ref"))
            if frame["code"] == "unsupported_version":
                self.log.warning("the federation speaks versions %s; this edge %s", frame.get("supported"),
                                 list(wire.SUPPORTED_VERSIONS))
                await conn.close(wire.CLOSE_CODES["unsupported_version"], "unsupported version")
            elif frame.get("fatal"):
                await conn.close(wire.CLOSE_CODES["protocol_error"], "fatal error from the federation")
        elif t == "welcome":
            self.log.info("a second welcome on one connection ignored")
        else:
            try:
                await self.handler.handle(conn, frame)
            except Exception as exc:  # noqa: BLE001 - a handler bug answers `internal`, the link stays
                self.log.exception("handling a %s frame failed", t)
                ref = frame.get("qid") or frame.get("did") or t
                await self._send_quietly(conn, wire.error_frame("internal", f"{type(exc).__name__}: {exc}"[:500],
                                                                ref=ref))

    async def _bad_frame(self, conn: Connection, data: bytes | None, exc: wire.ProtocolError) -> None:
        self.log.warning("bad frame from the federation: %s", exc)
        if exc.code == "unsupported_version":
            await self._send_bytes_quietly(conn, wire.version_error(exc.version))
            await conn.close(wire.CLOSE_CODES["unsupported_version"], "unsupported version")
            return
        if exc.code == "too_large":
            await self._send_quietly(conn, wire.error_frame(exc, fatal=True))
            await conn.close(wire.CLOSE_CODES["too_large"], "frame too large")
            return
        if _peek_type(data) != "error":    # never answer an error frame with an error frame
            await self._send_quietly(conn, wire.error_frame(exc))
        now = self.clock.monotonic()
        self._bad.append(now)
        while self._bad and now - self._bad[0] > 60.0:
            self._bad.popleft()
        if len(self._bad) >= MAX_BAD_FRAMES:
            self.log.warning("%d bad frames within a minute: closing the connection", len(self._bad))
            await conn.close(wire.CLOSE_CODES["protocol_error"], "too many bad frames")

    async def _send_quietly(self, conn: Connection, frame: wire.Frame) -> None:
        try:
            await conn.send(frame)
        except Exception as exc:  # noqa: BLE001 - the socket may be gone already
            self.log.debug("could not send %s: %s", frame.t, exc)

    async def _send_bytes_quietly(self, conn: Connection, data: bytes) -> None:
        try:
            await conn.send_bytes(data)
        except Exception as exc:  # noqa: BLE001
            self.log.debug("could not send: %s", exc)

    # == heartbeat and liveness =================================================================
    async def _heartbeat(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        due = None
        while not conn.closed:
            silent = self.clock.monotonic() - self.last_heard
            # woken a heartbeat or more late, this edge's own loop was held (a busy device, or a
            # simulator process with 2,500 edges): frames may wait unread in its socket, so the
            # silence is judged at the next beat, once the reader had its turn
            held = due is not None and loop.time() - due >= self.heartbeat_s
            if silent > 3 * self.heartbeat_s and not held:
                self.log.warning("no frame from the federation for %.1f s: reconnecting", silent)
                await conn.close(wire.CLOSE_CODES["going_away"], f"nothing heard for {silent:.1f} s")
                return
            try:
                await conn.send(wire.make("health", **self.handler.health()))
                self._nonce += 1
                self._pings[self._nonce] = self.clock.monotonic()
                while len(self._pings) > 16:
                    self._pings.pop(next(iter(self._pings)))
                await conn.send(wire.make("ping", nonce=self._nonce, time=self.clock.now()))
            except wire.ProtocolError:
                self.log.exception("a health frame failed validation")
            except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
                self.log.debug("heartbeat not sent: %s", exc)
                return
            jitter = self.rng.uniform(0.0, self.heartbeat_jitter) if self.heartbeat_jitter else 0.0
            due = loop.time() + self.heartbeat_s * (1.0 - jitter)
            await asyncio.sleep(self.heartbeat_s * (1.0 - jitter))


def _peek_type(data: bytes | None) -> Any:
    """The `t` of a frame that failed validation, when it can be read at all."""
    if data is None or len(data) > wire.MAX_FRAME_BYTES:
        return None
    try:
        document = codec.unpack(data)
    except Exception:  # noqa: BLE001 - hostile bytes
        return None
    return document.get("t") if isinstance(document, dict) else None

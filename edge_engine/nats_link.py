"""The edge's link to the federation over NATS: the same `LinkHandler` contract as the WebSocket
link (edge_engine/link.py), the same frames, another carrier (federation/nats_subjects.py).

- connects to every given server (nats-py fails over between them, and back), authenticating
  with the device token, its inbox under `_INBOX_<edge>` (what the per-edge permissions allow);
- a session starts with `hello` sent as a request on `sql.up.<edge>.all`: the first node's
  `welcome` answers it (no node up, or refused: retried with backoff). It ends when the NATS
  connection drops (a new hello follows the reconnection) or the link stops (`bye`);
- frames arrive on `sql.down.<edge>`, each with the reply subject `sql.up.<edge>.<node>` of the
  node that sent it: rows, `end`, errors and acks go back to that node; health goes to all nodes
  and into the presence bucket (with the hello, so nodes starting later know this edge);
- a fragment lives as long as its node renews it: a node silent for the `Sql-Lease` of its query
  (any frame counts; nodes ping) gets its fragments cancelled here;
- `publish` frames go to JetStream (`sql.pub.<edge>`, `Nats-Msg-Id` edge:log:seq), one at a time
  in order; each stored record is acknowledged to the daemon as a `publish_ack`.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import random
import time
from typing import Any

import nats
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js.errors import NotFoundError

from streamql import nats_subjects as subjects
from streamql import codec, wire
from streamql.frame_keys import peek

from .config import Reconnect
from .health import LinkStats
from .nats_handshake import finish_slow_authorization
from .link import LinkHandler, backoff_delay

__all__ = ["NatsLink", "NatsConnection"]

DEFAULT_LEASE_S = 15.0
LEASE_HEADER = "Sql-Lease"
LOG_HEADER = "Sql-Log"
KIND_HEADER = "Sql-Kind"
BUNDLE_HEADER = "Sql-Bundle"
RUN_HEADER = "Sql-Run"
# how long a hello waits for its welcome: a busy node answers late (10,000 edges' health before it
# on its subscription), and a hello sent again is one more for every node to check and write
# (a fleet connecting at 5 s re-sent 6,000 of 10,000 hellos, each node answering all of them)
# the connect, authorization included: the federation's generated server configuration gives its
# auth callout 8 s (federation/nats_config.py AUTH_TIMEOUT_S), busy at a connect storm of thousands
CONNECT_TIMEOUT_S = 10.0
HELLO_TIMEOUT_S = 20.0
GET_ATTEMPTS = 6        # an object store read that timed out is asked again (see _get_msg) ...
GET_RETRY_S = 0.5       # ... after this long, doubled each time (the whole fetch has 120 s)


async def fetch_object(js: Any, bucket: str, name: str) -> bytes:
    """An object of a NATS object store read with direct gets (its description, then each chunk by
    `next_by_subj`): stateless requests any server of the stream answers, where nats-py's
    `ObjectStore.get` makes a consumer per read — 10,000 edges fetching one bundle at once were
    10,000 consumers created and deleted on the server. The digest is checked as `get` does."""
    stream = f"OBJ_{bucket}"
    meta_subject = f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
    meta = await _get_msg(js, stream, subject=meta_subject)
    info = json.loads(meta.data)
    if info.get("deleted"):
        raise LookupError(f"object {name} was deleted")
    chunks, nuid = int(info.get("chunks") or 0), info.get("nuid")
    if not nuid:
        raise ValueError(f"object {name} has no chunks named")
    chunk_subject = f"$O.{bucket}.C.{nuid}"
    data, seq, digest = bytearray(), 1, hashlib.sha256()
    for _ in range(chunks):
        msg = await _get_msg(js, stream, seq=seq, subject=chunk_subject, next=True)
        data += msg.data or b""
        digest.update(msg.data or b"")
        seq = msg.seq + 1
    want = str(info.get("digest") or "")
    if want.upper().startswith("SHA-256="):
        if digest.digest() != base64.urlsafe_b64decode(want[len("SHA-256="):]):
            raise ValueError(f"object {name}: its chunks do not match its digest")
    if info.get("size") is not None and len(data) != int(info["size"]):
        raise ValueError(f"object {name}: {len(data)} bytes read, {info['size']} described")
    return bytes(data)


async def _get_msg(js: Any, stream: str, **where) -> Any:
    """A direct get; if it finds nothing, the same get from the stream's leader. A direct get may be
    answered by any replica, and with replicas > 1 one that has not yet applied the node's put
    answers "not found" (a three-server cluster's deployment failed so: tests/nats/test_nats_cluster.py).

    A get that times out or finds no responder is asked again, up to GET_ATTEMPTS times after a
    growing, jittered wait: a server answering 10,000 edges' fetches at once lets a few requests
    time out, and each was a device's deployment failed (43 of 10,000 in bench_scale's run)."""
    for attempt in range(GET_ATTEMPTS):
        try:
            try:
                return await js.get_msg(stream, direct=True, **where)
            except NotFoundError:
                return await js.get_msg(stream, **where)
        except (TimeoutError, NoRespondersError):   # nats-py's TimeoutError is one
            if attempt == GET_ATTEMPTS - 1:
                raise
            await asyncio.sleep(GET_RETRY_S * 2 ** attempt * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


class NatsConnection:
    """One session with the federation nodes over NATS (the daemon's `conn`)."""

    def __init__(self, link: "NatsLink", welcome: wire.Frame):
        self.link = link
        self.welcome = welcome
        self.closed = False
        self.close_reason: str | None = None
        self.routes: dict[str, str] = {}       # qid → reply subject of the node that asked
        self.routed = asyncio.Event()          # set when a fragment arrives: the lease check wakes
        self.leases: dict[str, float] = {}     # qid → lease seconds
        self.owners: dict[str, str] = {}       # qid → the node process that renews it (reply and run)
        self.deploys: dict[str, str] = {}      # did → reply subject
        self.current_reply: str | None = None  # of the frame being handled
        self._publish: asyncio.Queue = asyncio.Queue()
        self.ended = asyncio.Event()

    async def send(self, frame: wire.Frame) -> None:
        await self.send_bytes(wire.encode(frame, max_size=self.link.max_frame))

    async def send_bytes(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("the NATS session is closed")
        keys = peek(data, stop_at="cols")
        t = keys.get("t")
        if t == "publish":
            self._publish.put_nowait((keys.get("seq"), data))
            return
        subject = self._route(t, keys)
        if subject is None:
            return          # the node that asked is gone (its lease ran out): nobody to tell
        try:
            await self.link.nc.publish(subject, data)
            if t in ("ack", "nack"):
                self.link.hello_stale = True    # presence carries a hello naming what runs now
            if t in ("ack", "nack") and subject != self.link.up_all:
                # every node learns what now runs here (models, functions); the deploying node decides
                await self.link.nc.publish(self.link.up_all, data)
        except NatsError as exc:
            raise ConnectionResetError(f"NATS: {exc}") from None
        self.link.stats.sent(len(data))

    def _route(self, t: str | None, keys: dict) -> str | None:
        everyone = self.link.up_all
        if t in ("rows", "end"):
            qid = keys.get("qid")
            if t == "end":
                self.leases.pop(qid, None)
                self.owners.pop(qid, None)
                return self.routes.pop(qid, None)
            return self.routes.get(qid)
        if t in ("ack", "nack"):
            return self.deploys.get(keys.get("did")) or everyone
        if t in ("health", "hello"):
            return everyone
        if t == "error" and keys.get("ref") in self.routes:
            return self.routes[keys["ref"]]
        return self.current_reply or everyone

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = f"closed by this edge ({code} {reason})".strip()
            self.ended.set()

    async def publish_loop(self) -> None:
        """Records into JetStream in order; each stored one acknowledged to the daemon."""
        link = self.link
        edge = link.edge_id
        subject = subjects.publish(edge)
        log_id = link.log_id or "-"
        while not self.closed:
            seq, data = await self._publish.get()
            headers = {"Nats-Msg-Id": f"{edge}:{log_id}:{seq}", LOG_HEADER: log_id}
            while not self.closed:
                try:
                    await link.js.publish(subject, data, headers=headers, timeout=5.0)
                    break
                except (NatsError, asyncio.TimeoutError) as exc:   # JetStream busy or away: same id again
                    link.log.debug("publishing record %s: %s", seq, exc)
                    await asyncio.sleep(0.5)
            else:
                return
            link.stats.sent(len(data))
            if isinstance(seq, int):
                await link.deliver(self, wire.make("publish_ack", upto=seq))


class NatsLink:
    """Keeps a session with the federation nodes over NATS (see the module docstring)."""

    def __init__(self, handler: LinkHandler, servers: list[str], edge_id: str, token: str | None, *,
                 reconnect: Reconnect | None = None, heartbeat_s: float = 5.0, stats: LinkStats | None = None,
                 rng: random.Random | None = None, log: logging.Logger | None = None,
                 handshake_timeout_s: float = HELLO_TIMEOUT_S, clock=None, start_delay_s: float = 0.0,
                 gate: asyncio.Semaphore | None = None, heartbeat_jitter: float = 0.0):
        self.handler = handler
        self.servers = list(servers)
        self.edge_id = edge_id
        self.token = token
        self.reconnect = reconnect or Reconnect()
        self.heartbeat_s = heartbeat_s
        self.stats = stats or LinkStats()
        self.rng = rng or random.Random()
        self.log = log or logging.getLogger("streamql.edge.nats")
        self.handshake_timeout_s = handshake_timeout_s
        self.url = ",".join(self.servers)
        self.up_all = subjects.up_all(edge_id)
        self.up_prefix = f"{subjects.PREFIX}.up.{subjects.encode_token(edge_id)}."
        self.nc: Any = None
        self.js: Any = None
        self.max_frame = wire.MAX_FRAME_BYTES
        self.log_id: str | None = None
        self.connection: NatsConnection | None = None
        self.connected = asyncio.Event()
        self.attempts = 0
        self.last_error: str | None = None
        self._stopping = asyncio.Event()
        self._nats_up = asyncio.Event()
        self._nats_down = asyncio.Event()
        self._heard: dict[str, float] = {}     # reply subject of a node → when it was last heard
        self._hello_bytes: bytes | None = None
        self.hello_stale = False
        self._early: list | None = None        # frames a node sent between our hello and the welcome
        self._nonce = 0
        self._down_sub: Any = None
        self._client: object | None = None
        # many edges in one process (a simulated fleet), as on the WebSocket link: the first connect
        # waits `start_delay_s`, and at most `gate`'s value of first connects (the auth callout, the
        # hello) run at once; 10,000 at once make the callout's requests expire before the nodes
        # reach them, and every retry adds more
        self.start_delay_s = start_delay_s
        self.gate = gate
        self._holding_gate = False
        self.heartbeat_jitter = heartbeat_jitter   # each beat up to this fraction early: phases spread

    # == the loop ===============================================================================
    async def run(self) -> None:
        try:
            if self.start_delay_s > 0:
                await self._wait(self._stopping, self.start_delay_s)
            if self.gate is not None and not self._stopping.is_set():
                await self.gate.acquire()
                self._holding_gate = True
            await self._connect_nats()
            if self.nc is None:
                return
            sub = self._down_sub = await self.nc.subscribe(subjects.down(self.edge_id), cb=self._on_down)
            while not self._stopping.is_set():
                await self._wait(self._nats_up)
                if self._stopping.is_set():
                    break
                if self.nc.is_closed:
                    # nats-py gave up for good (a reconnect refused twice: the callout's answer came
                    # too late under a connect storm): a new client, through the gate again
                    await self._connect_nats(gated=True)
                    if self.nc is None:
                        break
                    sub = self._down_sub = await self.nc.subscribe(subjects.down(self.edge_id), cb=self._on_down)
                    continue
                up_since = None
                try:
                    up_since = await self._session()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the link outlives any failure
                    self._failed(f"{type(exc).__name__}: {exc}")
                if self._stopping.is_set():
                    break
                if up_since is not None and time.monotonic() - up_since >= 60.0:
                    self.attempts = 0
                delay = backoff_delay(self.attempts, self.reconnect, self.rng)
                self.attempts += 1
                await self._wait(self._stopping, delay)
            await self._bye()
            await sub.unsubscribe()
        finally:
            self._release_gate()
            if self.nc is not None:
                try:
                    await self.nc.flush(1.0)
                except Exception:  # noqa: BLE001
                    pass
                await self.nc.close()

    async def _connect_nats(self, *, gated: bool = False) -> None:
        options: dict[str, Any] = {"token": self.token} if self.token else {}
        self._nats_up.clear()
        if gated and self.gate is not None and not self._stopping.is_set():
            await self.gate.acquire()
            self._holding_gate = True
        while not self._stopping.is_set():
            client = object()       # the closed callback of a client given up on must not end the next one's
            self._client = client

            async def closed() -> None:
                if self._client is client:
                    await self._closed()

            try:
                self.nc = await nats.connect(
                    self.servers, name=f"streamql-edge {self.edge_id}", inbox_prefix=subjects.inbox_prefix(
                        self.edge_id).encode(), allow_reconnect=True, max_reconnect_attempts=-1,
                    reconnect_time_wait=max(0.2, self.reconnect.initial_s), connect_timeout=CONNECT_TIMEOUT_S,
                    disconnected_cb=self._disconnected, reconnected_cb=self._reconnected,
                    closed_cb=closed, error_cb=self._error, **options)
                await finish_slow_authorization(self.nc, CONNECT_TIMEOUT_S)   # a callout slower than 2 s
                self.js = self.nc.jetstream()
                self.max_frame = min(wire.MAX_FRAME_BYTES, self.nc.max_payload - 4096)
                self._nats_down.clear()
                self._nats_up.set()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - no server reachable (yet), or refused
                self.nc = None
                self._release_gate()    # its backoff must not keep the others waiting
                self._failed(f"NATS {self.url}: {type(exc).__name__}: {exc}")
                delay = backoff_delay(self.attempts, self.reconnect, self.rng)
                self.attempts += 1
                await self._wait(self._stopping, delay)
                # the retry queues at the gate like a first connect: a refusal under a connect storm
                # (the callout's request expired) must not come back ungated and feed the storm
                if self.gate is not None and not self._stopping.is_set():
                    await self.gate.acquire()
                    self._holding_gate = True

    def _release_gate(self) -> None:
        """The first connect is done (welcomed, or it failed): the next edge's turn."""
        if self._holding_gate:
            self._holding_gate = False
            self.gate.release()

    async def _disconnected(self) -> None:
        self._nats_up.clear()
        self._nats_down.set()
        if not self._stopping.is_set():
            self.log.info("NATS connection lost; reconnecting")

    async def _closed(self) -> None:
        """The client is closed for good (ours at the end, or nats-py giving up): the session ends and
        run() connects afresh."""
        self._nats_down.set()
        self._nats_up.set()

    async def _reconnected(self) -> None:
        self._nats_down.clear()
        self._nats_up.set()
        self.log.info("NATS reconnected to %s", self.nc.connected_url.netloc if self.nc.connected_url else "?")

    async def _error(self, exc: Exception) -> None:
        self.last_error = f"NATS: {exc}"
        self.log.debug("NATS: %s", exc)

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def _failed(self, message: str) -> None:
        self.last_error = message
        level = logging.INFO if self.attempts < 3 else logging.WARNING
        self.log.log(level, "federation over NATS: %s (attempt %d)", message, self.attempts + 1)

    async def stop(self) -> None:
        self._stopping.set()
        conn = self.connection
        if conn is not None:
            await conn.close(wire.CLOSE_CODES["going_away"], "shutting down")

    # == one session ============================================================================
    async def _session(self) -> float | None:
        fields = self.handler.hello()
        self.log_id = (fields.get("resume") or {}).get("log")
        hello = wire.encode(wire.make("hello", **fields))
        self._hello_bytes = hello
        # a node that heard the hello may send a query before the welcome of another node arrives
        self._early = []
        try:
            reply = await self.nc.request(self.up_all, hello, timeout=self.handshake_timeout_s)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError, asyncio.TimeoutError):
            self._failed("no federation node answered the hello")
            return None
        finally:
            early, self._early = self._early, None
            self._release_gate()
        welcome = wire.decode(reply.data, accept=wire.FROM_FEDERATION)
        if welcome.t != "welcome":
            self._failed(f"expected welcome, got {welcome.t}")
            return None
        if not welcome["accepted"]:
            self._failed(f"refused: {welcome.get('reason') or 'not accepted'}")
            return None
        self.heartbeat_s = min(3600.0, max(0.1, float(welcome["heartbeat_s"])))
        if welcome.get("max_frame"):
            self.max_frame = min(self.max_frame, int(welcome["max_frame"]))
            fields_welcome = dict(welcome.fields, max_frame=self.max_frame)
            welcome = wire.make("welcome", **fields_welcome)
        conn = NatsConnection(self, welcome)
        self.connection = conn
        self._heard.clear()
        up_since = time.monotonic()
        self.stats.connected()
        self.connected.set()
        self.last_error = None
        self.log.info("connected over NATS to %s (heartbeat %g s)", self.nc.connected_url.netloc
                      if self.nc.connected_url else self.url, self.heartbeat_s)
        tasks = []
        try:
            await self.handler.connected(conn, welcome)
            for msg in early or ():
                await self._on_down(msg)
            tasks = [asyncio.create_task(self._heartbeat(conn)), asyncio.create_task(conn.publish_loop()),
                     asyncio.create_task(self._leases(conn))]
            down = asyncio.create_task(self._nats_down.wait())
            stopping = asyncio.create_task(self._stopping.wait())
            ended = asyncio.create_task(conn.ended.wait())
            await asyncio.wait([down, stopping, ended], return_when=asyncio.FIRST_COMPLETED)
            for waiter in (down, stopping, ended):
                waiter.cancel()
            reason = ("the NATS connection dropped" if self._nats_down.is_set()
                      else conn.close_reason or "stopped")
            self.last_error = reason
            self.log.info("federation session ended: %s", reason)
        finally:
            conn.closed = True
            self.connected.clear()
            self.connection = None
            for task in tasks:
                task.cancel()
            for task in tasks:
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001
                    pass
            self.stats.disconnected(self.last_error or "closed")
            await self.handler.disconnected(conn)
        return up_since

    async def _bye(self) -> None:
        """Tell the nodes at once (rather than after three silent heartbeats), and leave presence."""
        if self.nc is None or not self.nc.is_connected:
            return
        try:
            await self.nc.publish(self.up_all, b"", headers={KIND_HEADER: "bye"})
            await self.nc.publish(subjects.presence_subject(self.edge_id), b"", headers={"KV-Operation": "DEL"})
            await self.nc.flush(1.0)
        except Exception as exc:  # noqa: BLE001
            self.log.debug("bye not sent: %s", exc)

    async def _heartbeat(self, conn: NatsConnection) -> None:
        """Health to every node and into the presence bucket; a ping as before."""
        while not conn.closed:
            try:
                if self.hello_stale:
                    self.hello_stale = False
                    self._hello_bytes = wire.encode(wire.make("hello", **self.handler.hello()))
                health = wire.encode(wire.make("health", **self.handler.health()))
                await self.nc.publish(self.up_all, health)
                self.stats.sent(len(health))
                presence = codec.pack({"hello": self._hello_bytes, "health": health, "time": time.time()})
                await self.nc.publish(subjects.presence_subject(self.edge_id), presence)
            except wire.ProtocolError:
                self.log.exception("a health frame failed validation")
            except NatsError as exc:
                self.log.debug("heartbeat not sent: %s", exc)
            jitter = self.rng.uniform(0.0, self.heartbeat_jitter) if self.heartbeat_jitter else 0.0
            await asyncio.sleep(self.heartbeat_s * (1.0 - jitter))

    async def _leases(self, conn: NatsConnection) -> None:
        """Fragments of a node not heard from for their lease are cancelled (no orphans)."""
        while not conn.closed:
            if not conn.routes:     # nothing to watch: sleep until a fragment comes (10,000 idle
                conn.routed.clear()     # edges woke 10,000 times a second for nothing)
                await conn.routed.wait()
            await asyncio.sleep(1.0)
            sub = self._down_sub
            if sub is not None and sub.pending_msgs:
                continue        # frames from the nodes wait to be read here: one may be the renewal
            now = time.monotonic()
            for qid in list(conn.routes):
                lease = conn.leases.get(qid, DEFAULT_LEASE_S)
                if now - self._heard.get(conn.owners.get(qid, ""), now) > lease:
                    conn.routes.pop(qid, None)
                    conn.leases.pop(qid, None)
                    conn.owners.pop(qid, None)
                    self.log.warning("fragment %s: its federation node was silent for %g s; cancelling", qid, lease)
                    await self.deliver(conn, wire.make("cancel", qid=qid,
                                                       reason=f"its federation node was silent for {lease:g} s"))

    # == receiving ==============================================================================
    async def _on_down(self, msg) -> None:
        reply = msg.reply
        if not reply or not reply.startswith(self.up_prefix):
            return          # no node to answer
        conn = self.connection
        if conn is None or conn.closed:
            if self._early is not None and len(self._early) < 256:
                self._early.append(msg)
            elif peek(msg.data).get("t") == "query":   # the node must not wait for rows that never come
                await self._send_quietly(reply, wire.error_frame(
                    "not_connected", "this edge has no session with the federation now; retry after its hello",
                    ref=peek(msg.data).get("qid")))
            return
        owner = f"{reply} {(msg.headers or {}).get(RUN_HEADER, '')}"
        self._heard[owner] = time.monotonic()
        self.stats.received(len(msg.data))
        try:
            frame = wire.decode(msg.data, accept=wire.FROM_FEDERATION)
        except wire.ProtocolError as exc:
            self.log.warning("bad frame from the federation: %s", exc)
            if exc.code != "unsupported_version" and peek(msg.data).get("t") != "error":
                await self._send_quietly(reply, wire.error_frame(exc))
            return
        t = frame.t
        if t == "query":
            conn.routes[frame["qid"]] = reply
            conn.owners[frame["qid"]] = owner
            conn.routed.set()
            try:
                conn.leases[frame["qid"]] = float((msg.headers or {}).get(LEASE_HEADER, DEFAULT_LEASE_S))
            except ValueError:
                conn.leases[frame["qid"]] = DEFAULT_LEASE_S
        elif t in ("deploy", "rollback", "undeploy"):
            conn.deploys[frame["did"]] = reply
            bundle = (msg.headers or {}).get(BUNDLE_HEADER)
            if t == "deploy" and bundle:
                conn.current_reply = reply
                asyncio.ensure_future(self._fetch_bundle(conn, frame, bundle))
                return
        if t == "ping":
            pong = {"nonce": frame["nonce"]}
            if "time" in frame:
                pong["time"] = frame["time"]
            await self._send_quietly(reply, wire.make("pong", **pong))
        elif t == "pong":
            sent = frame.get("time")
            if isinstance(sent, (int, float)):
                self.stats.record_rtt(max(0.0, time.time() - sent))
        elif t == "error":
            self.log.warning("the federation reports %s: %s (ref %r)", frame["code"], frame["message"],
                             frame.get("ref"))
        elif t != "welcome":
            conn.current_reply = reply
            await self.deliver(conn, frame)

    async def _fetch_bundle(self, conn: NatsConnection, frame: wire.Frame, name: str) -> None:
        """A deploy whose bundle waits in the object store: fetch it, then hand the daemon its
        chunks as if they had come one by one (its checks of size and sha256 apply as ever)."""
        try:
            if self.gate is not None:   # many edges in one process: a few fetches at once, as connects
                async with self.gate:
                    data = await asyncio.wait_for(fetch_object(self.js, subjects.BUNDLE_BUCKET, name), 120.0)
            else:
                data = await asyncio.wait_for(fetch_object(self.js, subjects.BUNDLE_BUCKET, name), 120.0)
        except Exception as exc:  # noqa: BLE001 - not there, no permission, NATS away: the node hears why
            self.log.warning("deployment %s: bundle %s not fetched: %s", frame["did"], name, exc)
            try:
                await conn.send(wire.make("nack", did=frame["did"], code="fetch", model=frame["model"],
                                          active=self.handler.hello().get("models") or {},
                                          reason=f"the bundle {name} could not be read from the object store: "
                                                 f"{type(exc).__name__}: {exc}"[:2000]))
            except Exception as send_exc:  # noqa: BLE001
                self.log.debug("nack not sent: %s", send_exc)
            return
        step = wire.DEPLOY_CHUNK_BYTES
        chunks = frame["chunks"]
        for i in range(chunks):
            await self.deliver(conn, wire.make("deploy", **{**frame.fields, "chunk": i,
                                                            "data": data[i * step:(i + 1) * step]}))

    async def deliver(self, conn: NatsConnection, frame: wire.Frame) -> None:
        """A frame to the daemon (a handler bug answers `internal`, the link stays)."""
        if conn.closed:
            return
        try:
            await self.handler.handle(conn, frame)
        except Exception as exc:  # noqa: BLE001
            self.log.exception("handling a %s frame failed", frame.t)
            ref = frame.get("qid") or frame.get("did") or frame.t
            await self._send_quietly(conn.current_reply or self.up_all,
                                     wire.error_frame("internal", f"{type(exc).__name__}: {exc}"[:500], ref=ref))

    async def _send_quietly(self, subject: str, frame: wire.Frame) -> None:
        try:
            await self.nc.publish(subject, wire.encode(frame))
        except Exception as exc:  # noqa: BLE001
            self.log.debug("could not send %s: %s", frame.t, exc)

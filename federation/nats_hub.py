"""The edge hub over NATS: the same API as the WebSocket hub (federation/transport.py,
`EdgeTransport`), with NATS as the carrier between edges and any number of federation nodes.

Frames are unchanged (docs/protocol.md); only where they travel changes (federation/nats_subjects.py):

- every node subscribes `sql.up.*.all` (hello, health, bye of every edge) and `sql.up.*.<node>`
  (rows, end, acks and errors answering this node's own requests); so every node knows every edge
  and any node can run a fragment on any edge;
- a hello arrives as a NATS request: each node checks it against the registry and answers
  `welcome` (the edge takes the first); a node that starts later learns the edges already up
  from the presence bucket `sql_presence` (the edge's hello and latest health, expiring after
  three heartbeats), and any edge it hears health from but does not know the same way; an edge
  it closed as silent is taken back from its next frame with the hello it kept (federation/nats_adopt.py);
- frames to an edge go to `sql.down.<edge>` with the NATS reply subject `sql.up.<edge>.<node>`:
  the edge answers there. A `query` carries the header `Sql-Lease`: the node pings each edge
  running one of its fragments every lease/3 (from a thread of its own: a busy loop does not
  silence it, federation/nats_leases.py), and an edge cancels the fragments of a node it has
  not heard from for a lease (a node that died leaves no orphans);
- published records go from the edges into the JetStream stream `SQL_PUB` (deduplicated by
  `Nats-Msg-Id` = edge:log:seq); each node reads it through its own durable consumer into its own
  publish log (same deduplication by sequence as over WebSockets) and acknowledges a message only
  once its record is committed: exactly once across restarts of NATS and of the node
  (federation/nats_published.py).

WebSocket edges may still connect to a node running on NATS (the route stays): they live in the
same table, so a node serves both kinds at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import socket
import time
from typing import Any

import nats
from nats.js.api import KeyValueConfig, ObjectMeta, ObjectStoreConfig, StreamConfig
from nats.js.errors import NotFoundError

from federation import nats_subjects as subjects
from federation.nats_adopt import NatsAdoption
from federation.nats_hellos import KIND_HEADER, NatsHellos
from federation.nats_auth import node_connect_options
from federation.nats_edge_conn import LEASE_HEADER, NatsEdgeConnection  # noqa: F401 (LEASE_HEADER: the contract)
from federation.nats_leases import RUN_HEADER, LeaseRenewer  # noqa: F401
from federation.nats_peers import Peers
from federation.nats_published import NatsPublished
from federation.nats_config import SECURITY_FILE, NatsSecurity, publish_quota_settings
from federation.config import FederationConfig
from federation.hub import EdgeHub, EdgeOffline
from federation.publish import PublishLog
from streamql import wire
from streamql.frame_keys import peek

log = logging.getLogger("streamql.federation.nats")

BUNDLE_HEADER = "Sql-Bundle"
DUPLICATE_WINDOW_S = 3600.0  # JetStream drops a record resent within this; the publish log beyond it
PROBE_S = 1.0
STORE_TIMEOUT_S = 30.0   # a bundle put's acknowledgements (the default 5 s timed out under load)
STORE_ATTEMPTS = 3
STORE_RETRY_S = 30.0     # after all attempts failed, the next edge's send tries again this much later
_DISPATCH = {"rows": "on_rows", "end": "on_end", "health": "on_health", "ack": "on_reply", "nack": "on_reply",
             "error": "on_error"}


def default_node_id(config: FederationConfig) -> str:
    return config.nats_node or f"{socket.gethostname()}-{config.port}"


def max_frame_for(max_payload: int) -> int:
    """The largest frame a NATS message carries (headers take a little room)."""
    return max(64 << 10, min(wire.MAX_FRAME_BYTES, max_payload - 4096))


class NatsHub(NatsPublished, NatsHellos, NatsAdoption, EdgeHub):
    """EdgeHub whose edges are reached over NATS (see the module docstring)."""

    def __init__(self, registry, config: FederationConfig, *, heartbeats=None, metrics=None,
                 node_id: str | None = None):
        self.node_id = node_id or default_node_id(config)
        self.run_id = secrets.token_hex(6)
        token = subjects.encode_token(self.node_id)
        # one publish log per node: each node keeps every record (its own consumer reads them all)
        super().__init__(registry, config, heartbeats=heartbeats, metrics=metrics,
                         publish_log=PublishLog(config.data_dir / f"published-{token}.sqlite3"))
        self.nc: Any = None
        self.js: Any = None
        self.max_frame = wire.MAX_FRAME_BYTES
        self._subs: list = []
        self._adopting: set[str] = set()   # edges whose presence entry is being read (nats_adopt)
        self._hellos: dict[str, tuple[wire.Frame, int]] = {}   # edge → its hello and size, while it may come back
        self._taking_back: dict[str, tuple] = {}   # edges closed as silent heard again → (health, when)
        self._take_back_task: asyncio.Task | None = None
        self._hello_lane = None   # threads for the hellos' registry work on PostgreSQL (nats_hellos)
        self._hellos_pending: dict[str, asyncio.Task] = {}   # edge → its hello being answered there
        self._after_hello: dict[str, list] = {}   # edge → its messages meanwhile, handled after it
        self._consumer = f"node_{token}".replace("=", "_")[:200]
        self._holes_looked_for: set[tuple] = set()   # (edge, log, seq) a rewind has looked for
        self._stored: dict[tuple[str, str], str] = {}   # bundles in the object store: (name, version) → sha256
        self._storing = asyncio.Lock()
        self._via_store: set[str] = set()   # deployments (did) whose bundle the edges fetch
        self._store_failed: dict[tuple[str, str, str], float] = {}   # (name, version, sha256) → when
        self._light_deploys: dict[bytes, bytes] = {}   # a deploy frame → it without its data
        # no device id encodes to a token with '~' (nats_subjects), and only nodes may publish here
        self._probe_subject = f"{subjects.PREFIX}.up.~{token}.{subjects.ALL_NODES}"
        self._caught_up_to = time.monotonic()   # the send time of the latest own probe read back
        self._stopped_websocket_edges: list[str] = []
        self.security: NatsSecurity | None = None   # set on a secured NATS: its quotas shape SQL_PUB
        self._renewer: LeaseRenewer | None = None
        self.peers = Peers(self.node_id)   # the other nodes: who writes which NATS edge's heartbeats
        self.m_nats = self.metrics.counter("streamql_nats_events_total", "NATS connection events of this node.",
                                           ("event",))
        self.m_adopted = self.metrics.counter(
            "streamql_nats_adoptions_total", "Edges this node took in without their hello: kept_hello (closed as "
            "silent, heard again), presence (never held), no_presence (its entry not read), refused.", ("via",))

    # --- lifetime --------------------------------------------------------------------------------
    async def start(self) -> None:
        await super().start()
        config = self.config
        options: dict[str, Any] = {}
        if config.nats_creds is not None:
            options["user_credentials"] = str(config.nats_creds)
        if config.nats_token:
            options["token"] = config.nats_token
        if not options and (config.data_dir / SECURITY_FILE).exists():
            # a secured NATS (`streamql federation nats-config`): the node's own user, past the callout
            self.security = NatsSecurity.load_or_create(config.data_dir)
            options.update(node_connect_options(self.security))
        self.nc = await nats.connect(
            list(config.nats), name=f"streamql-federation {self.node_id}", max_reconnect_attempts=-1,
            reconnect_time_wait=0.5, connect_timeout=5, allow_reconnect=True,
            disconnected_cb=self._event("disconnected"), reconnected_cb=self._event("reconnected"),
            error_cb=self._error, **options)
        self.max_frame = max_frame_for(self.nc.max_payload)
        self.js = self.nc.jetstream()
        self._renewer = LeaseRenewer(list(config.nats), options, node_id=self.node_id, run_id=self.run_id,
                                     lease_s=config.nats_lease_s)
        if not await asyncio.to_thread(self._renewer.start):
            log.warning("lease renewal thread did not connect: renewing from the event loop")
        await self._ensure_storage_soon()
        self._open_hello_lane()
        self._subs = [await self.nc.subscribe(subjects.up_broadcast(), cb=self._on_up),
                      await self.nc.subscribe(subjects.up_for_node(self.node_id), cb=self._on_up)]
        await self._load_presence()
        self._background += [asyncio.create_task(self._probe(), name="nats-probe"),
                             asyncio.create_task(self.peers.run(self.nc), name="nats-peers"),
                             asyncio.create_task(self._consume_published(), name="nats-published"),
                             asyncio.create_task(self._renew_leases(), name="nats-leases")]
        log.info("federation node %s on NATS %s", self.node_id, self.nc.connected_url.netloc
                 if self.nc.connected_url else config.nats)

    def _event(self, name: str):
        async def callback() -> None:
            self.m_nats.inc(event=name)
            log.info("NATS %s (node %s)", name, self.node_id)
        return callback

    async def _error(self, exc: Exception) -> None:
        log.debug("NATS: %s", exc)

    async def shutdown(self, grace_s: float = 1.5) -> int:
        """The node stops: its fragments are cancelled on its NATS edges, which it forgets (they stay
        online for the other nodes); its WebSocket edges are closed as on the embedded hub. From
        the start it reads nothing more from its edges (the other nodes answer their hellos): a hello
        it took meanwhile wrote the edge online on the event loop, and at 10,000 edges such writes
        waiting for the registry held the stop past its 9 s (run b: 10.07 s, exit 1)."""
        self.stopping = True
        nats_edges = await self._leave_nats_edges()
        return len(nats_edges) + await super().shutdown(grace_s)

    def _write_stopped_offline(self) -> None:
        # not mark_all_offline: on a shared registry that would take every node's edges offline
        for edge_id in list(self._stopped_websocket_edges):
            with contextlib.suppress(Exception):
                self.registry.set_online(edge_id, False)

    async def _leave_nats_edges(self) -> list:
        self._stopped_websocket_edges = [e for e, c in self._connections.items() if not isinstance(c, NatsEdgeConnection)]
        nats_edges = [c for c in self._connections.values() if isinstance(c, NatsEdgeConnection)]
        self._taking_back.clear()
        for conn in nats_edges:
            for qid in list(conn.fragments):
                with contextlib.suppress(Exception):
                    await conn.send(wire.make("cancel", qid=qid, reason="the federation node is stopping"))
        for conn in nats_edges:
            conn.closing = True
            for state in list(conn.fragments.values()):
                state.finish(EdgeOffline(conn.edge_id, "is out of reach: the federation node is stopping",
                                         dropped=True))
            self._connections.pop(conn.edge_id, None)   # online for the other nodes: the registry keeps it
        return nats_edges

    async def close(self) -> None:
        """Cancel this node's fragments on the edges, then leave NATS; edges stay online for the others."""
        steps = _Steps()
        await self._leave_nats_edges()
        steps.mark("edges left")
        if self._renewer is not None:
            await asyncio.to_thread(self._renewer.stop)
        steps.mark("lease thread")
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        steps.mark("unsubscribed")
        await super().close()
        self._close_hello_lane()
        steps.mark("hub closed")
        if self.nc is not None:   # the cancels above go out first; then leave at once
            with contextlib.suppress(Exception):
                await self.nc.flush(1.0)
            with contextlib.suppress(Exception):
                await self.nc.close()
        steps.mark("NATS closed")
        steps.report("NATS hub closed")

    async def _ensure_storage_soon(self, timeout_s: float = 60.0) -> None:
        """_ensure_storage, waiting for JetStream (a cluster elects its leader after starting)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await self._ensure_storage()
                return
            except Exception as exc:  # noqa: BLE001 - JetStream not ready yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JetStream is not available on {list(self.config.nats)}: {exc}") from None
                log.info("waiting for JetStream: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(1.0)

    async def _ensure_storage(self) -> None:
        """The stream of published records and the presence bucket (made by the first node)."""
        js = self.js
        stream = StreamConfig(name=subjects.PUBLISH_STREAM, subjects=[subjects.publish_wildcard()],
                              duplicate_window=DUPLICATE_WINDOW_S, num_replicas=self.config.nats_replicas,
                              max_age=float(self.config.publish_retention_s),
                              **(publish_quota_settings(self.security.quotas) if self.security else {}))
        try:
            await js.stream_info(subjects.PUBLISH_STREAM)
        except NotFoundError:
            try:
                await js.add_stream(stream)
            except Exception:  # noqa: BLE001 - another node made it meanwhile (else: raised again below)
                await js.stream_info(subjects.PUBLISH_STREAM)
        presence_ttl = 3 * float(self.config.heartbeat_s)
        try:
            self.presence = await js.key_value(subjects.PRESENCE_BUCKET)
        except NotFoundError:
            self.presence = await js.create_key_value(KeyValueConfig(
                bucket=subjects.PRESENCE_BUCKET, ttl=presence_ttl, history=1, replicas=self.config.nats_replicas))
        try:
            await js.object_store(subjects.BUNDLE_BUCKET)
        except NotFoundError:
            await js.create_object_store(subjects.BUNDLE_BUCKET, config=ObjectStoreConfig(
                bucket=subjects.BUNDLE_BUCKET, replicas=self.config.nats_replicas))

    # --- frames to edges -------------------------------------------------------------------------
    async def send(self, edge_id: str, frame: wire.Frame | bytes) -> None:
        """As EdgeHub.send; a bundle's deploy chunks become one frame naming it in the object store
        (stored there once, fetched by each edge), instead of every chunk through this node."""
        conn = self._connections.get(edge_id)
        if isinstance(conn, NatsEdgeConnection) and isinstance(frame, (bytes, bytearray)):
            keys = peek(frame, stop_at="data")
            if keys.get("t") == "deploy":
                did = keys.get("did")
                if keys.get("chunk") != 0:
                    if did in self._via_store:
                        return      # the edge reads the whole bundle from the object store
                    await conn.send(frame)
                    return
                name = await self._store_bundle(keys["model"], keys["version"], keys["sha256"])
                if name is not None:
                    self._via_store.add(did)
                    key = bytes(frame)
                    light = self._light_deploys.get(key)   # the same frame for every edge of a variant
                    if light is None:
                        light = wire.encode(wire.make("deploy", **dict(wire.decode(frame).fields, data=b"")))
                        if len(self._light_deploys) > 64:
                            self._light_deploys.clear()
                        self._light_deploys[key] = light
                    await conn.send(light, headers={BUNDLE_HEADER: name})
                    return
        await super().send(edge_id, frame)

    async def _store_bundle(self, model: str, version: str, sha256: str) -> str | None:
        """The bundle in the object store `sql_bundles` as `<model>/<version>` (None: it cannot be)."""
        name = subjects.bundle_object(model, version)
        if self._stored.get((model, version)) == sha256:
            return name
        async with self._storing:
            if self._stored.get((model, version)) == sha256:
                return name
            failed = self._store_failed.get((model, version, sha256))
            if failed is not None and time.monotonic() - failed < STORE_RETRY_S:
                return None   # failed just now: the edges waiting behind it do not each wait again
            for attempt in range(1, STORE_ATTEMPTS + 1):
                try:
                    if await self._put_bundle(name, model, version, sha256):
                        self._stored[(model, version)] = sha256
                        self._store_failed.pop((model, version, sha256), None)
                        return name
                    return None
                except Exception as exc:  # noqa: BLE001 - NATS busy: again, then the chunks through this node
                    log.warning("bundle %s not stored in the object store (attempt %d of %d: %s: %s)",
                                name, attempt, STORE_ATTEMPTS, type(exc).__name__, exc)
            self._store_failed[(model, version, sha256)] = time.monotonic()
            log.warning("bundle %s: sending its chunks through this node for %g s", name, STORE_RETRY_S)
            return None

    async def _put_bundle(self, name: str, model: str, version: str, sha256: str) -> bool:
        """Put the bundle once (unless it is there already); False when the registry has no such bytes.
        Its own JetStream context waits longer than the default 5 s: under 10,000 edges' heartbeats
        and presence writes a chunk's acknowledgement took longer, and every edge then got the
        bundle through this node instead."""
        js = self.nc.jetstream(timeout=STORE_TIMEOUT_S)
        store = await js.object_store(subjects.BUNDLE_BUCKET)
        info = None
        with contextlib.suppress(Exception):
            info = await store.get_info(name)
        if info is not None and not info.deleted and (info.headers or {}).get("Sql-Sha256") == sha256:
            return True
        stored = self.registry.get_bundle(model, version)
        data = self.registry.bundle_data(stored) if stored is not None else None
        if data is None or hashlib.sha256(data).hexdigest() != sha256:
            return False
        await store.put(name, data, meta=ObjectMeta(name=name, headers={"Sql-Sha256": sha256}))
        return True

    # --- frames from edges -----------------------------------------------------------------------
    async def _on_up(self, msg) -> None:
        if self.stopping:
            return   # stopping: no hello, adoption or answer handled (shutdown)
        if msg.subject == self._probe_subject:
            with contextlib.suppress(ValueError):
                self._caught_up_to = max(self._caught_up_to, float(msg.data))
            return
        try:
            edge = subjects.edge_of(msg.subject)
        except ValueError:
            return
        if edge in self._hellos_pending and self._after_its_hello(edge, msg):
            return
        headers = msg.headers or {}
        conn = self._connections.get(edge)
        if headers.get(KIND_HEADER) == "bye":
            if isinstance(conn, NatsEdgeConnection):
                await conn.close(1000, "the edge said bye")
            self._forget_hello(edge)
            return
        data = msg.data
        try:
            frame = wire.decode(data, accept=wire.FROM_EDGE)
        except wire.ProtocolError as exc:
            self.m_protocol.inc(code=exc.code)
            log.debug("bad frame from %s over NATS: %s", edge, exc)
            return
        self.m_frames.inc(type=frame.t)
        if frame.t == "hello":
            await self._hello(edge, frame, len(data), msg)
            return
        if not isinstance(conn, NatsEdgeConnection) or conn.closing:
            if frame.t == "health" and conn is None:
                self._adopt_later(edge, frame)
            elif frame.t in ("ack", "nack") and conn is None and not msg.subject.endswith(f".{subjects.ALL_NODES}"):
                self._answer_of_unheld(edge, frame)
            return
        conn.last_frame = time.monotonic()
        conn.last_seen = time.time()
        conn.frame_bytes = len(data)
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
            elif t in ("ack", "nack") and msg.subject.endswith(f".{subjects.ALL_NODES}"):
                self._learn_models(conn, frame)   # a copy for every node: the deployer got its own
            elif t in _DISPATCH:
                getattr(self, _DISPATCH[t])(conn, frame)
        except Exception:  # noqa: BLE001 - one bad frame must not stop the subscription
            log.exception("handling a %s frame from %s failed", t, edge)

    def online_changed(self, device_ids, online: bool) -> None:
        """Another node wrote offline an edge this node still hears (a NATS edge is served by every
        node: one whose loop lagged past three heartbeats closes it and writes it offline, and the
        change feed takes it offline here too): written online again, in the next batch of flips."""
        if not online and not self.stopping:
            self._flips.mark([edge for edge in device_ids if self._hears(edge)])

    def writes_beats_of(self, conn) -> bool:
        """One node writes each NATS edge's heartbeats (nats_peers); WebSocket edges' their own node."""
        return not isinstance(conn, NatsEdgeConnection) or self.peers.writes(conn.edge_id)

    def _hears(self, edge: str) -> bool:
        conn = self._connections.get(edge)
        return (isinstance(conn, NatsEdgeConnection) and not conn.closing
                and self.silent_for(conn, time.monotonic()) < 3 * self.config.heartbeat_s)

    def silent_for(self, conn, now: float) -> float:
        """A NATS edge's silence counts up to what this node has read, not to now: its frames may
        wait unread in the subscription (a backlog of 10,000 edges' health behind slow hellos, or
        a held loop), and an edge whose health waits there is not silent. The node's own probe
        (sent every PROBE_S on the same subscription, stamped with its send time) tells how far
        the reading has come: every frame the server had before the probe was read before it."""
        if not isinstance(conn, NatsEdgeConnection):
            return now - conn.last_frame
        return self._caught_up_to - conn.last_frame

    async def _probe(self) -> None:
        """This node's probe on its up subscription, every PROBE_S (see silent_for)."""
        while True:
            with contextlib.suppress(Exception):   # NATS away: nothing is read meanwhile either
                await self.nc.publish(self._probe_subject, repr(time.monotonic()).encode())
            await asyncio.sleep(PROBE_S)

    def on_rows(self, conn, frame: wire.Frame) -> None:
        """As EdgeHub.on_rows; rows of a fragment this node does not run (a previous process under
        this node id ran it) are answered with a cancel at once instead of waiting for its lease."""
        if isinstance(conn, NatsEdgeConnection) and frame["qid"] not in conn.fragments \
                and not frame["qid"].startswith(f"q{self._prefix}-") and frame["seq"] % 64 == 0:
            conn.post(wire.make("cancel", qid=frame["qid"], reason="no federation node runs this fragment"))
        super().on_rows(conn, frame)

    def _answer_of_unheld(self, edge: str, frame: wire.Frame) -> None:
        """An ack or nack for this node from an edge it no longer holds (it closed the edge after
        losing its frames: a slow-consumer cut, say): the deployer still hears it, and the node
        adopts the edge again. Dropped, the answer left its target to time out as failed (run b
        of the 10,000-edge deployment: 6,567 failed)."""
        for observer in self._observers:
            hook = getattr(observer, "edge_replied", None)
            if hook is not None:
                try:
                    hook(edge, frame)
                except Exception:
                    log.exception("an observer failed on the %s of %s", frame.t, edge)
        self._adopt_later(edge)

    def _learn_models(self, conn: NatsEdgeConnection, frame: wire.Frame) -> None:
        """What on_reply keeps of an ack or nack, without telling the deployer (not ours)."""
        announced = self._announced.get(conn.edge_id)
        if announced is not None:
            announced["models"] = dict(frame["active"])
            if frame.get("functions") is not None:
                announced["capabilities"]["functions"] = list(frame["functions"])

    # --- leases ----------------------------------------------------------------------------------
    async def _renew_leases(self) -> None:
        """A ping to every edge running one of this node's fragments, three times a lease: from the
        renewal thread (federation/nats_leases.py), which this feeds every second; from here only
        when that thread is not running."""
        nonce = 0
        while True:
            renewer = self._renewer
            if renewer is not None and renewer.alive:
                await asyncio.sleep(min(1.0, self.config.nats_lease_s / 3))
                renewer.feed(tuple(conn.edge_id for conn in list(self._connections.values())
                                   if isinstance(conn, NatsEdgeConnection) and conn.fragments and not conn.closing))
                continue
            await asyncio.sleep(self.config.nats_lease_s / 3)
            for conn in list(self._connections.values()):
                if isinstance(conn, NatsEdgeConnection) and conn.fragments and not conn.closing:
                    nonce += 1
                    conn.post(wire.make("ping", nonce=nonce, time=time.time()))


class _Steps:
    """How long each step of a close took, logged when the whole was slow."""

    def __init__(self):
        self.began = self.last = time.monotonic()
        self.parts: list[str] = []

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.parts.append(f"{name} +{now - self.last:.2f} s")
        self.last = now

    def report(self, what: str, slow_s: float = 1.0) -> None:
        took = self.last - self.began
        (log.warning if took >= slow_s else log.info)("%s in %.2f s: %s", what, took, ", ".join(self.parts))

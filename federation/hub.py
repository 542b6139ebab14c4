"""The edge hub: every connected edge's WebSocket (docs/protocol.md), and the API through which the
fleet planner and the deployer reach devices.

    hub = app[HUB]
    hub.is_online("wl-1"), hub.online_ids(), hub.announced("wl-1")
    async for batch in hub.fragment("wl-1", "select signal_value('vibration');", credit=4096):
        batch.names, batch.n, batch.cols          # RowBatch: column-major, as the edge sent them
    # raises EdgeOffline (not connected, or the link dropped) or FragmentError (end limit/error/cancelled)
    async with hub.subscribe(flow="alerts") as records:   # published records, once they are durable
        async for record in records: ...
    await hub.send("wl-1", frame)                  # any frame (the deployer sends deploy chunks)

One `EdgeConnection` (federation/edge_link.py) per connected edge reads its frames and dispatches
them here; observers (the deployer) hear about connects, disconnects and ack/nack frames.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiohttp import web

from federation.auth import Principal
from federation.config import FederationConfig
from federation.edge_link import EdgeConnection, serve_edge
from federation.heartbeats import HeartbeatBuffer
from federation.hello_record import announcement, record_hello
from federation.hub_support import OnlineFlips, Subscription
from federation.hub_support import plain as _plain
from federation.hub_types import End as _End
from federation.hub_types import EdgeOffline, FragmentError, FragmentState, Grants, HubObserver, RowBatch
from federation.metrics import FederationMetrics
from federation.publish import PublishedRecord, PublishLog
from federation.publish_quota import PublishQuotas
from federation.registry import Device, Heartbeat, Registry
from streamql import wire

log = logging.getLogger("streamql.federation.hub")

TOUCH_GRANULARITY_S = 1.0   # a last-seen time that moved less than this is not written again

__all__ = ["EdgeHub", "EdgeOffline", "FragmentError", "RowBatch", "HubObserver", "Subscription",
           "PublishedRecord"]


class EdgeHub:
    """Connected edges, fragments running on them, published records, and their observers."""

    def __init__(self, registry: Registry, config: FederationConfig, *, heartbeats: HeartbeatBuffer | None = None,
                 metrics: FederationMetrics | None = None, publish_log: PublishLog | None = None):
        self.registry, self.config = registry, config
        self.heartbeats = heartbeats
        self.metrics = metrics or FederationMetrics()
        self.publish_log = publish_log if publish_log is not None else PublishLog(config.publish_path)
        self.quotas = PublishQuotas(config)
        self._connections: dict[str, EdgeConnection] = {}
        self._announced: dict[str, dict] = {}
        self._observers: list[Any] = []
        self._subscriptions: set[Subscription] = set()
        self._qids = itertools.count(1)
        self._prefix = secrets.token_hex(3)  # qids differ across restarts of the federation
        self._tasks: set[asyncio.Task] = set()
        self._flush_now = asyncio.Event()
        self._background: list[asyncio.Task] = []
        self.stopping = False   # shutting down: hellos are refused
        self._flips = OnlineFlips(registry, self._wants_online)
        self._recorded_seen: dict[str, float] = {}   # edge → last-seen time last given to the heartbeats
        m = self.metrics
        self.m_frames = m.counter("streamql_edge_frames_total", "Frames received from edges, by type.", ("type",))
        self.m_connects = m.counter("streamql_edge_connections_total", "Edge connections, by how they ended the "
                                    "handshake.", ("result",))
        self.m_fragments = m.counter("streamql_fragments_total", "Query fragments run on edges, by outcome.",
                                     ("outcome",))
        self.m_fragment_rows = m.counter("streamql_fragment_rows_total", "Rows received from query fragments.")
        self.m_silent = m.counter("streamql_edges_closed_silent_total", "Edges closed by this node for "
                                  "sending nothing for 3 heartbeats (an edge or its link starved, or gone).")
        self.m_fragments_running = m.gauge("streamql_fragments_running", "Query fragments running on edges now.")
        self.m_published = m.counter("streamql_published_records_total", "Published records kept (new ones).")
        self.m_duplicates = m.counter("streamql_published_duplicates_total",
                                      "Published records dropped as duplicates (resent after a reconnect).")
        self.m_protocol = m.counter("streamql_edge_protocol_errors_total", "Bad frames from edges, by code.",
                                    ("code",))
        m.callback("streamql_edges_connected", "Edges with an open connection to this federation node.",
                   lambda: len(self._connections))
        m.callback("streamql_publish_refused_total", "Published records refused by the per-device quota, by "
                   "reason (records, bytes; held: sent after a refusal, before the edge paused).",
                   lambda: self.quotas.refused, kind="counter", labels=("reason",))

    # --- lifetime --------------------------------------------------------------------------------
    async def start(self) -> None:
        self._background = [asyncio.create_task(self._flush_loop(), name="publish-flush"),
                            asyncio.create_task(self._sweep_loop(), name="edge-liveness")]
        self.registry.add_listener(self)

    async def shutdown(self, grace_s: float = 1.5) -> int:
        """The federation stops (its first shutdown step): hellos are refused from now on, every
        edge is told GOING_AWAY at once, and the connections of edges that have not answered the
        close within `grace_s` are aborted, so that no edge's handler holds up the stop; then all
        of them are written offline in one transaction. Returns how many edges were connected."""
        self.stopping = True
        began = time.monotonic()
        conns = list(self._connections.values())
        aborted = 0
        marks = []
        if conns:
            closing = asyncio.gather(*(conn.close(wire.CLOSE_CODES["going_away"], "federation shutting down")
                                       for conn in conns), return_exceptions=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(closing, grace_s)
            marks.append(("closes", time.monotonic()))
            aborted = sum(conn.abort() for conn in conns)
            for _ in range(20):   # their handlers end (and detach) within a few loop turns
                if not self._connections:
                    break
                await asyncio.sleep(0.01)
            marks.append(("handlers", time.monotonic()))
        await self._flips.stop()
        with contextlib.suppress(Exception):   # one statement for all, not a write per edge
            self._write_stopped_offline()
        marks.append(("offline written", time.monotonic()))
        took = marks[-1][1] - began
        steps = ", ".join(f"{name} +{at - before:.2f} s" for (name, at), before
                          in zip(marks, [began] + [at for _, at in marks]))
        (log.warning if took > 2 * grace_s else log.info)(
            "%d edges closed in %.2f s (%d aborted after %.1f s without their answer): %s",
            len(conns), took, aborted, grace_s, steps)
        return len(conns)

    def _wants_online(self, edge: str) -> bool:
        """What the registry should say of an edge: online while this node holds its link."""
        return edge in self._connections

    def _write_stopped_offline(self) -> None:
        """The node stops: what it held is offline (NatsHub: only its WebSocket edges)."""
        self.registry.mark_all_offline()

    async def close(self, timeout_s: float = 2.0) -> None:
        """Every edge told GOING_AWAY at once (bounded: 10,000 closes are not awaited one by one),
        then the registry written once: all of them offline."""
        with contextlib.suppress(ValueError):
            self.registry.remove_listener(self)
        conns = list(self._connections.values())
        if conns:
            closing = asyncio.gather(*(conn.close(wire.CLOSE_CODES["going_away"], "federation shutting down")
                                       for conn in conns), return_exceptions=True)
            try:
                await asyncio.wait_for(closing, timeout_s)
            except asyncio.TimeoutError:
                log.warning("%d edge connections did not close within %.1f s", len(conns), timeout_s)
        if self.stopping:
            with contextlib.suppress(Exception):
                self._write_stopped_offline()
        else:
            await self._flips.drain(timeout_s)
            self._flips.flush()
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._flush_publish()
        for sub in list(self._subscriptions):
            sub.close()
        for task in list(self._tasks):
            task.cancel()
        self.publish_log.close()

    def add_observer(self, observer: Any) -> None:
        self._observers.append(observer)

    def remove_observer(self, observer: Any) -> None:
        with contextlib.suppress(ValueError):
            self._observers.remove(observer)

    def spawn(self, coro, name: str | None = None) -> asyncio.Task:
        """A background task the hub keeps a reference to (and cancels at close)."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hub task %s failed", task.get_name(), exc_info=task.exception())

    # --- the planner's API -----------------------------------------------------------------------
    def is_online(self, edge_id: str) -> bool:
        conn = self._connections.get(edge_id)
        return conn is not None and not conn.closing

    def online_ids(self) -> set[str]:
        return {edge for edge, conn in self._connections.items() if not conn.closing}

    def announced(self, edge_id: str) -> dict | None:
        """The latest hello of the edge (kept after it disconnects): edge, software, metadata,
        capabilities, signals [{name, type, kind, rate_hz}], models {name: version} (kept current
        by acks), restarts, version (negotiated), connected_at; None when it never said hello."""
        found = self._announced.get(edge_id)
        return None if found is None else dict(found)

    def announced_ids(self) -> list[str]:
        """The edges that said hello since the federation started."""
        return list(self._announced)

    def connection(self, edge_id: str) -> EdgeConnection | None:
        return self._connections.get(edge_id)

    async def send(self, edge_id: str, frame: wire.Frame | bytes) -> None:
        """Send one frame (or its encoded bytes) to a connected edge; EdgeOffline when it is not."""
        conn = self._connections.get(edge_id)
        if conn is None or conn.closing:
            raise EdgeOffline(edge_id)
        await conn.send(frame)

    async def fragment(self, edge_id: str, source: str, *, limits: dict | None = None, credit: int = 10_000,
                       params: dict | None = None, columns: list[str] | None = None,
                       batch_rows: int | None = None, principal: str | None = None,
                       kind: str | None = None, deadline_s: float | None = None,
                       follow_s: float | None = None, most_credit: int | None = None) -> AsyncIterator[RowBatch]:
        """Run `source` on the edge: RowBatches as `rows` frames arrive; see the module docstring.

        `principal` names who asked (a token, e.g. `Principal.name`): the edge gives one principal
        at most a share of its query slots, refusing the rest with `end error` LimitError. `kind`
        says whether the fragment is a stream ("stream") or one-shot ("bag", "vector"): the edge
        keeps a reserve of slots for one-shot fragments (they end on their own). `deadline_s`: the
        seconds after which nobody waits for the fragment's answer (a one-shot query's device
        timeout); the edge ends it then by itself, `end cancelled` DeadlineError.

        Credit: the edge may have `credit` rows unconsumed; each time the consumer has taken half
        of that, the hub grants as much again — or, with `follow_s`, the window follows the
        consumer: about what it took in the last `follow_s` seconds, up to `most_credit` (Grants).
        Closing the iterator early (aclose, or the consuming task being cancelled) sends `cancel`.
        """
        if credit < 1:
            raise ValueError("a fragment needs a credit of at least one row")
        conn = self._connections.get(edge_id)
        if conn is None or conn.closing:
            self.m_fragments.inc(outcome="offline")
            raise EdgeOffline(edge_id)
        qid = f"q{self._prefix}-{next(self._qids)}"
        state = FragmentState(qid, edge_id, credit)
        fields: dict[str, Any] = {"qid": qid, "source": source, "credit": credit,
                                  "limits": {k: v for k, v in (limits or {}).items() if v is not None}}
        if params:
            fields["params"] = params
        if columns:
            fields["columns"] = list(columns)
        if batch_rows:
            fields["batch_rows"] = batch_rows
        if principal:
            fields["principal"] = principal[:256]
        if kind in wire.FRAGMENT_KINDS:
            fields["kind"] = kind
        if deadline_s is not None and deadline_s > 0:
            fields["deadline_s"] = float(deadline_s)
        query = wire.make("query", **fields)
        conn.fragments[qid] = state
        self.m_fragments_running.inc()
        outcome = "cancelled"
        grants = Grants(credit, window_s=follow_s, most=most_credit)
        try:
            await conn.send(query)
            while True:
                item = await state.queue.get()
                if type(item) is RowBatch:
                    yield item
                    grant = grants.took(item.n)
                    if grant and not state.done:
                        state.granted += grant
                        await conn.send(wire.make("credit", qid=qid, add=grant))
                elif type(item) is _End:
                    end = item.frame
                    if end["outcome"] == "ok":
                        outcome = "ok"
                        return
                    raise FragmentError(end["outcome"], end.get("error"), edge_id=edge_id, rows=end["rows"])
                else:
                    raise item
        except EdgeOffline:
            outcome = "offline"
            raise
        except FragmentError as exc:
            outcome = exc.outcome
            raise
        finally:
            self.m_fragments_running.dec()
            self.m_fragments.inc(outcome=outcome)
            conn.fragments.pop(qid, None)
            if not state.done:
                state.done = True
                if not conn.closing:
                    conn.post(wire.make("cancel", qid=qid, reason="the federation stopped reading"))

    def subscribe(self, flow: str | None = None, *, edges: Iterable[str] | None = None,
                  maxsize: int = 10_000) -> Subscription:
        """Published records of one flow (or all), of some edges (or all), as they become durable."""
        sub = Subscription(self, flow, edges, maxsize)
        self._subscriptions.add(sub)
        return sub

    # --- called by the edge connections ----------------------------------------------------------
    def attach(self, conn: EdgeConnection, device: Device, hello: wire.Frame, *,
               announced: dict | None = None) -> tuple[int, EdgeConnection | None]:
        """A device said hello: make it the edge's connection; returns (publish_acked, replaced one).
        With `announced`, the hello is already recorded in the registry (hello_record.find_and_record,
        off the loop); otherwise it is recorded here (may raise: the device deleted meanwhile)."""
        edge = conn.edge_id
        if announced is None:
            announced = announcement(edge, conn.version, hello)
            record_hello(self.registry, device, announced)
        self._announced[edge] = announced
        if self.heartbeats is not None:
            self.heartbeats.add(Heartbeat(edge, time.time(), None, hello["restarts"]), write=self.writes_beats_of(conn))
        resume = hello.get("resume") or {}
        acked = self.publish_log.hello(edge, resume.get("log"))
        replaced = self._connections.get(edge)
        self._connections[edge] = conn
        if self._flips.off_loop is not None:   # PostgreSQL: in a batch, off the loop (hub_support.OnlineFlips)
            self._flips.mark((edge,))
        else:
            self.registry.set_online(edge, True)
        self.m_connects.inc(result="accepted")
        return acked, replaced

    def connected(self, conn: EdgeConnection) -> None:
        """The welcome went out: observers may now send what waits for the edge."""
        for observer in self._observers:
            hook = getattr(observer, "edge_connected", None)
            if hook is not None:
                self.spawn(hook(conn.edge_id), name=f"connected-{conn.edge_id}")

    def detach(self, conn: EdgeConnection, reason: str) -> None:
        """The connection ended: its fragments fail; the edge is offline unless a newer one replaced it."""
        for state in list(conn.fragments.values()):
            state.finish(EdgeOffline(conn.edge_id, f"dropped its link while the fragment ran ({reason})", dropped=True))
        conn.fragments.clear()
        if self._connections.get(conn.edge_id) is not conn:
            return
        del self._connections[conn.edge_id]
        self._recorded_seen.pop(conn.edge_id, None)
        if not self.stopping:   # stopping: all are written offline at once (shutdown)
            self._flips.mark((conn.edge_id,))   # with every other disconnect of this turn, in one batch
        if self.heartbeats is not None and self.writes_beats_of(conn):
            self.heartbeats.touch(conn.edge_id, conn.last_seen)
        for observer in self._observers:
            hook = getattr(observer, "edge_disconnected", None)
            if hook is not None:
                try:
                    hook(conn.edge_id)
                except Exception:
                    log.exception("an observer failed on the disconnect of %s", conn.edge_id)

    def on_health(self, conn: EdgeConnection, frame: wire.Frame) -> None:
        health = {k: _plain(v) for k, v in frame.fields.items()}
        quota = self.quotas.view(conn.edge_id)
        if quota is not None:  # the federation's own count, whatever the edge says
            health["publish_quota"] = quota
        announced = self._announced.get(conn.edge_id)
        if announced is not None:
            announced["health"] = health
        if self.heartbeats is not None:
            self.heartbeats.add(Heartbeat(conn.edge_id, conn.last_seen, health, frame["restarts"]),
                                write=self.writes_beats_of(conn))
            self._recorded_seen[conn.edge_id] = conn.last_seen
        for observer in self._observers:   # a rollout waits for its devices to report healthy
            hook = getattr(observer, "edge_health", None)
            if hook is not None:
                try:
                    hook(conn.edge_id, health)
                except Exception:
                    log.exception("an observer failed on the health of %s", conn.edge_id)

    def silent_for(self, conn: EdgeConnection, now: float) -> float:
        """How long the edge has certainly sent nothing (nats_hub: frames waiting unread do not count)."""
        return now - conn.last_frame

    def writes_beats_of(self, conn: EdgeConnection) -> bool:
        """Whether this node writes the edge's heartbeats to the registry (nats_hub: one node each)."""
        return True

    def on_reply(self, conn: EdgeConnection, frame: wire.Frame) -> None:
        """ack / nack of a deployment: the announced models follow `active`; observers decide the rest."""
        announced = self._announced.get(conn.edge_id)
        if announced is not None:
            announced["models"] = dict(frame["active"])
            if frame.get("functions") is not None:
                announced["capabilities"]["functions"] = list(frame["functions"])
        for observer in self._observers:
            hook = getattr(observer, "edge_replied", None)
            if hook is not None:
                hook(conn.edge_id, frame)

    def on_rows(self, conn: EdgeConnection, frame: wire.Frame) -> None:
        state = conn.fragments.get(frame["qid"])
        if state is None or state.done:
            return  # rows of a fragment we cancelled may still be on their way
        n, seq = frame["n"], frame["seq"]
        if seq != state.next_seq:
            self._break(conn, state, f"rows frame {seq} arrived where {state.next_seq} was expected")
            return
        if state.received + n > state.granted:
            self._break(conn, state, f"the edge sent {state.received + n} rows with a credit of {state.granted}")
            return
        state.next_seq += 1
        state.received += n
        names = frame.get("names")
        if names is not None:
            state.names = list(names)
        self.m_fragment_rows.inc(n)
        state.queue.put_nowait(RowBatch(state.names, n, frame["cols"]))

    def on_end(self, conn: EdgeConnection, frame: wire.Frame) -> None:
        state = conn.fragments.get(frame["qid"])
        if state is not None:
            state.finish(_End(frame))

    def on_error(self, conn: EdgeConnection, frame: wire.Frame) -> None:
        """An error frame about one of our fragments (say duplicate_query) ends that fragment."""
        ref = frame.get("ref")
        state = conn.fragments.get(ref) if isinstance(ref, str) else None
        if state is not None:
            state.finish(FragmentError("error", {"kind": "ProtocolError", "message": f"{frame['code']}: "
                                                 f"{frame['message']}", "line": None, "column": None},
                                       edge_id=conn.edge_id, rows=state.received))

    def _break(self, conn: EdgeConnection, state: FragmentState, message: str) -> None:
        """The edge broke the fragment protocol: end the fragment with an error and cancel it."""
        state.finish(FragmentError("error", {"kind": "ProtocolError", "message": message, "line": None,
                                             "column": None}, edge_id=conn.edge_id, rows=state.received))
        self.m_protocol.inc(code="fragment")
        conn.post(wire.make("cancel", qid=state.qid, reason=message))

    def on_publish(self, conn: EdgeConnection, frame: wire.Frame) -> None:
        if not self._within_quota(conn, frame):
            return
        if self.publish_log.accept(conn.edge_id, frame.fields):
            self.m_published.inc()
        else:
            self.m_duplicates.inc()
        if self.publish_log.pending >= 1024:
            self._flush_now.set()

    def _within_quota(self, conn: EdgeConnection, frame: wire.Frame) -> bool:
        """Whether a publish frame may go on to the log (federation/publish_quota.py says why not)."""
        quota = self.quotas.of(conn.edge_id)
        if conn.publish_hold is not None:
            if frame.get("hold") != conn.publish_hold:
                self.quotas.count(quota, "held")  # sent before the edge heard the refusal: resent later
                return False
            conn.publish_hold = None
        seq = frame["seq"]
        if seq <= self.publish_log.last(conn.edge_id):
            return True  # a duplicate costs nothing (and is acknowledged again)
        reason = quota.take(conn.frame_bytes)
        if reason is None:
            return True
        self.quotas.count(quota, reason)
        conn.publish_hold = self.quotas.next_hold()
        retry = max(0.05, quota.wait_for(conn.frame_bytes))
        limit = (f"{self.config.publish_records_per_s:g} records" if reason == "records"
                 else f"{self.config.publish_bytes_per_s:g} bytes")
        conn.post(wire.make("error", code="over_quota", ref=seq, hold=conn.publish_hold, retry_after_s=retry,
                            message=f"this device publishes more than {limit} a second; record {seq} and "
                                    f"those after it were not accepted: resend them in {retry:.2f} s"))
        return False

    # --- registry listener (only removals matter: a deleted device is disconnected) --------------
    def device_removed(self, device_id: str) -> None:
        conn = self._connections.get(device_id)
        if conn is not None:
            self.spawn(conn.close(wire.CLOSE_CODES["unauthorized"], "the device was deleted"))
        self._announced.pop(device_id, None)
        self.quotas.forget(device_id)

    def device_changed(self, device: Device) -> None:
        pass

    def online_changed(self, device_ids, online: bool) -> None:
        pass

    def reset(self, devices) -> None:
        known = {d.id for d in devices}
        for edge in [e for e in self._connections if e not in known]:
            self.device_removed(edge)

    # --- background work -------------------------------------------------------------------------
    def _flush_publish(self) -> None:
        """Commit; live subscribers get the new records, and edges their publish_ack."""
        records, acks = self.publish_log.flush()
        for record in records:
            for sub in list(self._subscriptions):
                if sub.wants(record):
                    sub.offer(record)
        for edge, (upto, log_id) in acks.items():
            conn = self._connections.get(edge)
            if conn is not None and not conn.closing and self._acks_publish(conn):
                fields = {"upto": upto} if log_id is None else {"upto": upto, "log": log_id}
                conn.post(wire.make("publish_ack", **fields))

    def _acks_publish(self, conn) -> bool:
        """Whether this node sends `conn` its publish_ack (on NATS, JetStream acknowledged it)."""
        return True

    async def _flush_loop(self) -> None:
        last_trim = time.monotonic()
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), self.config.publish_flush_s)
            self._flush_now.clear()
            try:
                self._flush_publish()
                if time.monotonic() - last_trim > 60:
                    last_trim = time.monotonic()
                    self.publish_log.trim(time.time() - self.config.publish_retention_s)
            except Exception:  # a locked database must not stop acknowledging for good
                log.exception("committing published records failed")

    async def _sweep_loop(self) -> None:
        """Edges silent for 3 × heartbeat_s are closed (and so marked offline)."""
        limit = 3 * self.config.heartbeat_s
        every = min(self.config.heartbeat_s, 5.0)
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + every
            await asyncio.sleep(every)
            now = time.monotonic()
            # woken a heartbeat or more late, this loop was held: the edges' frames may wait
            # unread in their sockets, so silence is judged at the next sweep, after the reads
            held = loop.time() - due >= self.config.heartbeat_s
            for conn in [] if held else list(self._connections.values()):
                if not conn.closing and self.silent_for(conn, now) > limit:
                    log.info("edge %s silent for %.0f s: closing", conn.edge_id, self.silent_for(conn, now))
                    self.m_silent.inc()
                    self.spawn(conn.close(wire.CLOSE_CODES["protocol_error"], f"no frame for {limit:g} s"))
            if self.heartbeats is not None:   # last seen moved by other frames than health (rows, publish)
                recorded = self._recorded_seen
                for edge, conn in self._connections.items():
                    if conn.last_seen - recorded.get(edge, 0.0) >= TOUCH_GRANULARITY_S and self.writes_beats_of(conn):
                        self.heartbeats.touch(edge, conn.last_seen)
                        recorded[edge] = conn.last_seen

    # --- the route -------------------------------------------------------------------------------
    async def serve(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """Handle GET /v1/edges/connect for an authenticated device token."""
        return await serve_edge(self, request, principal)

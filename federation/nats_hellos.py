"""How a federation node on NATS answers an edge's hello (federation/nats_hub.py).

The subject names the edge (NATS permissions vouch for it); the hello is checked, the device looked
up, what it announces recorded in the registry (federation/hello_record.py), and the edge held.
On PostgreSQL the registry's part runs in HELLO_WORKERS threads of its own, not on the event loop:
in a connect storm of 10,000 edges each hello's three round trips there held a node's loop 6–7 s
(waiting for connections and reads), hellos went unanswered and every frame behind them waited.
A hello being answered so is pending: the edge's other frames meanwhile are not adopted, and its
next hello (it gave up waiting) is answered after it, so the edge is held with its newest session.
A hello still waiting for an earlier one when a newer one comes is dropped unanswered (its edge
gave up on it): otherwise every retry in a storm queues the same edge's registry work once more.
Every `HELLO_SUMMARY_S` the node logs how its hellos waited and ran (HelloLaneStats).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from federation.edge_link import EdgeConnection, hello_too_large
from federation.hello_record import announcement, find_and_record
from federation.nats_edge_conn import NatsEdgeConnection
from streamql import wire

log = logging.getLogger("streamql.federation.nats")

HELLO_WORKERS = 3   # threads answering hellos' registry work (the registry's pool: registry_pg_pool.POOL_SIZE)
WAIT_FOR_HELLO = 256   # an edge's messages kept while its hello is answered; more are dropped
KIND_HEADER = "Sql-Kind"   # a message so marked carries no frame: "bye" (the edge leaves)
HELLO_SUMMARY_S = 30.0     # how often the hello lane's figures are logged (when there were hellos)

__all__ = ["NatsHellos", "HELLO_WORKERS", "KIND_HEADER", "refused"]


class NatsHellos:
    """Mixed into NatsHub (which sets `_hello_lane`, `_hellos_pending` and `stopping`)."""

    def _open_hello_lane(self) -> None:
        """Threads for the hellos' registry work, when the registry can run work off the loop."""
        self._hello_stats = HelloLaneStats()
        if getattr(self.registry, "run_off_loop", None) is not None:
            self._hello_lane = ThreadPoolExecutor(HELLO_WORKERS, thread_name_prefix="streamql-hello")

    def _close_hello_lane(self) -> None:
        if self._hello_lane is not None:
            self._hello_lane.shutdown(wait=False, cancel_futures=True)

    async def _hello(self, edge: str, hello: wire.Frame, size: int, msg) -> None:
        if self._hello_lane is None:   # SQLite: a page read, on the loop
            await self._reply(msg, self._accept_hello(edge, hello, size))
            return
        # not awaited here: the subscription's next messages (other edges' frames) go on meanwhile
        previous = self._hellos_pending.get(edge)
        self._hellos_pending[edge] = self.spawn(self._hello_off_loop(edge, hello, size, msg, previous),
                                                name=f"hello-{edge}")

    async def _hello_off_loop(self, edge: str, hello: wire.Frame, size: int, msg, previous) -> None:
        stats = self._hello_stats
        arrived = time.monotonic()
        try:
            if previous is not None:   # the edge's earlier hello first: the later one is held
                await asyncio.wait([previous])
            if self._hellos_pending.get(edge) is not asyncio.current_task():
                stats.superseded += 1      # a newer hello of the edge waits: this one's asker is gone
                return
            started = time.monotonic()
            welcome = self._hello_refusal(edge, hello, size)
            if welcome is None:
                welcome = await self._accept_hello_off_loop(edge, hello, size)
            await self._reply(msg, welcome)
            stats.answered(started - arrived, time.monotonic() - started)
        finally:
            last = self._hellos_pending.get(edge) is asyncio.current_task()
            if last:
                del self._hellos_pending[edge]
            waited = self._after_hello.pop(edge, []) if last else []
        for later in waited:   # as if they came after the hello was answered, as they did
            await self._on_up(later)

    def _after_its_hello(self, edge: str, msg) -> bool:
        """A message from an edge whose hello is being answered: kept for after it (True), unless
        it is another hello (False: answered after the first, in turn)."""
        if (msg.headers or {}).get(KIND_HEADER) != "bye":
            with contextlib.suppress(wire.ProtocolError):
                if wire.decode(msg.data, accept=wire.FROM_EDGE).t == "hello":
                    return False
        waiting = self._after_hello.setdefault(edge, [])
        if len(waiting) < WAIT_FOR_HELLO:
            waiting.append(msg)
        return True

    async def _reply(self, msg, welcome: wire.Frame) -> None:
        if msg.reply:
            with contextlib.suppress(Exception):
                await self.nc.publish(msg.reply, wire.encode(welcome))

    def _hello_refusal(self, edge: str, hello: wire.Frame, size: int) -> wire.Frame | None:
        """A hello refused before the registry is asked; None when it may go on."""
        if hello["edge"] != edge:
            self.m_connects.inc(result="impersonation")
            return refused(f"this edge speaks as {edge!r}, not {hello['edge']!r}")
        if wire.negotiate(hello.get("versions") or [hello.v]) is None:
            self.m_connects.inc(result="unsupported_version")
            return refused(f"no common protocol version (this federation speaks {list(wire.SUPPORTED_VERSIONS)})")
        oversized = hello_too_large(hello, size, self.config)
        if oversized is not None:
            self.m_connects.inc(result="hello_too_large")
            return refused(oversized)
        return None

    def _accept_hello(self, edge: str, hello: wire.Frame, size: int, *, heard: float | None = None) -> wire.Frame:
        """Check a hello and hold the edge, the registry asked on the loop; the welcome."""
        refusal = self._hello_refusal(edge, hello, size)
        if refusal is not None:
            return refusal
        device = self.registry.get_device(edge)
        if device is None and self.registry.poll_external_changes():
            device = self.registry.get_device(edge)   # provisioned through another node
        if device is None:
            self.m_connects.inc(result="unknown")
            return refused(f"no device {edge!r} is registered")
        return self._hold(edge, hello, size, device, None, heard)

    async def _accept_hello_off_loop(self, edge: str, hello: wire.Frame, size: int) -> wire.Frame:
        """As _accept_hello, the registry's reads and writes in the hello lane."""
        version = wire.negotiate(hello.get("versions") or [hello.v])
        announced = announcement(edge, version, hello)
        try:
            device = await self.registry.run_off_loop(
                lambda: find_and_record(self.registry, edge, announced), self._hello_lane)
            if device is None and self.registry.poll_external_changes():   # provisioned through another node
                device = await self.registry.run_off_loop(
                    lambda: find_and_record(self.registry, edge, announced), self._hello_lane)
        except Exception as exc:  # noqa: BLE001 - the registry failed us
            log.warning("recording the hello of %s failed: %s", edge, exc)
            self.m_connects.inc(result="internal")
            return refused(f"the federation could not accept the connection: {type(exc).__name__}")
        if device is None:
            self.m_connects.inc(result="unknown")
            return refused(f"no device {edge!r} is registered")
        if self.stopping:
            return refused("this federation node is stopping")
        return self._hold(edge, hello, size, device, announced, None)

    def _hold(self, edge: str, hello: wire.Frame, size: int, device, announced: dict | None,
              heard: float | None) -> wire.Frame:
        """The edge's connection made this node's; the welcome."""
        conn = NatsEdgeConnection(self, edge, wire.negotiate(hello.get("versions") or [hello.v]))
        if heard is not None:
            conn.last_frame = heard
        try:
            _acked, replaced = self.attach(conn, device, hello, announced=announced)
        except Exception as exc:  # noqa: BLE001 - the registry failed us
            log.exception("accepting the hello of %s failed", edge)
            self.m_connects.inc(result="internal")
            return refused(f"the federation could not accept the connection: {type(exc).__name__}")
        if replaced is not None:    # the edge reconnected: what ran over its old session is gone
            replaced.close_reason = "replaced by a newer connection"
            if isinstance(replaced, EdgeConnection):
                self.spawn(replaced.close(wire.CLOSE_CODES["replaced"], "replaced by a newer connection"))
            replaced.closing = True
            self.detach(replaced, "replaced by a newer connection")
        self._keep_hello(edge, hello, size)
        self.connected(conn)
        return wire.make("welcome", accepted=True, server_time=time.time(),
                         heartbeat_s=float(self.config.heartbeat_s), publish_acked=0, max_frame=self.max_frame,
                         edge=edge, session=conn.session)


class HelloLaneStats:
    """How the hellos answered off the loop waited behind their edge's earlier hello (arrival to
    start) and took (the registry's work, its wait for a lane thread included); logged every
    HELLO_SUMMARY_S. Hellos lost before they reach the node (a node cut as a slow consumer) are
    in neither."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.since = clock()
        self.waits: list[float] = []
        self.works: list[float] = []
        self.superseded = 0

    def answered(self, waited: float, worked: float) -> None:
        self.waits.append(waited)
        self.works.append(worked)
        if self.clock() - self.since >= HELLO_SUMMARY_S:
            self.log()

    def log(self) -> None:
        if self.waits or self.superseded:
            log.warning("hellos over %.0f s: %d answered (waited p50 %.2f s, max %.2f s; took p50 %.3f s, "
                     "max %.2f s), %d superseded by a newer hello unanswered", self.clock() - self.since,
                     len(self.waits), _p50(self.waits), max(self.waits, default=0.0), _p50(self.works),
                     max(self.works, default=0.0), self.superseded)
        self.since, self.waits, self.works, self.superseded = self.clock(), [], [], 0


def _p50(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else 0.0


def refused(reason: str) -> wire.Frame:
    return wire.make("welcome", accepted=False, server_time=time.time(), heartbeat_s=5.0, publish_acked=0,
                     reason=reason)

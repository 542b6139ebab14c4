"""Parts of the edge hub (federation/hub.py) that are not about one connection: subscriptions to
published records, announced values made plain, and the registry writes of many edges batched.

At 10,000 edges the hub's per-edge costs add up: a disconnect wrote the registry in a transaction
of its own (10,000 commits when a federation stops or a network drops every edge at once), and
every health frame was converted to plain values by the general codec. `OnlineFlips` collects
the online/offline marks into batches (off the event loop on PostgreSQL); `plain` converts the msgpack
values a frame carries with a fast path for the plain types they almost always are.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from streamql import codec

if TYPE_CHECKING:
    from federation.hub import EdgeHub
    from federation.publish import PublishedRecord

log = logging.getLogger("streamql.federation.hub")

__all__ = ["Subscription", "plain", "signal_descriptions", "OnlineFlips"]


class Subscription:
    """Published records as they become durable: `async for record in subscription`.

    A subscriber slower than the edges loses the newest records once `maxsize` wait (counted in
    `dropped`; they are still in the log: `hub.publish_log.read(after=…)`).
    """

    def __init__(self, hub: "EdgeHub", flow: str | None, edges: Iterable[str] | None, maxsize: int):
        self.hub, self.flow = hub, flow
        self.edges = frozenset(edges) if edges is not None else None
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)
        self.dropped = 0
        self.closed = False

    def wants(self, record: PublishedRecord) -> bool:
        return (self.flow is None or record.flow == self.flow) and (self.edges is None or record.edge in self.edges)

    def offer(self, record: PublishedRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.hub._subscriptions.discard(self)
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> PublishedRecord:
        if self.closed and self.queue.empty():
            raise StopAsyncIteration
        record = await self.queue.get()
        if record is None:
            raise StopAsyncIteration
        return record

    async def __aenter__(self) -> "Subscription":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()



def plain(value: Any) -> Any:
    """`codec.to_plain` of a decoded frame's value, fast for str/int/float/bool/None/list/dict
    (a health frame is nothing else); anything else (numpy, times, hostile types) goes through
    the codec, and what cannot be converted becomes its repr."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is dict:
        return {k if type(k) is str else str(plain(k)): plain(v) for k, v in value.items()}
    if kind is list:
        return [plain(v) for v in value]
    try:
        return codec.to_plain(value)
    except codec.CodecError:
        return repr(value)


def signal_descriptions(capabilities: dict) -> list[dict]:
    """The announced signals as [{name, type, kind, rate_hz, …}] (a bare name becomes {name})."""
    out = []
    for item in capabilities.get("signals") or []:
        if isinstance(item, str):
            out.append({"name": item})
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            out.append({str(k): plain(v) for k, v in item.items()})
    return out


class OnlineFlips:
    """The registry's online flag of the hub's edges, written in batches. `mark(edges)` says an edge's
    link may have changed; what is written is what holds when the write runs (`wants_online(edge)`):
    online (last seen now) for an edge this node holds, else offline — so an edge that dropped and
    came back within one batch is written once, as it is.

    On the embedded registry (SQLite) the edges marked in one event-loop turn are written at its end
    in one transaction. On PostgreSQL (a registry with `write_online_off_loop`) every flip takes the
    device-change lock all nodes share, and waiting for it on the event loop held a node's loop 15 s
    at 10,000 edges (a burst of edges closed as silent, each a flip behind the other node's: the loop
    stopped reading, more edges looked silent): there one batch at a time is written from a worker
    thread, and the listeners hear it on the loop. An edge whose link changed while its batch was on
    its way is marked again by that change (or by the listeners: NatsHub) and written in the next."""

    RETRY_S = 1.0   # the registry failed (PostgreSQL restarting): the batch again after this

    def __init__(self, registry: Any, wants_online: Callable[[str], bool]):
        self.registry, self.wants_online = registry, wants_online
        self.off_loop = getattr(registry, "write_online_off_loop", None)
        self._pending: set[str] = set()
        self._scheduled = False
        self._writer: asyncio.Task | None = None
        self.written = 0      # edges written (both ways), for tests and the log
        self.failures = 0

    def __len__(self) -> int:
        return len(self._pending)

    def mark(self, edge_ids: Iterable[str]) -> None:
        self._pending.update(edge_ids)
        if self._scheduled or not self._pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:   # no loop (a synchronous caller): now
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        if self.off_loop is None:
            self.flush()
        elif self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_off_loop(), name="online-flips")

    async def _write_off_loop(self) -> None:
        while self._pending:
            edges = sorted(self._pending)
            self._pending = set()
            changes = {edge: bool(self.wants_online(edge)) for edge in edges}
            try:
                await self.off_loop(changes)
                self.written += len(changes)
            except Exception as exc:  # noqa: BLE001 - the registry failed: the same edges again, later
                self.failures += 1
                log.warning("writing %d edges on/offline failed (%s: %s); again in %.0f s", len(changes),
                            type(exc).__name__, exc, self.RETRY_S)
                self._pending.update(edges)
                await asyncio.sleep(self.RETRY_S)

    def flush(self) -> int:
        """Write what waits, now, on the calling thread, in one transaction (SQLite; shutdown)."""
        self._scheduled = False
        edges = sorted(self._pending)   # rows in id order, as every multi-row write (no deadlock)
        self._pending = set()
        if not edges:
            return 0
        transaction = getattr(self.registry, "transaction", None)
        with transaction() if transaction is not None else contextlib.nullcontext():
            for edge in edges:
                with contextlib.suppress(Exception):  # the device may have been deleted meanwhile
                    self.registry.set_online(edge, bool(self.wants_online(edge)))
        self.written += len(edges)
        return len(edges)

    def clear(self) -> None:
        """Forget what waits (the caller writes every edge offline itself)."""
        self._pending = set()

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Until nothing waits and no batch is on its way (at most `timeout_s`)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while (self._pending or self._scheduled or (self._writer is not None and not self._writer.done())) \
                and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    async def stop(self, timeout_s: float = 2.0) -> None:
        """The hub stops: the batch on its way may finish (bounded); nothing more is written."""
        self._pending = set()
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(writer), timeout_s)
            writer.cancel()

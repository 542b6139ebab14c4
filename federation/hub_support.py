"""Parts of the edge hub (federation/hub.py) that are not about one connection: subscriptions to
published records, announced values made plain, and the registry writes of many edges batched.

At 10,000 edges the hub's per-edge costs add up: a disconnect wrote the registry in a transaction
of its own (10,000 commits when a federation stops or a network drops every edge at once), and
every health frame was converted to plain values by the general codec. `OnlineWrites` collects
the offline marks of one event-loop turn into one transaction; `plain` converts the msgpack
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

__all__ = ["Subscription", "plain", "signal_descriptions", "OfflineWrites"]


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


class OfflineWrites:
    """Edges that went offline, written to the registry together at the end of the event-loop turn
    (one transaction for all the disconnects of that turn, not one each). An edge connected again
    by then is left online; `flush()` writes what waits at once (at shutdown)."""

    def __init__(self, registry: Any, is_connected: Callable[[str], bool]):
        self.registry, self.is_connected = registry, is_connected
        self._pending: dict[str, None] = {}
        self._scheduled = False

    def add(self, edge_id: str) -> None:
        self._pending[edge_id] = None
        if not self._scheduled:
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:   # no loop (a synchronous caller): now
                self.flush()

    def __len__(self) -> int:
        return len(self._pending)

    def clear(self) -> None:
        """Forget what waits (the caller writes every edge offline itself)."""
        self._pending = {}

    def flush(self) -> int:
        self._scheduled = False
        edges = [edge for edge in self._pending if not self.is_connected(edge)]
        self._pending = {}
        if not edges:
            return 0
        transaction = getattr(self.registry, "transaction", None)
        with transaction() if transaction is not None else contextlib.nullcontext():
            for edge in sorted(edges):   # rows in id order, as every multi-row write (no deadlock)
                with contextlib.suppress(Exception):  # the device may have been deleted meanwhile
                    self.registry.set_online(edge, False)
        return len(edges)



class OnlineAgain:
    """Edges another node wrote offline while this node still hears them (a NATS edge is served by
    every node: one whose loop lagged past three heartbeats closes it and writes it offline, and the
    registry's change feed takes it offline on the others too): written online again, together at
    the end of the event-loop turn, after every listener heard the offline write. `hears(edge)`
    says whether this node holds a live connection of it."""

    def __init__(self, registry: Any, hears: Callable[[str], bool]):
        self.registry, self.hears = registry, hears
        self._pending: set[str] = set()
        self.rewritten = 0

    def offline_written(self, device_ids) -> None:
        found = [edge for edge in device_ids if self.hears(edge)]
        if not found:
            return
        if not self._pending:
            with contextlib.suppress(RuntimeError):   # no loop: nothing runs here to correct
                asyncio.get_running_loop().call_soon(self.flush)
        self._pending.update(found)

    def flush(self) -> int:
        edges = [edge for edge in self._pending if self.hears(edge)]
        self._pending = set()
        transaction = getattr(self.registry, "transaction", None)
        with transaction() if transaction is not None else contextlib.nullcontext():
            for edge in sorted(edges):   # rows in id order, as every multi-row write (no deadlock)
                with contextlib.suppress(Exception):  # deleted meanwhile
                    self.registry.set_online(edge, True)
        self.rewritten += len(edges)
        return len(edges)

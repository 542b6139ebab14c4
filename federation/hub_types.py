"""The values the edge hub (federation/hub.py) hands to its callers: a fragment's row batches, the
two ways a fragment fails, the observer protocol the deployer implements, and the federation's side
of one running fragment. Separate so the transports (the WebSocket hub, NATS) share them."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from streamql import wire

__all__ = ["RowBatch", "EdgeOffline", "FragmentError", "HubObserver", "FragmentState", "End"]


@dataclass(frozen=True, slots=True)
class RowBatch:
    """One `rows` frame of a fragment: `n` rows in column-major `cols` (numpy arrays or lists)."""

    names: list[str]
    n: int
    cols: list

    def rows(self) -> list:
        """Plain rows: a value per row for one column, tuples for several (wire.rows_of)."""
        return wire.rows_of(self.n, self.cols)


class EdgeOffline(Exception):
    """The edge is not connected (`dropped` False) or its link dropped while a fragment ran (True)."""

    def __init__(self, edge_id: str, reason: str = "is not connected", *, dropped: bool = False):
        super().__init__(f"edge {edge_id!r} {reason}")
        self.edge_id, self.reason, self.dropped = edge_id, reason, dropped


class FragmentError(Exception):
    """A fragment ended with `limit`, `error` or `cancelled` (`error` as the edge sent it), or broke
    the protocol (outcome `error`, kind ProtocolError)."""

    def __init__(self, outcome: str, error: dict | None = None, *, edge_id: str | None = None, rows: int = 0):
        message = (error or {}).get("message") or outcome
        super().__init__(f"{outcome}: {message}")
        self.outcome, self.error, self.edge_id, self.rows = outcome, error, edge_id, rows


class HubObserver(Protocol):
    """What the deployer implements to hear from the hub (every method optional)."""

    async def edge_connected(self, edge_id: str) -> None: ...
    def edge_disconnected(self, edge_id: str) -> None: ...
    def edge_replied(self, edge_id: str, frame: wire.Frame) -> None: ...  # ack / nack
    def edge_health(self, edge_id: str, health: dict) -> None: ...        # a health frame


class End:
    """A fragment's `end` frame, queued after its rows."""

    __slots__ = ("frame",)

    def __init__(self, frame: wire.Frame):
        self.frame = frame


class FragmentState:
    """The federation's side of one running fragment (its rows wait here for the consumer)."""

    __slots__ = ("qid", "edge_id", "queue", "granted", "received", "next_seq", "names", "done")

    def __init__(self, qid: str, edge_id: str, credit: int):
        self.qid, self.edge_id = qid, edge_id
        self.queue: asyncio.Queue = asyncio.Queue()
        self.granted = credit      # rows the edge may send in total so far
        self.received = 0
        self.next_seq = 0
        self.names: list[str] = []
        self.done = False          # ended, failed or dropped: later frames for it are ignored

    def finish(self, item: Any) -> None:
        if not self.done:
            self.done = True
            self.queue.put_nowait(item)

"""The values the edge hub (federation/hub.py) hands to its callers: a fragment's row batches, the
two ways a fragment fails, the observer protocol the deployer implements, and the federation's side
of one running fragment. Separate so the transports (the WebSocket hub, NATS) share them."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from streamql import wire

__all__ = ["RowBatch", "EdgeOffline", "FragmentError", "HubObserver", "FragmentState", "End", "Grants"]

LEAST_FOLLOWED_CREDIT = 16   # rows: a window following its reader never shrinks below this


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


class Grants:
    """When the federation grants a fragment more credit, and how much (the consumer's side of
    `wire.CreditWindow`). `took(n)` after the consumer took n rows: the rows to grant now (0: none).

    Fixed (`window_s` None): the edge may have `credit` rows unconsumed; each time the consumer has
    taken half of that, as much again.

    Following the reader (`window_s`, a standing stream): the edge may have about what the consumer
    took in the last `window_s` seconds unconsumed — at least LEAST_FOLLOWED_CREDIT rows, at most
    `most` — starting from `credit`. A reader that keeps up doubles the window at each grant until
    the source's rate limits it; one that stops reading stops the grants, so the edges pause after
    `window_s` of their rows, not after a fixed count (512 rows were 51 s of a 10 Hz signal, which
    every edge went on computing for a client that had left without reading; bench/README.md, soak).

    >>> g = Grants(100); [g.took(30), g.took(30)]
    [0, 60]
    >>> now = [0.0]; g = Grants(64, window_s=2.0, clock=lambda: now[0])
    >>> now[0] = 1.0; g.took(32)        # 32 rows a second: the window moves to 64 (2 s of them)
    32
    >>> now[0] = 9.0; g.took(32)        # 4 rows a second: nothing granted, the window shrinks toward 16
    0
    """

    __slots__ = ("window", "most", "window_s", "clock", "grant_at", "consumed", "since")

    def __init__(self, credit: int, *, window_s: float | None = None, most: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.window = credit
        self.most = max(credit, most or credit)
        self.window_s, self.clock = window_s, clock
        self.grant_at = max(1, credit // 2)
        self.consumed = 0
        self.since = clock() if window_s is not None else 0.0

    def took(self, n: int) -> int:
        self.consumed += n
        if self.consumed < self.grant_at:
            return 0
        consumed, self.consumed = self.consumed, 0
        if self.window_s is None:
            return consumed
        now = self.clock()
        rate = consumed / max(now - self.since, 1e-3)
        self.since = now
        target = min(self.most, max(LEAST_FOLLOWED_CREDIT, int(rate * self.window_s)))
        outstanding = self.window - consumed       # granted, not yet taken by the consumer
        grant = max(0, target - outstanding)
        self.window = outstanding + grant
        self.grant_at = max(1, self.window // 2)
        return grant

"""A statement's result on its way from a worker thread to its client: `StatementResult`.

Columns, then rows in batches as the statement makes them, then every device's outcome. The rows
cross from the worker to the event loop through a bounded channel (CHANNEL_BATCHES batches), so a
client that reads slowly slows its statement down instead of filling memory, and a client that
leaves cancels it. A cheap statement with a few batches is run to its end in its worker first
(`run_at_once`) and answered whole. The service that makes them is federation/statements.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from streamql.errors import QueryCancelled

from federation.errors import Busy

if TYPE_CHECKING:
    from federation.fleet_access import HubFleetAccess
    from federation.lanes import Slot, StatementPool

BATCH_ROWS = 512
CHANNEL_BATCHES = 16
STATUS_POLL_S = 0.25
CLOSE_WAIT_S = 2.0          # how long closing a result waits for its worker to notice
FIRST_ROW_WAIT_S = 1.0      # how long a stream's response waits for its first row before it starts

_END = object()
_NOTHING = object()


async def _get(channel: asyncio.Queue, timeout: float | None):
    """The channel's next item, or _NOTHING after `timeout` seconds. Not asyncio.wait_for: on
    Python 3.11 it returns the item instead of raising when the task is cancelled just as the item
    arrives, and the cancel (a WebSocket's `cancel`, a client leaving) would be lost. A cancelled
    get leaves the item in the queue."""
    try:
        async with asyncio.timeout(timeout):
            return await channel.get()
    except TimeoutError:
        return _NOTHING


class StatementAccess:
    """The fleet access of one statement: the federation's, remembering the feeds the statement
    opens, so that cancelling it closes them from the event loop at once — the cancel frames go to
    the edges within a moment of the client leaving, not when a worker thread gets round to
    closing the statement's operators (busy workers, a stream nobody reads)."""

    def __init__(self, access: HubFleetAccess):
        self._access = access
        self._feeds: list = []
        self._lock = threading.Lock()
        self._closed = False

    def __getattr__(self, name: str):
        return getattr(self._access, name)

    def open_feed(self, *, watch: bool = False):
        feed = self._access.open_feed(watch=watch)
        with self._lock:
            closed = self._closed
            if not closed:
                self._feeds.append(feed)
        if closed:
            feed.close()
        return feed

    def close_feeds(self) -> None:
        """Close every feed (thread-safe; each cancels its fragments on the loop)."""
        with self._lock:
            self._closed = True
            feeds, self._feeds = self._feeds, []
        for feed in feeds:
            with contextlib.suppress(Exception):
                feed.close()


class StatementResult:
    """Columns, then rows as they come, then every device's outcome (see the module docstring)."""

    def __init__(self, columns: list[str], types: list, kind: str, *, rows: list | None = None,
                 message: str | None = None, deployment_id: str | None = None, status=None):
        self.columns = list(columns)
        self.types = [str(t) for t in types]
        self.kind = kind
        self.message = message
        self.deployment_id = deployment_id
        self.status = status
        self._ready: list = [rows] if rows else []    # row batches not yet taken
        self._channel: asyncio.Queue | None = None     # row batches from the worker (streaming)
        self._cancel: threading.Event | None = None
        self._task: asyncio.Future | None = None
        self._wake: asyncio.Event | None = None         # set when the statement is stopped
        self._result = None
        self._finished = True                          # nothing more will come
        self._stopped: str | None = None               # why the federation stopped it (shutting down)
        self.access: StatementAccess | None = None     # its feeds, closed at once when it is cancelled

    @classmethod
    def streaming(cls, result, pool: StatementPool, slot: Slot | None = None,
                  access: StatementAccess | None = None, *, batches=None,
                  ready: list | None = None) -> "StatementResult":
        """Rows of an engine Result, a batch at a time in a worker thread; `slot` (the caller's, in
        the pool) is released when the statement ends. Between batches no thread is held: a batch
        waits in the bounded channel until the client takes it (federation/lanes.py). `batches`
        and `ready`: the result's batch iterator already started, and the batches taken from it."""
        out = cls(result.columns, result.types, result.kind, status=result.status)
        out.access = access
        out._finished = False
        out._ready = [_row_lists(batch) for batch in ready or ()]
        channel: asyncio.Queue = asyncio.Queue(CHANNEL_BATCHES)
        cancel = threading.Event()
        out._channel, out._cancel = channel, cancel
        out._wake = asyncio.Event()
        stream = slot is not None and slot.lane is pool.streams
        batches = result.batches(BATCH_ROWS) if batches is None else batches

        def step():
            if cancel.is_set():
                raise QueryCancelled("the client went away")
            batch = next(batches, _END)
            if batch is _END:
                _merged(result.status)
                return _END
            return _row_lists(batch)

        async def put(item) -> bool:
            """Into the channel, unless the statement is stopped meanwhile (False)."""
            if not channel.full():
                channel.put_nowait(item)
                return True
            putting = asyncio.ensure_future(channel.put(item))
            woken = asyncio.ensure_future(out._wake.wait())
            try:
                await asyncio.wait({putting, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
                if not putting.done():
                    putting.cancel()
            return putting.done() and not putting.cancelled()

        async def produce() -> None:
            try:
                while True:
                    item = await pool.submit(step, stream=stream)
                    if not await put(item) or item is _END:
                        break
            except asyncio.CancelledError:
                raise
            except QueryCancelled:
                if not cancel.is_set():
                    await put(QueryCancelled("the statement was cancelled"))
            except BaseException as exc:  # noqa: BLE001 - handed to the reader
                if not cancel.is_set():
                    await put(exc)
            finally:
                with contextlib.suppress(Exception):
                    await pool.submit(result.close, stream=stream)

        out._result = result
        out._task = asyncio.ensure_future(produce())
        pool.running.add(out)

        def done(_task) -> None:
            pool.running.discard(out)
            if slot is not None:
                slot.release()
        out._task.add_done_callback(done)
        return out

    async def first(self) -> None:
        """Wait for the first rows (or the end); raise the statement's error if it fails first. A
        stream may take its time to give a first row (a slow sensor): for a stream the wait ends
        after FIRST_ROW_WAIT_S, once its fragments have had the time to start or fail."""
        if self._finished or self._ready:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FIRST_ROW_WAIT_S if self.kind == "stream" else None
        while True:
            wait = STATUS_POLL_S if deadline is None else min(STATUS_POLL_S, deadline - loop.time())
            if wait <= 0:
                return
            item = await _get(self._channel, wait)
            if self._stopped is not None:    # the federation is stopping: no first row will come
                self._finished = True        # before any answer: 503 as for a statement still waiting
                raise Busy(f"{self._stopped}; try again shortly")   # for a slot — not the client's fault
            if item is not _NOTHING:
                break
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        if item is _END:
            self._finished = True
        else:
            self._ready.append(item)

    async def items(self) -> AsyncIterator[list | dict]:
        """Lists of rows; for a stream on the fleet also {"status_change": …} as devices come and go."""
        version = 0
        watch = self.status is not None and self.kind == "stream"
        while self._ready:
            yield self._ready.pop(0)
        while not self._finished:
            item = await _get(self._channel, STATUS_POLL_S)
            if self._stopped is not None:
                self._finished = True
                raise QueryCancelled(self._stopped)
            if watch:
                changes, version = self.status.changes(version)
                for change in changes:
                    yield {"status_change": change}
            if item is _NOTHING:
                continue
            if item is _END:
                self._finished = True
                break
            if isinstance(item, BaseException):
                self._finished = True
                raise item
            yield item

    async def rows(self) -> AsyncIterator[list]:
        async for item in self.items():
            if isinstance(item, list):
                for row in item:
                    yield row

    def status_dict(self, detail: bool | None = None) -> dict:
        if self.status is None:
            return {}
        return self.status.to_dict(detail) if hasattr(self.status, "to_dict") else dict(self.status)

    def stop(self, reason: str) -> None:
        """Stop the statement now, from the event loop (the federation is shutting down): its
        reader ends within a moment: with QueryCancelled(reason) after its first rows, Busy
        (503) before them."""
        self._stopped = reason
        self._cancel_now()

    def _cancel_now(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
        if self._wake is not None:
            self._wake.set()
        if self._result is not None and self._result.ctx is not None:
            self._result.ctx.cancel.set()
        if self.access is not None:
            self.access.close_feeds()

    async def aclose(self) -> None:
        """Stop the statement (the client went away or was done)."""
        self._cancel_now()
        if self._task is not None and not self._task.done() and self._stopped is None:
            # (when the federation stops it, nothing waits: the process is ending)
            # the worker notices within a second; one stuck inside a long call is left to finish
            # (its slot is released when it does), so closing never holds up the caller for long
            await asyncio.wait({self._task}, timeout=CLOSE_WAIT_S)


AT_ONCE_BATCHES = 2          # a cheap statement with more rows than this streams as any other


def run_at_once(query: Callable[[], Any]) -> "StatementResult | tuple":
    """A cheap statement run to its end in this worker: a complete StatementResult; or, when it has
    more than AT_ONCE_BATCHES batches (or fails after its first), (result, its batches, the ones
    already taken) for StatementResult.streaming to go on with."""
    result = query()
    batches = result.batches(BATCH_ROWS)
    ready: list = []
    try:
        for _ in range(AT_ONCE_BATCHES):
            batch = next(batches, _END)
            if batch is _END:
                _merged(result.status)
                result.close()
                return StatementResult(result.columns, result.types, result.kind, status=result.status,
                                       rows=[row for taken in ready for row in _row_lists(taken)])
            ready.append(batch)
    except Exception as exc:
        if not ready:
            result.close()
            raise
        batches = _raising(exc)     # the rows before the error go out first, then the error
    return result, batches, ready


def _raising(exc: BaseException):
    raise exc
    yield  # noqa: unreachable - makes this a generator


def _row_lists(batch: list) -> list:
    return [list(row) if isinstance(row, tuple) else [row] for row in batch]


def _merged(status) -> None:
    """The time from the last fragment's end to the last row: the merge at the federation."""
    ended = getattr(status, "fan_out_ended", None)
    if ended is not None:
        status.timings["merge"] = time.perf_counter() - ended


def running_loop() -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:   # made outside the loop (tests): the loop that will run it
        return asyncio.get_event_loop_policy().get_event_loop()

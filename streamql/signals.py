"""Sensors as streams: what `signal_stream`, `ts_signal_stream` and `signal_value` read.

A `Signal` opens any number of independent readers. Each reader is an iterator of stream items
(see `streamql.batch`). Recorded sources (arrays, lists) replay from the start for every reader
in large batches; an iterator is consumed once, one reading at a time; a callable is polled; a
`LiveSignal` is a hub that producers push into (the edge daemon's sensors, UDP input) and that
fans out to every open reader, delivering what has arrived at once so latency stays low.
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .batch import IDLE, Batch
from .clock import SYSTEM_CLOCK, Clock

REPLAY_BATCH = 1 << 18
"""Readings per batch of a recorded series (views of it, never copies: 2 MB of float64). Each
batch costs a query a few tens of µs of Python whatever its size; at 65,536 that was a third of
a tumbling mean's time (bench/bench_core.py B1), at this size a tenth."""
IDLE_TICK = 0.1


class Signal:
    """A named sensor. Subclasses implement `open` and `latest`."""

    timestamped = False
    # the position of the first reading open() gives, when a restarted query can resume from a
    # position (it skips what it had read); None for a sensor that cannot go back
    position_base: int | None = None

    def __init__(self, name: str, type_name: str | None = None):
        self.name = name
        self.type_name = type_name  # declared value type ("Real", "Vector of Real", …) or None

    def open(self, clock: Clock = SYSTEM_CLOCK) -> Iterator[Any]:
        raise NotImplementedError

    def latest(self) -> Any:
        """The most recent reading, or None when there is none."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, "type": self.type_name, "source": type(self).__name__,
                "timestamped": self.timestamped}


class ArraySignal(Signal):
    """A recorded series replayed for every reader in large batches (views, no copies)."""

    position_base = 0   # every open() replays from the start

    def __init__(self, name: str, values: np.ndarray | list, times: np.ndarray | None = None,
                 type_name: str | None = None, batch_size: int = REPLAY_BATCH):
        super().__init__(name, type_name)
        if isinstance(values, list):
            values = _as_column(values)
        self.values = values
        self.times = None if times is None else np.asarray(times, dtype=np.float64)
        self.timestamped = self.times is not None
        self.batch_size = batch_size

    def open(self, clock: Clock = SYSTEM_CLOCK) -> Iterator[Any]:
        values, times, size = self.values, self.times, self.batch_size
        for start in range(0, len(values), size):
            stop = start + size
            yield Batch(values[start:stop], None if times is None else times[start:stop])

    def latest(self) -> Any:
        if len(self.values) == 0:
            return None
        last = self.values[-1]
        return last.item() if isinstance(last, np.generic) else last


class IteratorSignal(Signal):
    """Readings pulled one at a time from an iterator, shared by all readers and consumed once."""

    def __init__(self, name: str, iterator: Iterable, type_name: str | None = None, timestamped: bool = False):
        super().__init__(name, type_name)
        self._iterator = iter(iterator)
        self._lock = threading.Lock()
        self._latest = None
        self.timestamped = timestamped

    def open(self, clock: Clock = SYSTEM_CLOCK) -> Iterator[Any]:
        iterator, lock = self._iterator, self._lock
        while True:
            with lock:
                try:
                    reading = next(iterator)
                except StopIteration:
                    return
            self._latest = reading
            yield reading

    def latest(self) -> Any:
        return self._latest[1] if self.timestamped and self._latest is not None else self._latest


class CallableSignal(Signal):
    """A callable polled for each reading (optionally every `period` seconds).

    It returns one reading, or None when it has none yet; raising StopIteration ends the stream.
    """

    def __init__(self, name: str, function: Callable[[], Any], type_name: str | None = None,
                 period: float | None = None, timestamped: bool = False):
        super().__init__(name, type_name)
        self.function = function
        self.period = period
        self.timestamped = timestamped

    def open(self, clock: Clock = SYSTEM_CLOCK) -> Iterator[Any]:
        function, period = self.function, self.period
        while True:
            try:
                reading = function()
            except StopIteration:
                return
            if reading is None:
                clock.sleep(period or IDLE_TICK)
                yield IDLE
                continue
            yield reading
            if period:
                clock.sleep(period)

    def latest(self) -> Any:
        try:
            reading = self.function()
        except StopIteration:
            return None
        return reading[1] if self.timestamped and reading is not None else reading


class LiveSignal(Signal):
    """A hub that producers push readings into and that fans out to every open reader.

    Each reader has a bounded queue; when a reader falls behind by more than `capacity` readings
    the oldest are dropped and counted in `dropped` (a live sensor does not wait for its slowest
    consumer).
    """

    timestamped = True

    def __init__(self, name: str, type_name: str | None = None, capacity: int = 1 << 20,
                 clock: Clock = SYSTEM_CLOCK, idle_tick: float = IDLE_TICK, linger: float = 0.0):
        super().__init__(name, type_name)
        self.capacity = capacity
        self.clock = clock
        self.idle_tick = idle_tick
        # after handing readings over, a reader sleeps this long before it takes the next ones
        # (on its query's clock: a cancel wakes it at once), so it wakes and its query passes
        # rows on once per `linger` at most, however often readings arrive (0: at each push)
        self.linger = linger
        self.dropped = 0
        self.pushed = 0
        self._cond = threading.Condition()
        self._readers: list[_LiveQueue] = []
        self._latest: Any = None
        self._latest_time: float | None = None
        self._ended = False
        self.epoch: str | None = None   # the numbering of position_base (declare_sequence)

    # -- producers ---------------------------------------------------------------------------
    def push(self, value: Any, time: float | None = None) -> None:
        """One reading, stamped now unless a time is given."""
        stamp = self.clock.now() if time is None else float(time)
        with self._cond:
            self._latest, self._latest_time = value, stamp
            self.pushed += 1
            for queue in self._readers:
                queue.append_one(value, stamp, self)
            self._cond.notify_all()

    def push_batch(self, values: np.ndarray | list, times: np.ndarray | None = None) -> None:
        """Many readings at once (oldest first); stamped now unless times are given."""
        n = len(values)
        if n == 0:
            return
        if times is None:
            times = np.full(n, self.clock.now())
        else:
            times = np.asarray(times, dtype=np.float64)
        last = values[-1]
        with self._cond:
            self._latest = last.item() if isinstance(last, np.generic) else last
            self._latest_time = float(times[-1])
            self.pushed += n
            for queue in self._readers:
                queue.append_batch(values, times, self)
            self._cond.notify_all()

    def end(self) -> None:
        """No more readings: open readers finish after draining what they have."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    # -- consumers ---------------------------------------------------------------------------
    def latest(self) -> Any:
        return self._latest

    def latest_time(self) -> float | None:
        return self._latest_time

    @property
    def reader_count(self) -> int:
        return len(self._readers)

    def open(self, clock: Clock | None = None) -> Iterator[Any]:
        # Register now, not at the first pull: readings pushed in between must not be lost.
        queue = _LiveQueue()
        with self._cond:
            self._readers.append(queue)
            # the position of its first reading, when readings have positions (position_base)
            position = None if self.position_base is None else self.position_base + self.pushed
            pushed = self.pushed
        reader = _LiveReader(self, queue, clock)
        reader.position = position
        reader._pushed_at_open = pushed
        return reader

    def declare_sequence(self, epoch: str, sequence: int) -> None:
        """The next reading pushed is number `sequence` of the numbering `epoch` (a flow's
        checkpointed publisher, resuming: its subscribers skip what they had read of it)."""
        with self._cond:
            self.position_base = sequence - self.pushed
            self.epoch = epoch

    def _unregister(self, queue: "_LiveQueue") -> None:
        with self._cond:
            if queue in self._readers:
                self._readers.remove(queue)

    def _drain(self, queue: "_LiveQueue", clock: Clock | None = None) -> Iterator[Any]:
        cond = self._cond
        linger = self.linger if clock is not None else 0.0
        while True:
            with cond:
                if not queue.size and not self._ended:
                    cond.wait(self.idle_tick)
                if not queue.size:
                    if self._ended:
                        return
                    item = IDLE
                else:
                    item = queue.pop_all()
            yield item
            if linger and item is not IDLE:
                clock.sleep(linger)


class _LiveReader:
    """One reader of a LiveSignal; closing or dropping it stops its queue from filling."""

    __slots__ = ("_hub", "_queue", "_items", "position", "_pushed_at_open", "__weakref__")

    def __init__(self, hub: LiveSignal, queue: "_LiveQueue", clock: Clock | None = None):
        self._hub = hub
        self._queue = queue
        self._items = hub._drain(queue, clock)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._items)

    def sequence(self) -> tuple[int | None, str | None]:
        """(the position of the first reading this reader got, the numbering it belongs to):
        asked at its first reading, so a publisher that declared its numbering after the reader
        opened (before pushing) counts."""
        hub = self._hub
        with hub._cond:
            base = hub.position_base
            return (None if base is None else base + self._pushed_at_open), hub.epoch

    def close(self) -> None:
        if self._queue is not None:
            self._hub._unregister(self._queue)
            self._queue = None
            self._items.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass


class _LiveQueue:
    """One reader's pending readings: single readings and batches, oldest first."""

    __slots__ = ("parts", "size")

    def __init__(self):
        self.parts: collections.deque = collections.deque()
        self.size = 0

    def append_one(self, value, stamp: float, hub: LiveSignal) -> None:
        self.parts.append((value, stamp, False))
        self.size += 1
        self._bound(hub)

    def append_batch(self, values, times, hub: LiveSignal) -> None:
        self.parts.append((values, times, True))
        self.size += len(values)
        self._bound(hub)

    def _bound(self, hub: LiveSignal) -> None:
        while self.size > hub.capacity and self.parts:
            values, times, is_batch = self.parts[0]
            excess = self.size - hub.capacity
            if is_batch and len(values) > excess:
                self.parts[0] = (values[excess:], times[excess:], True)
                self.size -= excess
                hub.dropped += excess
            else:
                self.parts.popleft()
                lost = len(values) if is_batch else 1
                self.size -= lost
                hub.dropped += lost

    def pop_all(self) -> Any:
        """Everything pending: a single reading stays single (scalar path), more become a Batch."""
        parts, self.parts, self.size = self.parts, collections.deque(), 0
        if len(parts) == 1:
            values, times, is_batch = parts[0]
            if not is_batch:
                return _Stamped(values, times)
            return Batch(values, times)
        columns, stamps = [], []
        for values, times, is_batch in parts:
            if is_batch:
                columns.append(values)
                stamps.append(times)
            else:
                columns.append([values])
                stamps.append(np.array([times]))
        return Batch(_concat(columns), np.concatenate(stamps))


class _Stamped:
    """A single live reading with its timestamp (unwrapped by the source operator)."""

    __slots__ = ("value", "time")

    def __init__(self, value, time):
        self.value = value
        self.time = time


Stamped = _Stamped


def _concat(columns: list) -> Any:
    if all(isinstance(c, np.ndarray) for c in columns):
        return np.concatenate(columns)
    if all(isinstance(c, (np.ndarray, list)) and _numeric_scalars(c) for c in columns):
        return np.concatenate([np.asarray(c) for c in columns])
    out: list = []
    for c in columns:
        out.extend(list(c))
    return out


def _numeric_scalars(column) -> bool:
    if isinstance(column, np.ndarray):
        return column.ndim == 1 and column.dtype != object
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in column)


def _as_column(values: list):
    """A list as a numpy column when it is uniformly numeric, else kept as a list."""
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.int64 if all(isinstance(v, int) for v in values) else np.float64)
    if values and all(isinstance(v, np.ndarray) for v in values):
        shapes = {v.shape for v in values}
        if len(shapes) == 1:
            return np.stack(values)
    return values


def make_signal(name: str, source: Any, type_name: str | None = None, timestamps: bool = False,
                period: float | None = None) -> Signal:
    """A signal from what `Engine.add_signal` accepts: a Signal, list, array, iterator or callable.

    With `timestamps=True` a list or iterator holds `(time, value)` pairs, an array has shape
    (n, 2), and a callable returns a pair.
    """
    if isinstance(source, Signal):
        return source
    if isinstance(source, np.ndarray):
        if timestamps:
            if source.ndim != 2 or source.shape[1] != 2:
                raise ValueError("a timestamped array must have shape (n, 2): time, value")
            return ArraySignal(name, source[:, 1], times=source[:, 0], type_name=type_name)
        return ArraySignal(name, source, type_name=type_name)
    if isinstance(source, (list, tuple)):
        if timestamps:
            times = np.array([_seconds(t) for t, _ in source], dtype=np.float64)
            return ArraySignal(name, _as_column([v for _, v in source]), times=times, type_name=type_name)
        return ArraySignal(name, _as_column(list(source)), type_name=type_name)
    if callable(source) and not hasattr(source, "__next__"):
        return CallableSignal(name, source, type_name=type_name, period=period, timestamped=timestamps)
    if hasattr(source, "__iter__"):
        return IteratorSignal(name, source, type_name=type_name, timestamped=timestamps)
    raise TypeError(f"cannot make a signal of {type(source).__name__}: give a list, numpy array, "
                    "iterator, callable or Signal")


def _seconds(t: Any) -> float:
    seconds = getattr(t, "seconds", None)
    return float(seconds if seconds is not None else t)


class SignalRegistry:
    """The signals of one engine, by name."""

    def __init__(self):
        self._signals: dict[str, Signal] = {}
        self._lock = threading.Lock()

    def add(self, signal: Signal) -> Signal:
        with self._lock:
            self._signals[signal.name] = signal
        return signal

    def remove(self, name: str) -> None:
        with self._lock:
            self._signals.pop(name, None)

    def get(self, name: str) -> Signal | None:
        return self._signals.get(name)

    def names(self) -> list[str]:
        return sorted(self._signals)

    def __contains__(self, name: str) -> bool:
        return name in self._signals

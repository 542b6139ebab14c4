"""Streams and bags as run-time values, and the context a query runs in.

A `StreamValue` is a recipe: `open()` starts a fresh pass and returns an iterator of stream items
(`Batch`, single value, or `IDLE`). Stream functions take stream values and return new ones, so
`winagg(signal_stream('s'), 256, 128)` is a value built before any reading flows. A `LazyBag`
is the same for bags that are better not materialised (`iota(1, 10000000)`, a subquery).

`transformed` is the loop every item-by-item stream transform shares: open the source, pass
`IDLE` ticks on, turn each batch or single value into output items, close the source at the end.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .batch import IDLE, Batch
from .clock import SYSTEM_CLOCK, CancellableClock, Clock
from .errors import QueryCancelled, QueryLimitError
from .values import Bag, Time, Timeval, as_numeric_array


class StreamValue:
    """A stream: opened any number of times, each pass an iterator of items."""

    __slots__ = ("_open", "label", "__weakref__")

    def __init__(self, open_fn: Callable[[], Iterator[Any]], label: str = "stream"):
        self._open = open_fn
        self.label = label

    def open(self) -> Iterator[Any]:
        return self._open()

    def elements(self) -> Iterator[Any]:
        """The stream's values one by one (idle ticks skipped)."""
        return iter_elements(self.open())

    def __iter__(self):
        return self.elements()

    def __repr__(self) -> str:
        return f"<stream {self.label}>"


MAX_HELD = 50_000_000   # elements a bag or stream may hold in memory at once (about 400 MB of numbers)


def held(items: Iterable[Any], size: int | None = None, what: str = "a bag") -> Iterator[Any]:
    """`items`, refusing (QueryLimitError) to go past MAX_HELD elements — before they are built when
    the `size` is known (`iota(-9223372036854775808, 3)` in a `validate` would count for ever)."""
    if size is not None and size > MAX_HELD:
        raise QueryLimitError(f"{what} of {size} elements is too large to hold in memory (at most {MAX_HELD})")
    seen = 0
    for item in items:
        seen += len(item.values) if type(item) is Batch else 1
        if seen > MAX_HELD:
            raise QueryLimitError(f"{what} of more than {MAX_HELD} elements is too large to hold in memory")
        yield item


class LazyBag:
    """A bag produced on demand: `open()` yields items like a stream; `materialize()` a Bag.
    `size`, when known, lets holding it in memory be refused before it is built."""

    __slots__ = ("_open", "label", "_cache", "size")

    def __init__(self, open_fn: Callable[[], Iterator[Any]], label: str = "bag", size: int | None = None):
        self._open = open_fn
        self.label = label
        self._cache = None
        self.size = size

    def open(self) -> Iterator[Any]:
        if self._cache is not None:
            return iter([Batch(self._cache)])
        return self._open()

    def column(self):
        """All elements as one column (numpy array when numeric)."""
        if self._cache is None:
            self._cache = collect_column(held(self._open(), self.size, self.label))
        return self._cache

    def materialize(self) -> Bag:
        column = self.column()
        return Bag(column.tolist() if isinstance(column, np.ndarray) and column.ndim == 1 else list(column))

    def __iter__(self):
        return iter(self.materialize())

    def __len__(self) -> int:
        return len(self.column())

    def __eq__(self, other):
        return self.materialize() == (other.materialize() if isinstance(other, LazyBag) else other)

    __hash__ = None

    def __repr__(self) -> str:
        return repr(self.materialize())


def close_items(items) -> None:
    """Close an iterator of stream items when it can be closed (releasing its source)."""
    close = getattr(items, "close", None)
    if close:
        close()


def transformed(stream: StreamValue, label: str,
                start: Callable[[], tuple[Callable[[Batch], Iterable], Callable[[Any], Iterable]]]) -> StreamValue:
    """A stream made from `stream` item by item. Each pass calls `start()` for its own state: a
    pair (on_batch, on_value) giving the output items of one input batch or single value."""
    def open_():
        on_batch, on_value = start()
        items = stream.open()
        try:
            for item in items:
                if item is IDLE:
                    yield item
                elif type(item) is Batch:
                    yield from on_batch(item)
                else:
                    yield from on_value(item)
        finally:
            close_items(items)
    return StreamValue(open_, label)


def iter_elements(items: Iterable[Any]) -> Iterator[Any]:
    """Single values from stream items: batches unpacked, idle ticks skipped."""
    for item in items:
        if item is IDLE:
            continue
        if type(item) is Batch:
            values = item.values
            if item.times is not None:
                times = item.times
                for i in range(len(values)):
                    yield Timeval(Time(float(times[i])), _python(values[i]))
            elif isinstance(values, np.ndarray):
                if values.ndim == 1:
                    yield from values.tolist()
                else:
                    yield from values
            else:
                yield from values
        else:
            yield item


def _python(value):
    return value.item() if isinstance(value, np.generic) else value


def collect_column(items: Iterable[Any]):
    """Gather stream items into one column: a numpy array when every part is numeric."""
    parts: list = []
    scalars: list = []
    for item in items:
        if item is IDLE:
            continue
        if type(item) is Batch:
            if scalars:
                parts.append(scalars)
                scalars = []
            parts.append(item.values)
        else:
            scalars.append(item)
    if scalars:
        parts.append(scalars)
    return join_columns(parts)


def join_columns(parts: list):
    if not parts:
        return np.empty(0)
    arrays = []
    for part in parts:
        if isinstance(part, np.ndarray):
            arrays.append(part)
        else:
            converted = as_numeric_array(part)
            if converted is None:
                return _join_as_list(parts)
            arrays.append(converted)
    shapes = {a.shape[1:] for a in arrays if len(a)}
    if len(shapes) > 1:
        return _join_as_list(parts)
    arrays = [a for a in arrays if len(a)] or arrays[:1]
    return np.concatenate(arrays) if len(arrays) > 1 else arrays[0]


def _join_as_list(parts: list) -> list:
    out: list = []
    for part in parts:
        if isinstance(part, np.ndarray):
            out.extend(part.tolist() if part.ndim == 1 else list(part))
        else:
            out.extend(part)
    return out


def to_column(values) -> Any:
    """A column from a bag, vector, lazy bag, stream-collected list or array."""
    if isinstance(values, LazyBag):
        return values.column()
    if isinstance(values, Bag):
        values = values.items
    if isinstance(values, np.ndarray):
        return values
    if isinstance(values, (list, tuple)):
        converted = as_numeric_array(list(values))
        return converted if converted is not None else list(values)
    raise TypeError(f"not a collection: {type(values).__name__}")


def approximate_bytes(value) -> int:
    """About how many bytes a value kept in operator state takes: arrays exactly, Python
    containers at 16 bytes an item plus their strings and nested arrays (one level)."""
    if isinstance(value, np.ndarray):
        return value.nbytes if value.dtype != object else 16 * value.size
    if isinstance(value, dict):          # a chunk of columns or one row
        return sum(approximate_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        total = 16 * len(value)
        for v in value:
            if isinstance(v, (str, bytes)):
                total += len(v)
            elif isinstance(v, np.ndarray):
                total += v.nbytes
            elif isinstance(v, (list, tuple)):
                total += 16 * len(v)
        return total
    if isinstance(value, Batch):
        return approximate_bytes(value.values) + (0 if value.times is None else approximate_bytes(value.times))
    if isinstance(value, (str, bytes)):
        return 49 + len(value)
    return 16


class Limits:
    """Per-query limits: rows delivered, seconds of running, megabytes of operator state."""

    __slots__ = ("rows", "seconds", "memory_mb")

    def __init__(self, rows: int | None = None, seconds: float | None = None, memory_mb: float | None = None):
        self.rows = rows
        self.seconds = seconds
        self.memory_mb = memory_mb

    @classmethod
    def of(cls, value) -> "Limits":
        if value is None:
            return cls()
        if isinstance(value, Limits):
            return value
        if isinstance(value, dict):
            return cls(value.get("rows"), value.get("seconds"), value.get("memory_mb"))
        raise TypeError("limits are a dict with rows, seconds and memory_mb, or a Limits")

    def to_dict(self) -> dict:
        return {"rows": self.rows, "seconds": self.seconds, "memory_mb": self.memory_mb}


class ExecContext:
    """What a running query can reach: the engine's clock, randomness, signals, store, flows and
    models, plus its own cancellation flag, limits and memory accounting."""

    def __init__(self, engine: Any, clock: Clock = SYSTEM_CLOCK, rng: np.random.Generator | None = None,
                 limits: Limits | None = None, cancel: threading.Event | None = None):
        self.engine = engine
        self.cancel = cancel or threading.Event()
        self.clock = CancellableClock(clock, self.cancel)   # sources' sleeps end when the query is cancelled
        self.rng = rng if rng is not None else np.random.default_rng()
        self.started = clock.monotonic()
        self.state_bytes = 0         # what the query's operators hold now (windows, groups, sorts)
        self.peak_state_bytes = 0
        self.counters: dict[str, int] = {}
        self.limits = limits or Limits()
        self.fleet = None            # a FleetSession when the query runs on a federation

    @property
    def limits(self) -> Limits:
        return self._limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        # replaceable after compiling (an edge applies a fragment's limits to a compiled query)
        self._limits = limits
        self._deadline = None if limits.seconds is None else self.started + limits.seconds
        self._memory = None if limits.memory_mb is None else limits.memory_mb * 1e6
        self._watch = self._deadline is not None or self._memory is not None

    @property
    def signals(self):
        return self.engine.signals

    @property
    def store(self):
        return self.engine.store

    @property
    def flows(self):
        return self.engine.flows

    @property
    def models(self):
        return self.engine.models

    def check(self) -> None:
        """Raise when the query was cancelled or ran past its time or memory limit (cheap: it is
        called for every item a source produces)."""
        if self.cancel.is_set():
            raise QueryCancelled("the query was cancelled")
        if not self._watch:
            return
        if self._deadline is not None and self.clock.monotonic() > self._deadline:
            raise QueryLimitError(f"the query ran past its time limit of {self._limits.seconds} s")
        if self._memory is not None and self.state_bytes > self._memory:
            self._memory_exceeded()

    def hold(self, nbytes: int) -> None:
        """Account `nbytes` more (negative: fewer) of operator state; past the memory limit the
        query stops right here, before the state grows further."""
        held = self.state_bytes + nbytes
        self.state_bytes = held
        if held > self.peak_state_bytes:
            self.peak_state_bytes = held
            if self._memory is not None and held > self._memory:
                self._memory_exceeded()

    def _memory_exceeded(self) -> None:
        raise QueryLimitError(f"the query's state grew past its memory limit of {self._limits.memory_mb:g} MB "
                              f"({self.state_bytes / 1e6:.1f} MB held)")

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

"""Streams and bags as run-time values, and the context a query runs in.

A `StreamValue` is a recipe: `open()` starts a fresh pass and returns an iterator of stream items
(`Batch`, single value, or `IDLE`). Stream functions take stream values and return new ones, so
`winagg(signal_stream('s'), 256, 128)` is a value built before any reading flows. A `LazyBag`
is the same for bags that are better not materialised (`iota(1, 10000000)`, a subquery).

The loop every stream transform shares, and the state it keeps, are physical/stateful.py's.

`ExecContext` is what a statement runs in: its cancellation, its `Limits` and its memory account.
`memory_mb` is a budget of bytes the statement accounts for: operator state (`hold`), the large
values it built that are still alive (`keep`), and the value about to be built, which the library
asks for first (`allocate`, `reserve`) so that numpy never allocates what the budget refuses.
Without a memory limit one value may still take at most MAX_VALUE_BYTES. `gather` holds a stream
or bag whole within that budget; a `LazyBag` knows its statement, so counting it streams through
it with checks between parts.
"""
from __future__ import annotations

import threading
import weakref
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


MAX_VALUE_BYTES = 1 << 30   # one value of a statement without a memory limit: a typo must not freeze a laptop
TRACKED_BYTES = 4096        # built values this large count against the statement's budget until freed
KEEP_BYTES = 4 << 20        # a lazy bag streamed through is kept when it turns out this small
FOLD_BYTES = 1 << 20        # the largest value built while compiling (folded constants, vector literals)


def gather(items: Iterable[Any], ctx: "ExecContext | None", what: str, size: int | None = None):
    """All of `items` as one column, within the statement's memory budget: refused before anything
    is built when `size` (elements, at 8 bytes each at least) says it cannot fit; else the parts are
    accounted as the query's state while they arrive (so its memory limit stops an endless stream
    collected whole), the joined column needs room beside them, and it is accounted once built."""
    if ctx is None:
        ctx = ExecContext(None)   # a bag made outside any statement: the one-value cap still holds
    if size is not None:
        ctx.allocate(8 * size, what)
    parts: list = []
    scalars: list = []
    held = 0
    limited = ctx.memory_limit is not None
    states = ctx.states   # what is gathered here is no operator's state: no checkpoint while it runs
    if states is not None:
        states.opaque += 1
    try:
        for item in items:
            ctx.check()
            if item is IDLE:
                continue
            if type(item) is Batch:
                if scalars:
                    parts.append(scalars)
                    scalars = []
                parts.append(item.values)
                nbytes = approximate_bytes(item.values)
            else:
                scalars.append(item)
                nbytes = 16 + (approximate_bytes(item) if isinstance(item, (np.ndarray, str, bytes, list)) else 0)
            held += nbytes
            ctx.hold(nbytes)
            if not limited and held > MAX_VALUE_BYTES:
                ctx.allocate(held, what)   # raises: past the one-value cap
        if scalars:
            parts.append(scalars)
        if len(parts) > 1:
            ctx.allocate(held, what)       # joining copies: the parts and the whole at once
        column = join_columns(parts)
    finally:
        ctx.hold(-held)
        close_items(items)
        if states is not None:
            states.opaque -= 1
    return ctx.keep(column)


def reserve(ctx: "ExecContext", nbytes: float, what: str) -> None:
    """`ctx.allocate` for a value about to be built, skipped under TRACKED_BYTES (a vector literal
    in every row costs nothing)."""
    if nbytes >= TRACKED_BYTES:
        ctx.allocate(nbytes, what)


class LazyBag:
    """A bag produced on demand: `open()` yields items like a stream; `materialize()` a Bag.
    `size`, when known, lets holding it in memory be refused before it is built; `ctx`, the
    statement it belongs to, bounds what holding it may take and is checked between its parts
    (cancellation and time limits reach a bag being counted or collected)."""

    __slots__ = ("_open", "label", "_cache", "size", "ctx")

    def __init__(self, open_fn: Callable[[], Iterator[Any]], label: str = "bag", size: int | None = None,
                 ctx: "ExecContext | None" = None):
        self._open = open_fn
        self.label = label
        self._cache = None
        self.size = size
        self.ctx = ctx

    def open(self) -> Iterator[Any]:
        if self._cache is not None:
            return iter([Batch(self._cache)])
        return self._open()

    @property
    def held(self) -> bool:
        """Whether the bag is in memory already (its column computed)."""
        return self._cache is not None

    def column(self):
        """All elements as one column (numpy array when numeric), within the statement's budget."""
        if self._cache is None:
            self._cache = gather(self._open(), self.ctx, self.label, self.size)
        return self._cache

    def parts(self, rows: int = 65536) -> Iterator[Any]:
        """The elements a column at a time (single values grouped up to `rows`), the statement
        checked between parts: aggregates stream through a bag this way instead of holding it. A
        bag that turns out small (KEEP_BYTES) is kept, so that the next pass (a subquery's bag
        aggregated for every row) reads memory instead of running it again."""
        if self._cache is not None:
            yield self._cache
            return
        check = self.ctx.check if self.ctx is not None else None
        states = self.ctx.states if self.ctx is not None else None
        if states is not None:   # what the reader folds is no operator's state: no checkpoint meanwhile
            states.opaque += 1
        items = self.open()
        scalars: list = []
        kept: list | None = []
        kept_bytes = 0
        try:
            for item in items:
                if check is not None:
                    check()
                if item is IDLE:
                    continue
                if type(item) is Batch:
                    ready = [scalars, item.values] if scalars else [item.values]
                    scalars = []
                else:
                    scalars.append(item)
                    if len(scalars) < rows:
                        continue
                    ready, scalars = [scalars], []
                for column in ready:
                    if kept is not None:
                        kept_bytes += approximate_bytes(column)
                        if kept_bytes <= KEEP_BYTES:
                            kept.append(column)
                        else:
                            kept = None
                    yield column
            if scalars:
                if kept is not None:
                    kept.append(scalars)
                yield scalars
            if kept is not None and self._cache is None:
                self._cache = join_columns(kept)
        finally:
            close_items(items)
            if states is not None:
                states.opaque -= 1

    def materialize(self) -> Bag:
        column = self.column()
        if self.ctx is not None:   # Python values: a pointer and an object each, about 40 bytes
            reserve(self.ctx, 40 * len(column), f"{self.label} as a bag of {len(column)} values")
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

    def given(self, other: "Limits | dict | None") -> "Limits":
        """These limits with `other`'s where it sets one (a request's limits over the defaults)."""
        other = Limits.of(other)
        pick = lambda key: getattr(other, key) if getattr(other, key) is not None else getattr(self, key)  # noqa: E731
        return Limits(pick("rows"), pick("seconds"), pick("memory_mb"))

    def at_most(self, ceiling: "Limits | dict | None") -> "Limits":
        """These limits, none above `ceiling`'s (an operator's maxima: a client asks for less, never more)."""
        ceiling = Limits.of(ceiling)

        def pick(key):
            mine, cap = getattr(self, key), getattr(ceiling, key)
            return cap if mine is None else mine if cap is None else min(mine, cap)
        return Limits(pick("rows"), pick("seconds"), pick("memory_mb"))

    def __eq__(self, other) -> bool:
        return isinstance(other, Limits) and self.to_dict() == other.to_dict()

    __hash__ = None

    def __repr__(self) -> str:
        return f"Limits({', '.join(f'{k}={v}' for k, v in self.to_dict().items() if v is not None)})"


class ExecContext:
    """What a running query can reach: the engine's clock, randomness, signals, store, flows and
    models, plus its own cancellation flag, limits and memory accounting."""

    def __init__(self, engine: Any, clock: Clock = SYSTEM_CLOCK, rng: np.random.Generator | None = None,
                 limits: Limits | None = None, cancel: threading.Event | None = None):
        self.engine = engine
        self.cancel = cancel or threading.Event()
        self.clock = CancellableClock(clock, self.cancel)   # sources' sleeps end when the query is cancelled
        self._rng = rng
        self.started = clock.monotonic()
        self.state_bytes = 0         # what the query's operators hold now (windows, groups, sorts)
        self.peak_state_bytes = 0
        self._values = _ValueBytes()  # large values it built that are still alive (see keep)
        self.counters: dict[str, int] = {}
        self.limits = limits or Limits()
        self.fleet = None            # a FleetSession when the query runs on a federation
        self.pace = None             # called at every check: where a host shares its CPU (edge fragments)
        self.states = None           # a checkpoint.QueryState when the query's state is kept

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:   # made when first asked for: contexts are made per statement and per fold
            self._rng = np.random.default_rng()
        return self._rng

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
    def memory_limit(self) -> float | None:
        """The statement's memory limit in bytes (None: no limit)."""
        return self._memory

    @property
    def memory_budget(self) -> float:
        """What the statement may account for at once: its memory limit, or without one what a
        single value may take (MAX_VALUE_BYTES)."""
        return self._memory if self._memory is not None else MAX_VALUE_BYTES

    @property
    def value_bytes(self) -> int:
        """Bytes of the large values this statement built that are still alive."""
        return self._values.bytes

    @property
    def files(self):
        """The files this statement may read (the engine's `FileAccess`)."""
        return self.engine.files

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
        if self.pace is not None:
            self.pace()
        self.check_limits()

    def check_unpaced(self) -> None:
        """`check` where nothing is computed — an IDLE tick of a stream that waited for input, an
        item already in hand: no wait for the host's CPU (`pace`: an edge's compute gate). A
        simulated edge process's streams waited in the gate's line at every tick (ten a second
        each), and a new stream's first row waited there seconds behind hundreds of ticks
        (bench/README.md, issue 12)."""
        if self.cancel.is_set():
            raise QueryCancelled("the query was cancelled")
        self.check_limits()

    def check_limits(self) -> None:
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

    def allocate(self, nbytes: float, what: str) -> None:
        """Refuse (QueryLimitError), before anything is built, a value of `nbytes` that would take
        the statement past its budget: what its operators hold, plus the large values it built that
        are alive, plus this one. Cancellation and the time limit are noticed here too."""
        self.check()
        in_use = self.state_bytes + self._values.bytes
        if nbytes + in_use <= self.memory_budget:
            return
        if self._memory is not None:
            held = f" beside the {_size(in_use)} it holds" if in_use >= 1e6 else ""
            raise QueryLimitError(f"{what} would take {_size(nbytes)}{held}: more than the statement's memory limit "
                                  f"of {self._limits.memory_mb:g} MB")
        raise QueryLimitError(f"{what} would take {_size(nbytes)}: more than one value may take without a memory "
                              f"limit ({_size(MAX_VALUE_BYTES)}; give the statement a memory limit to allow more)")

    def keep(self, value):
        """`value`, a numpy array just built, accounted against the budget until it is freed (values
        under TRACKED_BYTES, and values that are not arrays, are not worth the bookkeeping)."""
        if isinstance(value, np.ndarray) and value.nbytes >= TRACKED_BYTES and value.base is None:
            self._values.add(value, value.nbytes)
        return value

    def _memory_exceeded(self) -> None:
        raise QueryLimitError(f"the query's state grew past its memory limit of {self._limits.memory_mb:g} MB "
                              f"({self.state_bytes / 1e6:.1f} MB held)")

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount


class _ValueBytes:
    """The bytes of live values a statement built: added when built, taken off when numpy frees
    them (a finalizer; it holds this small object, not the statement's context)."""

    __slots__ = ("bytes", "_lock", "__weakref__")

    def __init__(self):
        self.bytes = 0
        self._lock = threading.Lock()

    def add(self, value, nbytes: int) -> None:
        with self._lock:
            self.bytes += nbytes
        weakref.finalize(value, self._release, nbytes)

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self.bytes -= nbytes


def _size(nbytes: float) -> str:
    """A byte count in words people read: 800 MB, 8 TB, 12 kB."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{int(nbytes)} bytes"

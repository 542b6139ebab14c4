"""Stream and bag sources, and the conversions between collections.

Sources make a stream or bag value without reading anything: counting (`iota`, `siota`,
`diota`), clock ticks (`heartbeat`, `simstream`), this engine's signals (`signal_stream`,
`ts_signal_stream`, `signal_value`) and flows (`subscribe`), a vector (`stream`). `vectorof`,
`extract` and `bag` turn one kind of collection into another.

A bag from `iota` is lazy and belongs to its statement: counting or summing it streams through it
a batch at a time (cancellation and the time limit noticed between batches), and holding it whole
(`vectorof`, `x in iota(…)` as a value) is refused before it is built when it cannot fit the
statement's memory budget.
"""
from __future__ import annotations

import math

import numpy as np

from ..batch import IDLE, Batch
from ..bound import TConst
from ..errors import QueryRuntimeError
from ..physical.stateful import positioned
from ..registry import SOURCE, STREAM, Library
from ..signals import Stamped
from ..streams import LazyBag, StreamValue, close_items, gather, to_column
from ..types import stream_of, timeval_of
from ..values import Bag, Time, Timeval

BATCH = 65536


# ---------------------------------------------------------------------------------- sources
INT64 = (-2 ** 63, 2 ** 63 - 1)


def iota(ctx, lo: int, hi: int) -> LazyBag:
    for bound in (lo, hi):
        if not INT64[0] <= bound <= INT64[1]:
            raise QueryRuntimeError(f"iota's bounds must fit in 64 bits, not {bound}")
    if hi == INT64[1]:
        raise QueryRuntimeError("iota cannot count up to the largest 64-bit integer")

    def open_():
        for start in range(lo, hi + 1, BATCH):
            ctx.check()   # a consumer dropping every element (skip, a filter) still stops in time
            yield Batch(np.arange(start, min(start + BATCH, hi + 1), dtype=np.int64))
    return LazyBag(open_, f"iota({lo}, {hi})", size=max(0, hi - lo + 1), ctx=ctx)


def siota(ctx, lo: int, hi: int) -> StreamValue:
    return StreamValue(iota(ctx, lo, hi).open, f"siota({lo}, {hi})")


def heartbeat(ctx, period: float) -> StreamValue:
    """Seconds since the stream started, every `period` seconds (of the engine's clock)."""
    if not (period > 0 and math.isfinite(period)):
        raise QueryRuntimeError(f"heartbeat needs a positive period (finite, in seconds), not {period}")
    clock = ctx.clock

    def open_():
        start = clock.monotonic()
        ticks = 0
        while True:
            ticks += 1
            ctx.check()   # a period shorter than a tick's work never pauses
            yield from pause_until(clock, start + ticks * period)
            yield round(clock.monotonic() - start, 9)
    return StreamValue(open_, f"heartbeat({period})")


def pause_until(clock, due: float):
    """Sleep until `due` (the clock's monotonic time) in slices, an IDLE tick after each, so a
    query waiting for a slow source still notices that it was cancelled or ran out of time."""
    wait = due - clock.monotonic()
    while wait > IDLE_SLICE_S:
        clock.sleep(IDLE_SLICE_S)
        yield IDLE
        wait = due - clock.monotonic()
    if wait > 0:
        clock.sleep(wait)


IDLE_SLICE_S = 0.1


def simsig(x: float) -> float:
    """A synthetic signal value at x: two sines, deterministic."""
    return math.sin(x) + math.sin(3.1 * x) / 3.0


def simstream(ctx, period: float) -> StreamValue:
    beats = heartbeat(ctx, period)

    def open_():
        for item in beats.open():
            yield item if item is IDLE else simsig(item)
    return StreamValue(open_, f"simstream({period})")


def diota(ctx, pace: float, lo: int, hi: int) -> StreamValue:
    if not (pace >= 0 and math.isfinite(pace)):
        raise QueryRuntimeError(f"diota needs a pace of zero or more seconds, not {pace}")
    clock = ctx.clock

    def open_():
        for value in range(lo, hi + 1):
            if not value & 1023:
                ctx.check()   # a pace of 0 never pauses
            yield from pause_until(clock, clock.monotonic() + pace)
            yield value
    return StreamValue(open_, f"diota({pace}, {lo}, {hi})")


def _signal(ctx, name: str):
    signal = ctx.signals.get(name)
    if signal is None:
        known = ", ".join(ctx.signals.names()) or "none"
        raise QueryRuntimeError(f"no signal named {name!r} on this engine (signals: {known})")
    return signal


def _script_signal(ctx, key, stamped: bool):
    """A signal a script defined (`create type ns:signal under Signal`), by object or name."""
    runner = getattr(getattr(ctx, "engine", None), "_statements", None)
    if runner is None or not hasattr(runner, "script_signal_stream"):
        return None
    return runner.script_signal_stream(ctx, key, stamped)


def signal_object_stream(ctx, signal, stamped: bool = False) -> StreamValue:
    if isinstance(signal, str):
        return (ts_signal_stream if stamped else signal_stream)(ctx, signal)
    stream = _script_signal(ctx, signal, stamped)
    if stream is None:
        raise QueryRuntimeError(f"{signal} is not a signal: signals are the engine's (by name) or objects of a "
                                "type under Signal")
    return stream


def signal_stream(ctx, name: str) -> StreamValue:
    if ctx.signals.get(name) is None and (script := _script_signal(ctx, name, False)) is not None:
        return script
    signal = _signal(ctx, name)

    def open_():
        items = signal.open(ctx.clock)
        items = positioned(items, ctx, name, getattr(items, "position", signal.position_base))
        try:
            for item in items:
                if type(item) is Stamped:
                    yield item.value
                elif type(item) is Batch and item.times is not None:
                    yield Batch(item.values)
                elif signal.timestamped and type(item) is tuple and len(item) == 2:
                    yield item[1]
                else:
                    yield item
        finally:
            close_items(items)
    return StreamValue(open_, f"signal_stream('{name}')")


def ts_signal_stream(ctx, name: str) -> StreamValue:
    if ctx.signals.get(name) is None and (script := _script_signal(ctx, name, True)) is not None:
        return script
    signal = _signal(ctx, name)
    clock = ctx.clock

    def open_():
        items = signal.open(clock)
        items = positioned(items, ctx, name, getattr(items, "position", signal.position_base))
        try:
            for item in items:
                if item is IDLE:
                    yield item
                elif type(item) is Stamped:
                    yield Timeval(Time(item.time), item.value)
                elif type(item) is Batch:
                    times = item.times if item.times is not None else np.full(len(item.values), clock.now())
                    yield Batch(item.values, times)
                elif signal.timestamped and type(item) is tuple and len(item) == 2:
                    t, v = item
                    yield Timeval(t if isinstance(t, Time) else Time(float(t)), v)
                elif isinstance(item, Timeval):
                    yield item
                else:
                    yield Timeval(Time(clock.now()), item)
        finally:
            close_items(items)
    return StreamValue(open_, f"ts_signal_stream('{name}')")


def signal_value(ctx, name: str):
    value = _signal(ctx, name).latest()
    return value.item() if isinstance(value, np.generic) else value


def signals(ctx) -> Bag:
    return Bag(ctx.signals.names())


def subscribe(ctx, flow: str) -> StreamValue:
    hub = ctx.flows.hub(flow)
    return signal_stream_of(hub, ctx, f"subscribe('{flow}')")


def signal_stream_of(hub, ctx, label: str) -> StreamValue:
    def open_():
        items = positioned(hub.open(ctx.clock), ctx, label)
        try:
            for item in items:
                if type(item) is Stamped:
                    yield item.value
                elif type(item) is Batch:
                    yield Batch(item.values)
                else:
                    yield item
        finally:
            close_items(items)
    return StreamValue(open_, label)


def vector_stream(vector) -> StreamValue:
    column = to_column(vector) if not isinstance(vector, (np.ndarray, list)) else vector

    def open_():
        if len(column):
            yield Batch(column)
    return StreamValue(open_, "stream(vector)")


def make_bag(*items) -> Bag:
    return Bag(items)


def vectorof(ctx, collection):
    """A finite stream or a bag as a vector (a stream must end: limit it with first_n or timeout).
    What it collects counts against the statement's memory limit as it arrives, and an endless
    stream stops at the limit, or when the statement is cancelled or out of time."""
    if isinstance(collection, StreamValue):
        column = gather(collection.open(), ctx, f"vectorof({collection.label})")
    elif isinstance(collection, LazyBag):
        if collection.ctx is None:
            collection.ctx = ctx
        column = collection.column()
    else:
        column = to_column(collection)
    if isinstance(column, np.ndarray) and column.dtype != object:
        return column
    return list(column.tolist() if isinstance(column, np.ndarray) else column)


def extract(collection):
    return collection


# ------------------------------------------------------------------------------- registration
def _signal_element(catalog, args):
    name = args[0]
    if isinstance(name, TConst) and isinstance(name.value, str):
        declared = catalog.signal_type(name.value)
        if declared is not None:
            return declared
    return None


def register(lib: Library) -> None:
    src = dict(kind=SOURCE, volatile=True, topic="stream", null_propagating=True)
    lib.define("iota(Integer lo, Integer hi) -> Bag of Integer", scalar=iota, needs_context=True,
               doc="The integers lo..hi (a bag)", **src)
    lib.define("siota(Integer lo, Integer hi) -> Stream of Integer", scalar=siota, needs_context=True,
               doc="The integers lo..hi as a stream", **src)
    lib.define("heartbeat(Number period) -> Stream of Real", scalar=heartbeat, needs_context=True,
               doc="Seconds since the start, every period seconds", **src)
    lib.define("simstream(Number period) -> Stream of Real", scalar=simstream, needs_context=True,
               doc="A simulated signal (simsig of heartbeat), every period seconds", **src)
    lib.define("diota(Number pace, Integer lo, Integer hi) -> Stream of Integer", scalar=diota,
               needs_context=True, doc="The integers lo..hi with pace seconds between them", **src)
    lib.define("simsig(Number x) -> Real", scalar=simsig, batch=lambda x: np.sin(x) + np.sin(3.1 * x) / 3.0,
               topic="math", elementwise=True, doc="A synthetic signal value at x (two sines)")
    lib.define("signal_stream(Charstring name) -> Stream of Object", scalar=signal_stream, needs_context=True,
               catalog_type=lambda c, a: stream_of(t) if (t := _signal_element(c, a)) else None,
               doc="The readings of a signal of this engine", **src)
    lib.define("ts_signal_stream(Charstring name) -> Stream of Timeval of Object", scalar=ts_signal_stream,
               needs_context=True,
               catalog_type=lambda c, a: stream_of(timeval_of(t)) if (t := _signal_element(c, a)) else None,
               doc="The readings of a signal with their times", **src)
    lib.define("signal_stream(Object signal) -> Stream of Object", scalar=signal_object_stream, needs_context=True,
               doc="The readings of a signal object a script defined (a type under Signal)", **src)
    lib.define("ts_signal_stream(Object signal) -> Stream of Timeval of Object",
               scalar=lambda ctx, s: signal_object_stream(ctx, s, True), needs_context=True,
               doc="The readings of a signal object a script defined, with their times", **src)
    lib.define("signal_value(Charstring name) -> Object", scalar=signal_value, needs_context=True, volatile=True,
               catalog_type=_signal_element, topic="stream", doc="The latest reading of a signal")
    lib.define("signals() -> Bag of Charstring", scalar=signals, needs_context=True, volatile=True,
               topic="stream", doc="The names of this engine's signals")
    lib.define("subscribe(Charstring flow) -> Stream of Object", scalar=subscribe, needs_context=True,
               doc="The elements published to a flow from now on", **src)
    lib.define("stream(Vector of T v) -> Stream of T", scalar=vector_stream, doc="The elements of a vector as a stream",
               **src)
    lib.define("vstream(Vector of T v) -> Stream of T", scalar=vector_stream, doc="= stream(v)", **src)

    tr = dict(kind=STREAM, topic="stream", lifts=False)
    lib.define("vectorof(Stream of T s) -> Vector of T", scalar=vectorof, needs_context=True,
               doc="A finite stream as a vector", **tr)
    lib.define("vectorof(Bag of T b) -> Vector of T", scalar=vectorof, needs_context=True, kind=STREAM,
               topic="stream", lifts=False,
               doc="A bag as a vector")
    lib.define("extract(Stream of T s) -> Stream of T", scalar=extract, doc="The elements of a stream", **tr)
    lib.define("extract(Bag of T b) -> Bag of T", scalar=extract, kind=STREAM, topic="stream", lifts=False,
               doc="The elements of a bag")
    lib.define("bag(T items...) -> Bag of T", scalar=make_bag, topic="stream", null_propagating=False,
               doc="A bag of the given elements")

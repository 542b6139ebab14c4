"""Stream windows and transforms, as functions on `StreamValue`s.

Every function here returns a new stream value without reading anything; reading starts when a
query opens it. Transforms keep O(window) state and pass `IDLE` ticks along; batches flow through
as batches. Each transform's state is an operator object (physical/stateful.py). Windows run the
one window implementation, physical/windows.py: `winagg` here is what a query runs where a window
is an expression (`stdev(winagg(s, 50, 5))`); a generator `w in winagg(…)` is planned as a Window
node, which runs the same state machine.
"""
from __future__ import annotations

import math

import numpy as np

from ..batch import Batch
from ..errors import QueryRuntimeError
from ..physical.flows import Publish
from ..physical.merging import Merge, Pivot
from ..physical.running import Timeout
from ..physical.sources import take_items
from ..physical.stateful import Changed, Deadband, Map, SampleEvery, Skip, ZScore, run_logic
from ..physical.stateful import floats as _floats
from ..physical.windows import WINDOW_VALUES, count_windows, time_windows
from ..registry import STREAM, Library
from ..streams import StreamValue


def _require_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise QueryRuntimeError(f"{name} must be an integer of at least {minimum}, not {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------- windows
def winagg(ctx, stream: StreamValue, size: int, stride: int) -> StreamValue:
    """Count windows: the first after `size` elements, then every `stride` elements; a trailing
    partial window is dropped; stride > size samples. The elements waiting for their window are
    accounted as the query's state (`ctx` may be None inside other stream functions)."""
    size = _require_int("the window size", size)
    stride = _require_int("the window stride", stride)
    if ctx is not None:   # refused when the statement starts, not when the first reading arrives
        ctx.allocate(8 * size, f"a window of {size} elements")
    return StreamValue(lambda: count_windows(stream.open(), size, stride, WINDOW_VALUES, ctx),
                       f"winagg({stream.label}, {size}, {stride})")


def twinagg(ctx, stream: StreamValue, size: float, stride: float) -> StreamValue:
    """Time windows over timestamped values: windows [end - size, end) with ends at multiples of
    `stride`, stamped with their end; empty windows are skipped; late events are dropped and
    counted; what is left is flushed at the end of the stream."""
    if not (size > 0 and stride > 0 and math.isfinite(size) and math.isfinite(stride)):
        raise QueryRuntimeError(f"twinagg needs a positive, finite size and stride (seconds), not {size} and {stride}")
    return StreamValue(lambda: time_windows(stream.open(), size, stride, ctx),
                       f"twinagg({stream.label}, {size}, {stride})")


# ------------------------------------------------------------------------------- transforms
def publish(ctx, stream: StreamValue, flow: str) -> StreamValue:
    """Pass a stream through while also delivering it to everyone subscribed to `flow`
    (numbered, so that checkpointed subscribers resume after what they read: physical/flows.py)."""
    hub = ctx.flows.hub(flow)
    return _stream(stream, f"publish(…, '{flow}')", lambda: Publish(hub), ctx)


def _stream(stream: StreamValue, label: str, logic, ctx=None) -> StreamValue:
    """A stream made from `stream` by a fresh `logic()` on each pass (physical/stateful.py)."""
    return StreamValue(lambda: run_logic(stream.open(), logic(), ctx), label)


def first_n(ctx, stream: StreamValue, n: int) -> StreamValue:
    n = _require_int("first_n's count", n, 0)
    return StreamValue(lambda: take_items(stream.open, n, ctx), f"first_n({stream.label}, {n})")


def skip(ctx, stream: StreamValue, n: int) -> StreamValue:
    n = _require_int("skip's count", n, 0)
    return _stream(stream, f"skip({stream.label}, {n})", lambda: Skip(n), ctx)


def changed(ctx, stream: StreamValue) -> StreamValue:
    """Drop elements equal to the one just before them."""
    return _stream(stream, f"changed({stream.label})", Changed, ctx)


def deadband(ctx, stream: StreamValue, eps: float) -> StreamValue:
    """Emit an element when it differs from the last emitted one by more than eps (the first always)."""
    if eps is None or eps < 0:
        raise QueryRuntimeError(f"deadband needs eps >= 0, not {eps}")
    return _stream(stream, f"deadband({stream.label}, {eps})", lambda: Deadband(eps), ctx)


def sample_every(ctx, stream: StreamValue, n: int) -> StreamValue:
    """The 1st, n+1st, 2n+1st, … elements."""
    n = _require_int("sample_every's step", n)
    return _stream(stream, f"sample_every({stream.label}, {n})", lambda: SampleEvery(n), ctx)


def timeout(ctx, stream: StreamValue, seconds: float) -> StreamValue:
    """The stream until `seconds` have passed since it started, then its end."""
    return _stream(stream, f"timeout({stream.label}, {seconds})", lambda: Timeout(seconds, ctx.clock), ctx)


def merge(ctx, *streams: StreamValue) -> StreamValue:
    """Elements of several streams, in order of arrival (physical/merging.py)."""
    return StreamValue(lambda: Merge(list(streams)).run(ctx), "merge(" + ", ".join(s.label for s in streams) + ")")


def pivot(ctx, streams) -> StreamValue:
    """A vector of the latest element of each stream, on every arrival once each has produced one."""
    streams = list(streams)
    for s in streams:
        if not isinstance(s, StreamValue):
            raise QueryRuntimeError("pivot takes a vector of streams: pivot([s1, s2])")
    return StreamValue(lambda: Pivot(streams).run(ctx), "pivot(…)")


# ------------------------------------------------------------------------- monitoring
def zscore(ctx, stream: StreamValue, n: int) -> StreamValue:
    """The z-score of each element against the mean and sample standard deviation of the n
    elements before it (the first n elements give none). The n elements it keeps are checked
    against the statement's memory budget first; a batch's windows are reduced a slice at a time
    (ZSCORE_WORK elements), so a window of millions still notices cancellation and time limits."""
    n = _require_int("zscore's window", n, 2)
    ctx.allocate(8 * n, f"zscore's window of {n} elements")
    return _stream(stream, f"zscore({stream.label}, {n})", lambda: ZScore(n, ctx), ctx)


def drift(ctx, stream: StreamValue, reference_mean: float, reference_std: float, n: int) -> StreamValue:
    """Data drift: for every n elements (tumbling), how many standard errors their mean lies from
    the reference mean: (mean - reference_mean) / (reference_std / sqrt(n))."""
    n = _require_int("drift's window", n)
    if not reference_std > 0:
        raise QueryRuntimeError("drift needs a positive reference standard deviation")
    scale = reference_std / math.sqrt(n)

    def on_batch(item: Batch):
        return (Batch((_floats(item.values, "drift", 2).mean(axis=1) - reference_mean) / scale),)

    def on_value(item):
        return ((float(np.mean(_floats(item, "drift"))) - reference_mean) / scale,)
    return _stream(winagg(ctx, stream, n, n), f"drift({stream.label}, {reference_mean}, {reference_std}, {n})",
                   lambda: Map(on_batch, on_value))


# ------------------------------------------------------------------------------- registration
def register(lib: Library) -> None:
    tr = dict(kind=STREAM, topic="stream", lifts=False)
    lib.define("publish(Stream of T s, Charstring flow) -> Stream of T", scalar=publish, needs_context=True,
               volatile=True, doc="Pass s through, also delivering it to subscribers of flow", **tr)
    lib.define("winagg(Stream of T s, Integer size, Integer stride) -> Stream of Vector of T", scalar=winagg,
               needs_context=True, doc="Count windows of size elements every stride elements", **tr)
    lib.define("twinagg(Stream of Timeval of T s, Number size, Number stride) -> Stream of Timeval of Vector of T",
               scalar=twinagg, needs_context=True,
               doc="Time windows of size seconds every stride seconds, stamped with their end", **tr)
    lib.define("first_n(Stream of T s, Integer n) -> Stream of T", scalar=first_n, needs_context=True,
               doc="The first n elements", **tr)
    lib.define("skip(Stream of T s, Integer n) -> Stream of T", scalar=skip, needs_context=True,
               doc="All but the first n elements", **tr)
    lib.define("changed(Stream of T s) -> Stream of T", scalar=changed, needs_context=True,
               doc="Drop repeats of the previous element", **tr)
    lib.define("deadband(Stream of Number s, Number eps) -> Stream of Number", scalar=deadband, needs_context=True,
               result_type=lambda t, a: t[0],
               doc="Elements differing from the last emitted one by more than eps (the first always)", **tr)
    lib.define("sample_every(Stream of T s, Integer n) -> Stream of T", scalar=sample_every, needs_context=True,
               doc="The 1st, n+1st, 2n+1st, … elements", **tr)
    lib.define("timeout(Stream of T s, Number seconds) -> Stream of T", scalar=timeout, needs_context=True,
               doc="The stream until that many seconds have passed", **tr)
    lib.define("merge(Vector of Stream of T streams) -> Stream of T", scalar=lambda ctx, streams: merge(ctx, *streams),
               needs_context=True, doc="Elements of a vector of streams as they arrive (SA Engine's merge([s1, s2]))",
               **tr)
    lib.define("merge(Stream of T s...) -> Stream of T", scalar=merge, needs_context=True,
               doc="Elements of several streams as they arrive", **tr)
    lib.define("pivot(Vector of Stream of T streams) -> Stream of Vector of T", scalar=pivot, needs_context=True,
               doc="The latest element of each stream, on every arrival", **tr)
    lib.define("zscore(Stream of Number s, Integer n) -> Stream of Real", scalar=zscore, needs_context=True,
               doc="Each element's z-score against the n elements before it", **tr)
    lib.define("drift(Stream of Number s, Number reference_mean, Number reference_std, Integer n) -> Stream of Real",
               scalar=drift, needs_context=True,
               doc="Standard errors between each n-element mean and a reference mean", **tr)

"""Stream windows and transforms, as functions on `StreamValue`s.

Every function here returns a new stream value without reading anything; reading starts when a
query opens it. Transforms keep O(window) state and pass `IDLE` ticks along; batches flow through
as batches. The item-by-item ones share one loop (`streams.transformed`). Windows run the one
window implementation, physical/windows.py: `winagg` here is what a query runs where a window is
an expression (`stdev(winagg(s, 50, 5))`); a generator `w in winagg(…)` is planned as a Window
node, which runs the same state machine.
"""
from __future__ import annotations

import math
import queue
import threading

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..batch import IDLE, Batch
from ..errors import QueryRuntimeError
from ..physical.sources import take_items
from ..physical.windows import WINDOW_VALUES, count_windows, time_windows
from ..registry import STREAM, Library
from ..streams import StreamValue, close_items, iter_elements, transformed
from ..values import Timeval, brief_value, make_vector, values_equal


def _require_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise QueryRuntimeError(f"{name} must be an integer of at least {minimum}, not {value!r}")
    return int(value)


def _floats(values, name: str, depth: int = 1) -> np.ndarray:
    """Numbers (`depth` levels of lists of them) as float64, or the error that names the first
    value that is not a number (a stream of Object can hold anything; numpy would parse '1' or
    fail on a time)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iuf" and values.ndim == depth:
        return values.astype(np.float64, copy=False)

    def check(value, level):
        if level and isinstance(value, (list, np.ndarray)):
            for v in (value.tolist() if isinstance(value, np.ndarray) else value):
                check(v, level - 1)
        elif level or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise QueryRuntimeError(f"{name} needs numbers, not {brief_value(value)}")

    check(values, depth)
    try:
        return np.asarray(values, dtype=np.float64)
    except ValueError:  # windows of different lengths
        raise QueryRuntimeError(f"{name} needs windows of numbers of one length") from None


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
    """Pass a stream through while also delivering it to everyone subscribed to `flow`."""
    hub = ctx.flows.hub(flow)

    def on_batch(item: Batch):
        hub.push_batch(item.values, item.times)
        return (item,)

    def on_value(item):
        if isinstance(item, Timeval):
            hub.push(item.value, item.time.seconds)
        else:
            hub.push(item, None)
        return (item,)
    return transformed(stream, f"publish(…, '{flow}')", lambda: (on_batch, on_value))


def first_n(stream: StreamValue, n: int) -> StreamValue:
    n = _require_int("first_n's count", n, 0)
    return StreamValue(lambda: take_items(stream.open, n), f"first_n({stream.label}, {n})")


def skip(stream: StreamValue, n: int) -> StreamValue:
    n = _require_int("skip's count", n, 0)

    def start():
        remaining = n

        def on_batch(item: Batch):
            nonlocal remaining
            if remaining == 0:
                return (item,)
            if len(item) > remaining:
                rest, remaining = item.slice(remaining), 0
                return (rest,)
            remaining -= len(item)
            return ()

        def on_value(item):
            nonlocal remaining
            if remaining == 0:
                return (item,)
            remaining -= 1
            return ()
        return on_batch, on_value
    return transformed(stream, f"skip({stream.label}, {n})", start)


_NOTHING = object()


def changed(stream: StreamValue) -> StreamValue:
    """Drop elements equal to the one just before them."""
    def start():
        last = _NOTHING

        def on_batch(item: Batch):
            nonlocal last
            values = item.values
            if not (isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype != object
                    and item.times is None):
                return on_value(item)
            if len(values) == 0:
                return ()
            keep = np.empty(len(values), dtype=bool)
            keep[0] = last is _NOTHING or not values_equal(values[0].item(), last)
            keep[1:] = values[1:] != values[:-1]
            last = values[-1].item()
            return (item.take(keep),) if keep.any() else ()

        def on_value(item):
            nonlocal last
            out = []
            for element in iter_elements([item]):
                compared = element.value if isinstance(element, Timeval) else element
                if last is _NOTHING or not values_equal(compared, last):
                    out.append(element)
                last = compared
            return out
        return on_batch, on_value
    return transformed(stream, f"changed({stream.label})", start)


def deadband(stream: StreamValue, eps: float) -> StreamValue:
    """Emit an element when it differs from the last emitted one by more than eps (the first always)."""
    if eps is None or eps < 0:
        raise QueryRuntimeError(f"deadband needs eps >= 0, not {eps}")

    def start():
        last = None

        def on_batch(item: Batch):
            nonlocal last
            values = item.values
            if not (isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype != object):
                return on_value(item)
            keep = np.zeros(len(values), dtype=bool)
            current = last
            for i, v in enumerate(values.tolist()):
                if current is None or abs(v - current) > eps:
                    keep[i] = True
                    current = v
            last = current
            return (item.take(keep),) if keep.any() else ()

        def on_value(item):
            nonlocal last
            out = []
            for element in iter_elements([item]):
                v = element.value if isinstance(element, Timeval) else element
                if v is None:
                    continue
                _floats(v, "deadband", 0)
                if last is None or abs(v - last) > eps:
                    last = v
                    out.append(element)
            return out
        return on_batch, on_value
    return transformed(stream, f"deadband({stream.label}, {eps})", start)


def sample_every(stream: StreamValue, n: int) -> StreamValue:
    """The 1st, n+1st, 2n+1st, … elements."""
    n = _require_int("sample_every's step", n)

    def start():
        position = 0  # index of the next element

        def on_batch(item: Batch):
            nonlocal position
            count = len(item)
            keep = np.arange(position, position + count) % n == 0
            position += count
            return (item.take(keep),) if keep.any() else ()

        def on_value(item):
            nonlocal position
            position += 1
            return (item,) if (position - 1) % n == 0 else ()
        return on_batch, on_value
    return transformed(stream, f"sample_every({stream.label}, {n})", start)


def timeout(ctx, stream: StreamValue, seconds: float) -> StreamValue:
    """The stream until `seconds` have passed since it started, then its end."""
    clock = ctx.clock

    def open_():
        deadline = clock.monotonic() + seconds
        items = stream.open()
        try:
            for item in items:
                if clock.monotonic() >= deadline:
                    return
                yield item
        finally:
            close_items(items)
    return StreamValue(open_, f"timeout({stream.label}, {seconds})")


class _Feeder:
    """Reads several streams at once, each in its own thread, into one queue (arrival order)."""

    def __init__(self, streams: list[StreamValue], capacity: int = 64):
        self.streams = streams
        self.queue: queue.Queue = queue.Queue(maxsize=capacity)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._pump, args=(i, s), daemon=True,
                                         name=f"streamql-merge-{i}") for i, s in enumerate(streams)]

    def _pump(self, index: int, stream: StreamValue) -> None:
        items = stream.open()
        try:
            for item in items:
                if self.stop.is_set():
                    return
                if item is IDLE:
                    continue
                while not self.stop.is_set():
                    try:
                        self.queue.put((index, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # noqa: BLE001 - delivered to the reader
            self.queue.put((index, exc))
        finally:
            close_items(items)
            self.queue.put((index, _DONE))

    def __iter__(self):
        for thread in self.threads:
            thread.start()
        running = len(self.threads)
        try:
            while running:
                try:
                    index, item = self.queue.get(timeout=0.1)
                except queue.Empty:
                    yield None, IDLE
                    continue
                if item is _DONE:
                    running -= 1
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield index, item
        finally:
            self.stop.set()


_DONE = object()


def merge(*streams: StreamValue) -> StreamValue:
    """Elements of several streams, in order of arrival."""
    def open_():
        for _, item in _Feeder(list(streams)):
            yield item
    return StreamValue(open_, "merge(" + ", ".join(s.label for s in streams) + ")")


def pivot(streams) -> StreamValue:
    """A vector of the latest element of each stream, on every arrival once each has produced one."""
    streams = list(streams)
    for s in streams:
        if not isinstance(s, StreamValue):
            raise QueryRuntimeError("pivot takes a vector of streams: pivot([s1, s2])")

    def open_():
        latest = [_NOTHING] * len(streams)
        missing = len(streams)
        for index, item in _Feeder(streams):
            if item is IDLE:
                yield item
                continue
            for element in iter_elements([item]):
                if latest[index] is _NOTHING:
                    missing -= 1
                latest[index] = element
                if missing == 0:
                    yield make_vector(list(latest))
    return StreamValue(open_, "pivot(…)")


# ------------------------------------------------------------------------- monitoring
ZSCORE_WORK = 1 << 22   # elements of windows reduced between two checks of the statement


def zscore(ctx, stream: StreamValue, n: int) -> StreamValue:
    """The z-score of each element against the mean and sample standard deviation of the n
    elements before it (the first n elements give none). The n elements it keeps are checked
    against the statement's memory budget first; a batch's windows are reduced a slice at a time
    (ZSCORE_WORK elements), so a window of millions still notices cancellation and time limits."""
    n = _require_int("zscore's window", n, 2)
    ctx.allocate(8 * n, f"zscore's window of {n} elements")

    def start():
        history = np.empty(0)

        def scores(values: np.ndarray):
            nonlocal history
            data = np.concatenate([history, values])
            history = data[-n:]
            if len(data) <= n:
                return None
            windows = sliding_window_view(data, n)[:-1]
            step = max(1, ZSCORE_WORK // n)
            mean = np.empty(len(windows))
            std = np.empty(len(windows))
            for first in range(0, len(windows), step):
                ctx.check()
                part = windows[first:first + step]
                mean[first:first + step] = part.mean(axis=1)
                std[first:first + step] = part.std(axis=1, ddof=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                z = (data[n:] - mean) / std
            return z[-len(values):] if len(z) > len(values) else z

        def on_batch(item: Batch):
            z = scores(_floats(item.values, "zscore"))
            return () if z is None else (Batch(z),)

        def on_value(item):
            z = scores(_floats([item], "zscore"))
            return () if z is None else (float(z[-1]),)
        return on_batch, on_value
    return transformed(stream, f"zscore({stream.label}, {n})", start)


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
    return transformed(winagg(ctx, stream, n, n), f"drift({stream.label}, {reference_mean}, {reference_std}, {n})",
                       lambda: (on_batch, on_value))


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
    lib.define("first_n(Stream of T s, Integer n) -> Stream of T", scalar=first_n, doc="The first n elements", **tr)
    lib.define("skip(Stream of T s, Integer n) -> Stream of T", scalar=skip, doc="All but the first n elements", **tr)
    lib.define("changed(Stream of T s) -> Stream of T", scalar=changed, doc="Drop repeats of the previous element",
               **tr)
    lib.define("deadband(Stream of Number s, Number eps) -> Stream of Number", scalar=deadband,
               result_type=lambda t, a: t[0],
               doc="Elements differing from the last emitted one by more than eps (the first always)", **tr)
    lib.define("sample_every(Stream of T s, Integer n) -> Stream of T", scalar=sample_every,
               doc="The 1st, n+1st, 2n+1st, … elements", **tr)
    lib.define("timeout(Stream of T s, Number seconds) -> Stream of T", scalar=timeout, needs_context=True,
               doc="The stream until that many seconds have passed", **tr)
    lib.define("merge(Vector of Stream of T streams) -> Stream of T", scalar=lambda streams: merge(*streams),
               doc="Elements of a vector of streams as they arrive (SA Engine's merge([s1, s2]))", **tr)
    lib.define("merge(Stream of T s...) -> Stream of T", scalar=merge, doc="Elements of several streams as they arrive",
               **tr)
    lib.define("pivot(Vector of Stream of T streams) -> Stream of Vector of T", scalar=pivot,
               doc="The latest element of each stream, on every arrival", **tr)
    lib.define("zscore(Stream of Number s, Integer n) -> Stream of Real", scalar=zscore, needs_context=True,
               doc="Each element's z-score against the n elements before it", **tr)
    lib.define("drift(Stream of Number s, Number reference_mean, Number reference_std, Integer n) -> Stream of Real",
               scalar=drift, needs_context=True,
               doc="Standard errors between each n-element mean and a reference mean", **tr)

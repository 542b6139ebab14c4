"""Stream sources, windows and transforms, as functions on `StreamValue`s.

Every function here returns a new stream value without reading anything; reading starts when a
query opens it. Transforms keep O(window) state and pass `IDLE` ticks along. Batches flow through
as batches (a tumbling window over a batch is a reshape view; a sliding one a strided view).
"""
from __future__ import annotations

import math
import queue
import threading
from typing import Any, Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..batch import IDLE, Batch
from ..errors import QueryRuntimeError
from ..signals import Stamped
from ..streams import LazyBag, StreamValue, approximate_bytes, collect_column, iter_elements, to_column
from ..types import (BOOLEAN, CHARSTRING, INTEGER, OBJECT, REAL, Type, bag_of, stream_of,
                     timeval_of, vector_of)
from ..values import Bag, Time, Timeval, format_value, values_equal
from .registry import SOURCE, STREAM, Library

BATCH = 65536


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
            raise QueryRuntimeError(f"{name} needs numbers, not {format_value(value)}")

    check(values, depth)
    try:
        return np.asarray(values, dtype=np.float64)
    except ValueError:  # windows of different lengths
        raise QueryRuntimeError(f"{name} needs windows of numbers of one length") from None


def _closing(items):
    close = getattr(items, "close", None)
    if close:
        close()


# ---------------------------------------------------------------------------------- sources
INT64 = (-2 ** 63, 2 ** 63 - 1)


def iota(lo: int, hi: int) -> LazyBag:
    for bound in (lo, hi):
        if not INT64[0] <= bound <= INT64[1]:
            raise QueryRuntimeError(f"iota's bounds must fit in 64 bits, not {bound}")
    if hi == INT64[1]:
        raise QueryRuntimeError("iota cannot count up to the largest 64-bit integer")

    def open_():
        for start in range(lo, hi + 1, BATCH):
            yield Batch(np.arange(start, min(start + BATCH, hi + 1), dtype=np.int64))
    return LazyBag(open_, f"iota({lo}, {hi})", size=max(0, hi - lo + 1))


def siota(lo: int, hi: int) -> StreamValue:
    return StreamValue(iota(lo, hi).open, f"siota({lo}, {hi})")


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
            yield from pause_until(clock, clock.monotonic() + pace)
            yield value
    return StreamValue(open_, f"diota({pace}, {lo}, {hi})")


def _signal(ctx, name: str):
    signal = ctx.signals.get(name)
    if signal is None:
        known = ", ".join(ctx.signals.names()) or "none"
        raise QueryRuntimeError(f"no signal named {name!r} on this engine (signals: {known})")
    return signal


def signal_stream(ctx, name: str) -> StreamValue:
    signal = _signal(ctx, name)

    def open_():
        items = signal.open(ctx.clock)
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
            _closing(items)
    return StreamValue(open_, f"signal_stream('{name}')")


def ts_signal_stream(ctx, name: str) -> StreamValue:
    signal = _signal(ctx, name)
    clock = ctx.clock

    def open_():
        items = signal.open(clock)
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
            _closing(items)
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
        items = hub.open(ctx.clock)
        try:
            for item in items:
                if type(item) is Stamped:
                    yield item.value
                elif type(item) is Batch:
                    yield Batch(item.values)
                else:
                    yield item
        finally:
            _closing(items)
    return StreamValue(open_, label)


def publish(ctx, stream: StreamValue, flow: str) -> StreamValue:
    """Pass a stream through while also delivering it to everyone subscribed to `flow`."""
    hub = ctx.flows.hub(flow)

    def open_():
        items = stream.open()
        try:
            for item in items:
                if item is IDLE:
                    yield item
                    continue
                if type(item) is Batch:
                    hub.push_batch(item.values, item.times)
                else:
                    hub.push(item.value if isinstance(item, Timeval) else item,
                             item.time.seconds if isinstance(item, Timeval) else None)
                yield item
        finally:
            _closing(items)
    return StreamValue(open_, f"publish(…, '{flow}')")


def vector_stream(vector) -> StreamValue:
    column = to_column(vector) if not isinstance(vector, (np.ndarray, list)) else vector

    def open_():
        if len(column):
            yield Batch(column)
    return StreamValue(open_, "stream(vector)")


def make_bag(*items) -> Bag:
    return Bag(items)


def vectorof(ctx, collection):
    """A finite stream or a bag as a vector (a stream must end: limit it with first_n or timeout)."""
    if isinstance(collection, StreamValue):
        column = collect_column(_checking(ctx, collection.open()))
    else:
        column = to_column(collection)
    if isinstance(column, np.ndarray) and column.dtype != object:
        return column
    return list(column.tolist() if isinstance(column, np.ndarray) else column)


def _checking(ctx, items):
    """The items, checking the query's cancellation and limits between them (an endless stream
    collected into a vector would otherwise never stop)."""
    try:
        for item in items:
            ctx.check()
            yield item
    finally:
        _closing(items)


def _checked(ctx, items):
    try:
        for item in items:
            ctx.check()
            yield item
    finally:
        _closing(items)


def extract(collection):
    return collection


# ---------------------------------------------------------------------------------- windows
def winagg(ctx, stream: StreamValue, size: int, stride: int) -> StreamValue:
    """Count windows: the first after `size` elements, then every `stride` elements; a trailing
    partial window is dropped; stride > size samples. The elements waiting for their window are
    accounted as the query's state (`ctx` may be None inside other stream functions)."""
    size = _require_int("the window size", size)
    stride = _require_int("the window stride", stride)

    def open_():
        items = stream.open()
        pending = None        # not yet windowed elements: ndarray or list
        skip = 0              # elements to drop before the next window starts (stride > size)
        held = 0              # bytes of pending accounted in ctx
        hold = ctx.hold if ctx is not None else None
        try:
            for item in items:
                if item is IDLE:
                    yield item
                    continue
                if type(item) is Batch:
                    values = item.values
                    if item.times is not None:
                        values = list(iter_elements([item]))
                else:
                    if skip:
                        skip -= 1
                        continue
                    if pending is None:
                        pending = []
                    elif isinstance(pending, np.ndarray):
                        pending = list(pending)
                    pending.append(item)
                    if hold is not None and not len(pending) & 1023:   # every 1024 elements: cheap
                        now = len(pending) * (16 + item.nbytes if isinstance(item, np.ndarray) else 16)
                        previous, held = held, now
                        hold(held - previous)
                    if len(pending) >= size:
                        window = pending[:size]
                        yield _window_value(window)
                        if stride < size:
                            del pending[:stride]
                        else:
                            skip = stride - size
                            pending = []
                    continue
                data = _join(pending, values)
                if skip:
                    if skip >= len(data):
                        skip -= len(data)
                        pending = None
                        continue
                    data = data[skip:]
                    skip = 0
                n = len(data)
                if n < size:
                    pending = data
                else:
                    count = (n - size) // stride + 1
                    windows = _windows(data, size, stride, count)
                    pending, skip = window_rest(data, count, stride)
                if hold is not None:
                    now = approximate_bytes(pending) if pending is not None else 0
                    previous, held = held, now
                    hold(held - previous)
                if n >= size:
                    yield Batch(windows)
        finally:
            if hold is not None:
                hold(-held)
            _closing(items)
    return StreamValue(open_, f"winagg({stream.label}, {size}, {stride})")


def window_rest(data, count: int, stride: int) -> tuple:
    """After `count` windows every `stride` elements of `data`: (the elements the next window
    starts with, or None; how many coming elements to drop first, when stride > size)."""
    next_start = count * stride
    if next_start <= len(data):
        return data[next_start:], 0
    return None, next_start - len(data)


def _window_value(window: list):
    from .vector import make_vector
    return make_vector(window)


def _join(pending, values):
    if pending is None or len(pending) == 0:
        return values
    if isinstance(values, np.ndarray) and values.dtype != object:
        head = pending if isinstance(pending, np.ndarray) else _as_array(pending, values)
        if head is not None and head.shape[1:] == values.shape[1:]:
            return np.concatenate([head, values])
    merged = list(pending.tolist() if isinstance(pending, np.ndarray) and pending.ndim == 1 else pending)
    merged.extend(values.tolist() if isinstance(values, np.ndarray) and values.ndim == 1 else list(values))
    return merged


def _as_array(items: list, like: np.ndarray):
    try:
        array = np.asarray(items, dtype=like.dtype if like.dtype.kind == "f" else None)
    except (TypeError, ValueError):
        return None
    return array if array.dtype != object else None


def _windows(data, size: int, stride: int, count: int):
    """`count` windows of `size` elements every `stride` elements, without copying when possible."""
    if isinstance(data, np.ndarray) and data.dtype != object:
        if data.ndim == 1:
            if stride == size:
                return data[:count * size].reshape(count, size)
            return sliding_window_view(data, size)[::stride][:count]
        return np.stack([data[i * stride:i * stride + size] for i in range(count)])
    return [list(data[i * stride:i * stride + size]) for i in range(count)]


def twinagg(ctx, stream: StreamValue, size: float, stride: float) -> StreamValue:
    """Time windows over timestamped values: windows [end - size, end) with ends at multiples of
    `stride`, each emitted (stamped with its end) once an event at or after its end arrives; empty
    windows are skipped; events for windows already emitted are dropped and counted; what is left
    is flushed at the end of the stream."""
    if not (size > 0 and stride > 0):
        raise QueryRuntimeError("twinagg needs a positive size and stride")

    def windows_up_to(times, values, emitted_end, limit, inclusive_flush):
        """Emit windows with end <= limit (or, flushing, every window holding a pending event)."""
        out_ends, out_values = [], []
        end = _next_end(times[0], stride, emitted_end)
        while len(times) and (end <= limit if not inclusive_flush else end - size <= times[-1]):
            lo = np.searchsorted(times, end - size, "left")
            hi = np.searchsorted(times, end, "left")
            if hi > lo:
                out_ends.append(end)
                out_values.append(values[lo:hi])
            emitted_end = end
            # events before the next window's start can never be used again
            start = np.searchsorted(times, end + stride - size, "left")
            if start:
                times, values = times[start:], values[start:]
            if not len(times):
                break
            end = max(end + stride, _next_end(times[0], stride, emitted_end))
        return times, values, emitted_end, out_ends, out_values

    def open_():
        items = stream.open()
        times = np.empty(0)
        values: Any = np.empty(0)
        watermark = -math.inf
        emitted_end = -math.inf
        held = 0              # bytes of events waiting for their windows, accounted in ctx
        try:
            for item in items:
                if item is IDLE:
                    yield item
                    continue
                if type(item) is Batch and item.times is None and _all_timevals(item.values):
                    # a batch of ts(t, v) values (vstream of a vector of them): their own times
                    new_times = np.array([tv.time.seconds for tv in item.values], dtype=np.float64)
                    new_values = to_column([tv.value for tv in item.values])
                elif type(item) is Batch:
                    new_times = np.asarray(item.times if item.times is not None else
                                           np.full(len(item.values), ctx.clock.now()), dtype=np.float64)
                    new_values = item.values
                elif isinstance(item, Timeval):
                    new_times = np.array([item.time.seconds])
                    new_values = _one(item.value)
                else:
                    raise QueryRuntimeError("twinagg needs timestamped values: use ts_signal_stream or ts(t, v)")
                last_end = np.floor((new_times + size) / stride) * stride
                in_some_window = last_end > new_times
                # late: every window holding the event closed before it came (the watermark, the
                # largest time seen before it, had reached their ends), even windows left empty
                seen_before = np.maximum.accumulate(np.concatenate([[watermark], new_times[:-1]]))
                late = in_some_window & (last_end <= np.maximum(seen_before, emitted_end))
                if late.any():
                    ctx.count("late_events", int(late.sum()))
                keep = in_some_window & ~late
                if not keep.all():
                    new_times, new_values = new_times[keep], _take(new_values, keep)
                if len(new_times) == 0:
                    continue
                times, values = _merge_sorted(times, values, new_times, new_values)
                watermark = max(watermark, float(new_times.max()))
                times, values, emitted_end, ends, windows = windows_up_to(times, values, emitted_end, watermark, False)
                # every window ending at or before the watermark is closed now, emitted or empty
                emitted_end = max(emitted_end, math.floor(watermark / stride) * stride)
                now = times.nbytes + approximate_bytes(values)
                previous, held = held, now
                ctx.hold(held - previous)
                if ends:
                    yield _timeval_batch(ends, windows)
            if len(times):
                times, values, emitted_end, ends, windows = windows_up_to(times, values, emitted_end, math.inf, True)
                if ends:
                    yield _timeval_batch(ends, windows)
        finally:
            ctx.hold(-held)
            _closing(items)
    return StreamValue(open_, f"twinagg({stream.label}, {size}, {stride})")


def _all_timevals(values) -> bool:
    return isinstance(values, list) and len(values) > 0 and all(isinstance(v, Timeval) for v in values)


def _next_end(t: float, stride: float, emitted_end: float) -> float:
    """The first window end after both t and the last emitted end: the smallest multiple of stride
    above t (a window [end - size, end) holds t only if end > t)."""
    end = math.floor(t / stride) * stride + stride
    if end <= t:
        end += stride
    if emitted_end > -math.inf and end <= emitted_end:
        end = emitted_end + stride
    return end


def _one(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return np.array([value], dtype=np.float64 if isinstance(value, float) else np.int64)
    return [value]


def _take(values, mask):
    if isinstance(values, np.ndarray):
        return values[mask]
    return [v for v, k in zip(values, mask) if k]


def _merge_sorted(times, values, new_times, new_values):
    all_times = np.concatenate([times, new_times])
    if isinstance(values, np.ndarray) and isinstance(new_values, np.ndarray) and \
            values.shape[1:] == new_values.shape[1:] or (isinstance(values, np.ndarray) and len(values) == 0
                                                         and isinstance(new_values, np.ndarray)):
        all_values = np.concatenate([values, new_values]) if len(values) else new_values
    else:
        all_values = list(values) + list(new_values)
    if len(new_times) and len(times) and new_times.min() < times[-1] or not np.all(np.diff(new_times) >= 0):
        order = np.argsort(all_times, kind="stable")
        all_times = all_times[order]
        all_values = all_values[order] if isinstance(all_values, np.ndarray) else [all_values[i] for i in order]
    return all_times, all_values


def _timeval_batch(ends: list, windows: list) -> Batch:
    from .vector import make_vector
    vectors = [w if isinstance(w, np.ndarray) else make_vector(list(w)) for w in windows]
    return Batch(vectors, np.asarray(ends, dtype=np.float64))


# ------------------------------------------------------------------------------- transforms
def first_n(stream: StreamValue, n: int) -> StreamValue:
    n = _require_int("first_n's count", n, 0)

    def open_():
        if n == 0:
            return
        remaining = n
        items = stream.open()
        try:
            for item in items:
                if item is IDLE:
                    yield item
                elif type(item) is Batch:
                    if len(item) >= remaining:
                        yield item.slice(0, remaining)
                        return
                    remaining -= len(item)
                    yield item
                else:
                    yield item
                    remaining -= 1
                    if remaining == 0:
                        return
        finally:
            _closing(items)
    return StreamValue(open_, f"first_n({stream.label}, {n})")


def skip(stream: StreamValue, n: int) -> StreamValue:
    n = _require_int("skip's count", n, 0)

    def open_():
        remaining = n
        items = stream.open()
        try:
            for item in items:
                if remaining == 0 or item is IDLE:
                    yield item
                elif type(item) is Batch:
                    if len(item) > remaining:
                        yield item.slice(remaining)
                        remaining = 0
                    else:
                        remaining -= len(item)
                else:
                    remaining -= 1
        finally:
            _closing(items)
    return StreamValue(open_, f"skip({stream.label}, {n})")


_NOTHING = object()


def changed(stream: StreamValue) -> StreamValue:
    """Drop elements equal to the one just before them."""
    def open_():
        last = _NOTHING
        items = stream.open()
        try:
            for item in items:
                if item is IDLE:
                    yield item
                elif type(item) is Batch and isinstance(item.values, np.ndarray) and item.values.ndim == 1 \
                        and item.values.dtype != object and item.times is None:
                    values = item.values
                    if len(values) == 0:
                        continue
                    keep = np.empty(len(values), dtype=bool)
                    keep[0] = last is _NOTHING or not values_equal(values[0].item(), last)
                    keep[1:] = values[1:] != values[:-1]
                    last = values[-1].item()
                    if keep.any():
                        yield item.take(keep)
                else:
                    out = []
                    for element in iter_elements([item]):
                        compared = element.value if isinstance(element, Timeval) else element
                        if last is _NOTHING or not values_equal(compared, last):
                            out.append(element)
                        last = compared
                    yield from out
        finally:
            _closing(items)
    return StreamValue(open_, f"changed({stream.label})")


def deadband(stream: StreamValue, eps: float) -> StreamValue:
    """Emit an element when it differs from the last emitted one by more than eps (the first always)."""
    if eps is None or eps < 0:
        raise QueryRuntimeError(f"deadband needs eps >= 0, not {eps}")

    def open_():
        last = None
        items = stream.open()
        try:
            for item in items:
                if item is IDLE:
                    yield item
                elif type(item) is Batch and isinstance(item.values, np.ndarray) and item.values.ndim == 1 \
                        and item.values.dtype != object:
                    values = item.values
                    keep = np.zeros(len(values), dtype=bool)
                    current = last
                    for i, v in enumerate(values.tolist()):
                        if current is None or abs(v - current) > eps:
                            keep[i] = True
                            current = v
                    last = current
                    if keep.any():
                        yield item.take(keep)
                else:
                    for element in iter_elements([item]):
                        v = element.value if isinstance(element, Timeval) else element
                        if v is None:
                            continue
                        _floats(v, "deadband", 0)
                        if last is None or abs(v - last) > eps:
                            last = v
                            yield element
        finally:
            _closing(items)
    return StreamValue(open_, f"deadband({stream.label}, {eps})")


def sample_every(stream: StreamValue, n: int) -> StreamValue:
    """The 1st, n+1st, 2n+1st, … elements."""
    n = _require_int("sample_every's step", n)

    def open_():
        position = 0  # index of the next element
        items = stream.open()
        try:
            for item in items:
                if item is IDLE:
                    yield item
                elif type(item) is Batch:
                    count = len(item)
                    offsets = np.arange(position, position + count)
                    keep = offsets % n == 0
                    position += count
                    if keep.any():
                        yield item.take(keep)
                else:
                    if position % n == 0:
                        yield item
                    position += 1
        finally:
            _closing(items)
    return StreamValue(open_, f"sample_every({stream.label}, {n})")


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
            _closing(items)
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
            _closing(items)
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
        from .vector import make_vector
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
def zscore(stream: StreamValue, n: int) -> StreamValue:
    """The z-score of each element against the mean and sample standard deviation of the n
    elements before it (the first n elements give none)."""
    n = _require_int("zscore's window", n, 2)

    def open_():
        history = np.empty(0)
        items = stream.open()
        try:
            for item in items:
                if item is IDLE:
                    yield item
                    continue
                values = _floats(item.values if type(item) is Batch else [item], "zscore")
                data = np.concatenate([history, values])
                if len(data) > n:
                    windows = sliding_window_view(data, n)[:-1]
                    mean = windows.mean(axis=1)
                    std = windows.std(axis=1, ddof=1)
                    with np.errstate(divide="ignore", invalid="ignore"):
                        z = (data[n:] - mean) / std
                    z = z[-len(values):] if len(z) > len(values) else z
                    yield Batch(z) if type(item) is Batch else float(z[-1])
                history = data[-n:]
        finally:
            _closing(items)
    return StreamValue(open_, f"zscore({stream.label}, {n})")


def drift(stream: StreamValue, reference_mean: float, reference_std: float, n: int) -> StreamValue:
    """Data drift: for every n elements (tumbling), how many standard errors their mean lies from
    the reference mean: (mean - reference_mean) / (reference_std / sqrt(n))."""
    n = _require_int("drift's window", n)
    if not reference_std > 0:
        raise QueryRuntimeError("drift needs a positive reference standard deviation")
    scale = reference_std / math.sqrt(n)
    windows = winagg(None, stream, n, n)

    def open_():
        items = windows.open()
        try:
            for item in items:
                if item is IDLE:
                    yield item
                elif type(item) is Batch:
                    yield Batch((_floats(item.values, "drift", 2).mean(axis=1) - reference_mean) / scale)
                else:
                    yield (float(np.mean(_floats(item, "drift"))) - reference_mean) / scale
        finally:
            _closing(items)
    return StreamValue(open_, f"drift({stream.label}, {reference_mean}, {reference_std}, {n})")


# ------------------------------------------------------------------------------- registration
def _signal_element(catalog, args):
    from ..bound import TConst
    name = args[0]
    if isinstance(name, TConst) and isinstance(name.value, str):
        declared = catalog.signal_type(name.value)
        if declared is not None:
            return declared
    return None


def register(lib: Library) -> None:
    src = dict(kind=SOURCE, volatile=True, topic="stream", null_propagating=True)
    lib.define("iota(Integer lo, Integer hi) -> Bag of Integer", scalar=iota, doc="The integers lo..hi (a bag)", **src)
    lib.define("siota(Integer lo, Integer hi) -> Stream of Integer", scalar=siota,
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
    lib.define("merge(Stream of T s...) -> Stream of T", scalar=merge, doc="Elements of several streams as they arrive",
               **tr)
    lib.define("pivot(Vector of Stream of T streams) -> Stream of Vector of T", scalar=pivot,
               doc="The latest element of each stream, on every arrival", **tr)
    lib.define("zscore(Stream of Number s, Integer n) -> Stream of Real", scalar=zscore,
               doc="Each element's z-score against the n elements before it", **tr)
    lib.define("drift(Stream of Number s, Number reference_mean, Number reference_std, Integer n) -> Stream of Real",
               scalar=drift, doc="Standard errors between each n-element mean and a reference mean", **tr)
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

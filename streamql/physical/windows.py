"""Windows over streams: the one implementation of count windows and of time windows.

`count_windows` is the state machine behind `winagg(s, size, stride)` everywhere: the library's
winagg stream and the plan's `Window` node (with or without fused aggregates) both run it. The
first window comes after `size` elements, then one every `stride` elements; a trailing partial
window is dropped; stride > size samples (the elements between windows are skipped). The
elements waiting for their window are accounted with `ctx.hold` as the query's state; `IDLE`
ticks pass through; a reading arriving alone takes the scalar path (no numpy per reading).

What a complete window gives is its *shape*: `WindowValues` makes the windows (a batch of them is
a reshaped or strided view of the batch, not a copy); `WindowAggregates` computes mean, sum, min,
max or rms per window straight from the batch (a reshape for tumbling windows, running sums for
sliding ones), so no window is made.

`time_windows` is `twinagg`: windows of a duration over timestamped values, aligned to multiples
of the stride and stamped with their end.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..batch import IDLE, Batch
from ..errors import QueryRuntimeError
from ..streams import approximate_bytes, iter_elements, to_column
from ..values import Timeval, make_vector
from .stateful import StatefulLogic, closed, opened, run_logic

FUSABLE = ("mean", "sum", "min", "max", "rms")   # what WindowAggregates computes


# ------------------------------------------------------------------------------ count windows
def count_windows(items, size: int, stride: int, shape, ctx=None):
    """Stream items of windows of `items`, as `shape` makes them. `ctx` (None inside stream
    functions that have none) accounts the waiting elements; a window that could not fit the
    statement's memory budget (8 bytes an element at least) is refused before anything waits."""
    if ctx is not None:
        ctx.allocate(8 * size, f"a window of {size} elements")
    return CountWindow(size, stride, shape, ctx).run(items, ctx)


class CountWindow(StatefulLogic):
    """The count-window state machine: the elements waiting for their window (`pending`, an
    ndarray, or a list after single readings) and how many coming elements to drop first
    (`skip`, when stride > size)."""

    kind = "count_window"

    def __init__(self, size: int, stride: int, shape, ctx=None):
        self.size, self.stride, self.shape = size, stride, shape
        self.pending = None
        self.skip = 0
        self.held = 0              # bytes of pending accounted in ctx
        self.hold = ctx.hold if ctx is not None else None

    def on_value(self, item):   # one reading: the scalar path (run() has it inline)
        return tuple(self.run([item], None, own=False))

    def run(self, items, ctx, own: bool = True):
        """`run_logic` for count windows, the scalar path inline: a query fed one reading at a
        time spends its time here (no call per reading, few lookups)."""
        key = opened(self, ctx) if own else None
        size, stride, shape, hold, on_batch = self.size, self.stride, self.shape, self.hold, self.on_batch
        skip, pending = self.skip, self.pending   # mirrors of the state, written back as they change
        try:
            for item in items:
                if type(item) is Batch:
                    yield from on_batch(item)
                    skip, pending = self.skip, self.pending
                    continue
                if item is IDLE:
                    yield item
                    continue
                if skip:
                    skip -= 1
                    self.skip = skip
                    continue
                if type(pending) is not list:   # None, or an array left by a batch
                    pending = self.pending = [] if pending is None else list(pending)
                pending.append(item)
                waiting = len(pending)
                if hold is not None and not waiting & 1023:   # every 1024 readings: cheap
                    previous = self.held
                    self.held = waiting * (16 + item.nbytes if isinstance(item, np.ndarray) else 16)
                    hold(self.held - previous)
                if waiting < size:
                    continue
                window = shape.one(pending[:size])
                if stride < size:
                    del pending[:stride]
                else:
                    skip = self.skip = stride - size
                    pending = self.pending = []
                yield window
        finally:
            if own:
                closed(self, ctx, key, items)

    def on_batch(self, item: Batch):
        shape, size, stride = self.shape, self.size, self.stride
        values, pending, head = shape.values(item), self.pending, None
        if (stride == size and type(pending) is np.ndarray and type(values) is np.ndarray and 0 < len(pending)
                and len(values) >= size and pending.ndim == values.ndim == 1 and pending.dtype == values.dtype):
            # tumbling: the window the waiting elements start is joined alone, so that the
            # batch's own windows are views of it rather than of a copy of it
            need = size - len(pending)
            head = np.concatenate([pending, values[:need]])
            values, pending = values[need:], None
        data = shape.join(pending, values)
        if self.skip:
            if self.skip >= len(data):
                self.skip -= len(data)
                self.pending = None
                return ()
            data = data[self.skip:]
            self.skip = 0
        if len(data) < size:
            self.pending = data
            out = () if head is None else shape.many(head, size, size, 1)
        else:
            count = (len(data) - size) // stride + 1
            out = shape.many(data, size, stride, count, head)
            self.pending, self.skip = window_rest(data, count, stride)
        if self.hold is not None:
            previous, self.held = self.held, approximate_bytes(self.pending) if self.pending is not None else 0
            self.hold(self.held - previous)
        return out

    def snapshot(self) -> dict:
        return {"pending": self.pending, "skip": self.skip}

    def restore(self, state: dict) -> None:
        pending = state["pending"]
        self.pending = list(pending) if isinstance(pending, tuple) else pending
        self.skip = int(state["skip"])
        if self.hold is not None and self.pending is not None:
            self.held = approximate_bytes(self.pending)
            self.hold(self.held)

    def close(self) -> None:
        if self.hold is not None:
            self.hold(-self.held)
            self.held = 0


def window_rest(data, count: int, stride: int) -> tuple:
    """After `count` windows every `stride` elements of `data`: (the elements the next window
    starts with, or None; how many coming elements to drop first, when stride > size)."""
    next_start = count * stride
    if next_start <= len(data):
        return data[next_start:], 0
    return None, next_start - len(data)


class WindowValues:
    """Windows as vectors: a batch of windows is one 2-D array (a view when it can be)."""

    @staticmethod
    def values(item: Batch):
        if item.times is not None:   # timestamped readings: windows of Timevals
            return list(iter_elements([item]))
        return item.values

    @staticmethod
    def join(pending, values):
        if pending is None or len(pending) == 0:
            return values
        if isinstance(values, np.ndarray) and values.dtype != object:
            head = pending if isinstance(pending, np.ndarray) else _as_array(pending, values)
            if head is not None and head.shape[1:] == values.shape[1:]:
                return np.concatenate([head, values])
        merged = list(pending.tolist() if isinstance(pending, np.ndarray) and pending.ndim == 1 else pending)
        merged.extend(values.tolist() if isinstance(values, np.ndarray) and values.ndim == 1 else list(values))
        return merged

    @staticmethod
    def many(data, size: int, stride: int, count: int, head=None) -> tuple:
        """`count` windows of `size` elements every `stride` elements, without copying when
        possible, after the window `head` (the one a batch completes) when there is one: as
        batches, kept apart (joining them would copy every window)."""
        if isinstance(data, np.ndarray) and data.dtype != object:
            if data.ndim == 1:
                if stride == size:
                    windows = Batch(data[:count * size].reshape(count, size))
                else:
                    windows = Batch(sliding_window_view(data, size)[::stride][:count])
            else:
                windows = Batch(np.stack([data[i * stride:i * stride + size] for i in range(count)]))
        else:
            windows = Batch([list(data[i * stride:i * stride + size]) for i in range(count)])
        return (windows,) if head is None else (Batch(head.reshape(1, size)), windows)

    @staticmethod
    def one(window: list):
        return make_vector(window)


WINDOW_VALUES = WindowValues()


def _as_array(items: list, like: np.ndarray):
    try:
        array = np.asarray(items, dtype=like.dtype if like.dtype.kind == "f" else None)
    except (TypeError, ValueError):
        return None
    return array if array.dtype != object else None


class WindowAggregates:
    """Per window, the values of several aggregates (FUSABLE): a batch gives a (windows ×
    aggregates) array, a single window a list. `variable` is named when a window holds
    something other than numbers."""

    def __init__(self, names: tuple[str, ...], variable: str | None = None):
        self.names = names
        self.variable = variable

    def values(self, item: Batch) -> np.ndarray:
        return self._numeric(item.values)

    def join(self, pending, values: np.ndarray) -> np.ndarray:
        if pending is None or not len(pending):
            return values
        return np.concatenate([self._numeric(pending), values])

    def many(self, data: np.ndarray, size: int, stride: int, count: int, head=None) -> tuple:
        """The aggregates of `count` windows (after those of the window `head` when there is
        one) as one batch of rows."""
        names = self.names
        if stride != size:   # sliding (a head comes only with tumbling windows)
            return (Batch(_reduce_sliding(data, size, stride, count, names)),)
        first = 0 if head is None else 1
        block = np.empty((first + count, len(names)))
        view = data[:count * size].reshape(count, size)
        for j, name in enumerate(names):
            if head is not None:
                _reduce_tumbling(head.reshape(1, size), name, block[:1, j])
            _reduce_tumbling(view, name, block[first:, j])
        return (Batch(block),)

    def one(self, window: list) -> list:
        return _reduce_one(self._numeric(window), self.names)

    def _numeric(self, values) -> np.ndarray:
        if isinstance(values, np.ndarray) and values.dtype.kind in "iuf" and values.ndim == 1:
            return values
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            array = None
        if array is None or array.ndim != 1:
            raise QueryRuntimeError(f"variable {self.variable or 'w'} must be a vector of numbers, but its window "
                                    f"holds {values[0]!r}" if len(values) else "a window of no numbers")
        return array


def _reduce_tumbling(view: np.ndarray, name: str, out: np.ndarray) -> None:
    """Each row's aggregate into `out`. The ufuncs' reduce directly, into `out`: ndarray.mean
    and .sum are Python wrappers around the same reduction (mean divides the sum by the count,
    as here) and cost a few µs and a temporary per call."""
    if name in ("mean", "sum"):   # integers summed as floats, as ndarray.mean does
        np.add.reduce(view, axis=1, dtype=None if view.dtype.kind == "f" else np.float64, out=out)
        if name == "mean":
            np.true_divide(out, view.shape[1], out=out)
    elif name == "min":
        np.minimum.reduce(view, axis=1, out=out)
    elif name == "max":
        np.maximum.reduce(view, axis=1, out=out)
    else:   # rms: a row-wise dot product squares and sums without a temporary the size of the data
        np.einsum("ij,ij->i", view, view, dtype=np.float64, out=out)
        np.sqrt(np.true_divide(out, view.shape[1], out=out), out=out)


SLIDING_BLOCK = 65536   # elements of a batch reduced at once: the running sums stay in cache


def _reduce_sliding(data: np.ndarray, size: int, stride: int, count: int, names) -> np.ndarray:
    """Each window's aggregates, a block of windows at a time (a batch of 2 MB reduced whole
    builds running sums that leave the cache, twice as slow)."""
    per = max(1, (SLIDING_BLOCK - size) // stride + 1)
    if count <= per:
        return _reduce_sliding_block(data, size, stride, count, names)
    out = np.empty((count, len(names)))
    for first in range(0, count, per):
        k = min(per, count - first)
        start = first * stride
        out[first:first + k] = _reduce_sliding_block(data[start:start + (k - 1) * stride + size], size, stride, k,
                                                     names)
    return out


def _reduce_sliding_block(data: np.ndarray, size: int, stride: int, count: int, names) -> np.ndarray:
    starts = np.arange(count) * stride
    out = np.empty((count, len(names)))
    sums = squares = view = None
    for j, name in enumerate(names):
        if name in ("mean", "sum"):
            if sums is None:
                running = np.concatenate(([0.0], np.cumsum(data, dtype=np.float64)))
                sums = running[starts + size] - running[starts]
            out[:, j] = sums / size if name != "sum" else sums
        elif name == "rms":
            if squares is None:
                running = np.concatenate(([0.0], np.cumsum(np.square(data, dtype=np.float64))))
                squares = running[starts + size] - running[starts]
            out[:, j] = np.sqrt(np.maximum(squares, 0.0) / size)
        else:
            if view is None:
                view = sliding_window_view(data, size)[::stride][:count]
            out[:, j] = view.min(axis=1) if name == "min" else view.max(axis=1)
    return out


def _reduce_one(window: np.ndarray, names) -> list:
    out = []
    for name in names:
        if name == "mean":
            out.append(float(window.mean()))
        elif name == "sum":
            out.append(window.sum().item())
        elif name == "min":
            out.append(window.min().item())
        elif name == "max":
            out.append(window.max().item())
        else:
            out.append(math.sqrt(float(np.dot(window, window)) / len(window)))
    return out


# ------------------------------------------------------------------------------- time windows
def time_windows(items, size: float, stride: float, ctx):
    """Time windows over timestamped items (`TimeWindow`), as stream items."""
    return run_logic(items, TimeWindow(size, stride, ctx), ctx)


class TimeWindow(StatefulLogic):
    """Windows [end - size, end) with ends at multiples of `stride`, each emitted (stamped with
    its end) once an event at or after its end arrives, or once the time passes: at an idle
    tick of a live source (`on_timer`) every window ending before `now - lag` closes, `lag`
    being the longest a reading has taken so far from its time stamp to its arrival here (a
    frozen clock or a source stamped ahead of it closes nothing the watermark does not; a replay
    at its recorded pace has a constant lag and closes windows as its recorded time passes).
    Empty windows are skipped; events for windows already closed are dropped and counted; what
    is left is flushed at the end of the stream. State: the events waiting for their windows
    (sorted by time), the watermark (the largest event time seen), the end of the last window
    closed and the lag."""

    kind = "time_window"

    def __init__(self, size: float, stride: float, ctx):
        self.size, self.stride, self.ctx = size, stride, ctx
        self.times = np.empty(0)
        self.values: Any = np.empty(0)
        self.watermark = -math.inf
        self.emitted_end = -math.inf
        self.lag: float | None = None   # the longest from an event's time stamp to its arrival
        self.slack = 0.0           # after a restore, until an event comes: the downtime (below)
        self.held = 0              # bytes of events waiting for their windows, accounted in ctx

    def on_value(self, item):
        size, stride, ctx = self.size, self.stride, self.ctx
        new_times, new_values = _stamped(item, ctx)
        last_end = np.floor((new_times + size) / stride) * stride
        in_some_window = last_end > new_times
        # late: every window holding the event closed before it came (the watermark, the
        # largest time seen before it, had reached their ends), even windows left empty
        seen_before = np.maximum.accumulate(np.concatenate([[self.watermark], new_times[:-1]]))
        late = in_some_window & (last_end <= np.maximum(seen_before, self.emitted_end))
        if late.any():
            ctx.count("late_events", int(late.sum()))
        keep = in_some_window & ~late
        if not keep.all():
            new_times, new_values = new_times[keep], _take(new_values, keep)
        if len(new_times) == 0:
            return ()
        lag = ctx.clock.now() - float(new_times.min())
        if self.lag is None or lag > self.lag:
            self.lag = lag
        self.slack = 0.0
        times, values = _merge_sorted(self.times, self.values, new_times, new_values)
        self.watermark = watermark = max(self.watermark, float(new_times.max()))
        self.times, self.values, emitted_end, ends, windows = _windows_up_to(times, values, self.emitted_end,
                                                                             watermark, size, stride, flush=False)
        # every window ending at or before the watermark is closed now, emitted or empty
        self.emitted_end = max(emitted_end, math.floor(watermark / stride) * stride)
        self._account()
        return (_timeval_batch(ends, windows),) if ends else ()

    def on_timer(self):
        """Time passed without events: close the windows no event still to come can reach."""
        if self.lag is None or not len(self.times):
            return ()
        limit = self.ctx.clock.now() - self.lag - self.slack
        if limit < _next_end(float(self.times[0]), self.stride, self.emitted_end):
            return ()
        self.times, self.values, emitted_end, ends, windows = _windows_up_to(
            self.times, self.values, self.emitted_end, limit, self.size, self.stride, flush=False)
        self.emitted_end = max(emitted_end, math.floor(limit / self.stride) * self.stride)
        self._account()
        return (_timeval_batch(ends, windows),) if ends else ()

    def on_end(self):
        if not len(self.times):
            return ()
        self.times, self.values, self.emitted_end, ends, windows = _windows_up_to(
            self.times, self.values, self.emitted_end, math.inf, self.size, self.stride, flush=True)
        self._account()
        return (_timeval_batch(ends, windows),) if ends else ()

    def _account(self) -> None:
        previous, self.held = self.held, self.times.nbytes + approximate_bytes(self.values)
        self.ctx.hold(self.held - previous)

    def snapshot(self) -> dict:
        return {"times": self.times, "values": self.values, "watermark": self.watermark,
                "emitted_end": self.emitted_end, "lag": self.lag, "at": self.ctx.clock.now()}

    def restore(self, state: dict) -> None:
        self.times = np.asarray(state["times"], dtype=np.float64)
        values = state["values"]
        self.values = list(values) if isinstance(values, tuple) else values
        self.watermark, self.emitted_end = float(state["watermark"]), float(state["emitted_end"])
        self.lag = None if state.get("lag") is None else float(state["lag"])
        # a source may restart with its time stamps further behind the clock by the downtime (a
        # replay of recorded times starts again where it was): until its first event shows the
        # delay now, the timer allows for the downtime too
        self.slack = max(0.0, self.ctx.clock.now() - float(state["at"])) if state.get("at") is not None else 0.0
        self._account()

    def close(self) -> None:
        self.ctx.hold(-self.held)
        self.held = 0


def _stamped(item, ctx) -> tuple[np.ndarray, Any]:
    """An item's event times and values."""
    if type(item) is Batch and item.times is None and _all_timevals(item.values):
        # a batch of ts(t, v) values (vstream of a vector of them): their own times
        return (np.array([tv.time.seconds for tv in item.values], dtype=np.float64),
                to_column([tv.value for tv in item.values]))
    if type(item) is Batch:
        times = item.times if item.times is not None else np.full(len(item.values), ctx.clock.now())
        return np.asarray(times, dtype=np.float64), item.values
    if isinstance(item, Timeval):
        return np.array([item.time.seconds]), _one(item.value)
    raise QueryRuntimeError("twinagg needs timestamped values: use ts_signal_stream or ts(t, v)")


def _windows_up_to(times, values, emitted_end, limit, size, stride, flush):
    """Emit windows with end <= limit (or, flushing, every window holding a pending event)."""
    out_ends, out_values = [], []
    end = _next_end(times[0], stride, emitted_end)
    while len(times) and (end <= limit if not flush else end - size <= times[-1]):
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
    vectors = [w if isinstance(w, np.ndarray) else make_vector(list(w)) for w in windows]
    return Batch(vectors, np.asarray(ends, dtype=np.float64))

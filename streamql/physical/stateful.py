"""Operators as small stateful objects, and the one loop that runs them.

As bytewax's `StatefulBatchLogic`: the plan (or the library call) holds an operator's
configuration; each pass of a stream builds a fresh `StatefulLogic` from it, whose runtime state
lives in plain attributes, with one hook per kind of input:

- `on_batch(batch)` and `on_value(value)`: the output items of one input item;
- `on_timer()`: an `IDLE` tick from a live source (time passing without readings);
- `on_end()`: the input is exhausted (a time window flushes, an aggregate answers);
- `snapshot()` / `restore(state)`: the state as a plain value the codec encodes (lists, numbers,
  numpy arrays; never pickle), and back.

`run_logic` is the loop (count windows have their own, the same with the scalar path inline): it
feeds items to the hooks, passes `IDLE` on, stops early when the logic is `finished` (first_n,
limit) and closes the input. When the query runs with a
`QueryState` (streamql.checkpoint), each logic with a `kind` registers there as it opens, so the
query's state can be checkpointed at a cut and restored; a logic with no `kind` holds no state.
Every state-holding logic is a subclass here or in windows.py; tests/core/test_core_checkpoint.py
finds them all and fails for one without a stop-and-restore property test.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..batch import IDLE, Batch
from ..errors import QueryRuntimeError
from ..streams import close_items, iter_elements
from ..values import Timeval, brief_value, hashable, values_equal
from .chunk import Chunk, column_values, concat_chunks

__all__ = ["StatefulLogic", "run_logic", "opened", "closed", "positioned", "floats", "Map", "Skip", "FirstN",
           "Changed", "Deadband", "SampleEvery", "ZScore", "Limit", "Collect", "Distinct", "SourcePosition"]


class StatefulLogic:
    """One operator's runtime state for one pass of its input (module docstring)."""

    kind: str | None = None     # key prefix in a QueryState; None: holds no state
    stops = False               # whether it may finish before its input ends (then it sets `finished`)
    finished = False            # set when no more output can come (the input is closed early)

    def on_batch(self, item: Batch) -> Iterable:
        return self.on_value(item)

    def on_value(self, item: Any) -> Iterable:
        raise NotImplementedError

    def on_timer(self) -> Iterable:
        return ()

    def on_end(self) -> Iterable:
        return ()

    def snapshot(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        pass

    def close(self) -> None:
        """Release what the state holds (accounted memory)."""


def run_logic(items, logic: StatefulLogic, ctx=None):
    """The output items of `logic` over the stream items `items` (module docstring)."""
    key = opened(logic, ctx)
    on_batch, on_value = logic.on_batch, logic.on_value
    stops = logic.stops
    try:
        if logic.finished:   # first_n(s, 0), limit 0: nothing is read
            return
        for item in items:
            if type(item) is Batch:
                out = on_batch(item)
            elif item is IDLE:
                yield from logic.on_timer()
                if stops and logic.finished:   # timeout: its time passed while the source was quiet
                    return
                yield item
                continue
            else:
                out = on_value(item)   # a single reading: the scalar path, most often nothing out
            if out:
                yield from out
            if stops and logic.finished:
                return
        yield from logic.on_end()
    finally:
        closed(logic, ctx, key, items)


def opened(logic: StatefulLogic, ctx) -> str | None:
    """Register `logic` in the query's QueryState, when it keeps one (its key, or None)."""
    states = getattr(ctx, "states", None) if logic.kind is not None else None
    return states.register(logic.kind, logic) if states is not None else None


def closed(logic: StatefulLogic, ctx, key: str | None, items) -> None:
    """The end of a pass: the logic leaves the QueryState, releases its state, closes its input."""
    if key is not None:
        ctx.states.unregister(key)
    logic.close()
    close_items(items)


# ------------------------------------------------------------------------------- sources
class SourcePosition(StatefulLogic):
    """The position of a query in a source: how many readings it has read. A source whose
    readings have positions (`base`: the position of the first reading it gives now, as an
    array signal's 0, or an edge's CSV replay started where a checkpoint left off) is skipped
    to it when restored; a live sensor (`base` None) cannot go back, and goes on from now.

    A flow's readings are numbered by its checkpointed publisher (`LiveSignal.declare_sequence`),
    which may declare its numbering after the subscriber opened: such a source gives `sequence`,
    asked at the first reading, and the numbering's `epoch`; a restored position of another epoch
    (the publisher started afresh) skips nothing."""

    kind = "source"

    def __init__(self, name: str, base: int | None, sequence: Callable[[], tuple] | None = None):
        self.name = name
        self.base = base
        self.sequence = sequence
        self.epoch: str | None = None
        self.readings = 0 if base is None else base
        self.skip = 0
        self.restored: dict | None = None

    def snapshot(self) -> dict:
        state = {"signal": self.name, "readings": self.readings}
        if self.epoch is not None:
            state["epoch"] = self.epoch
        return state

    def restore(self, state: dict) -> None:
        self.readings = int(state["readings"])
        self.restored = state
        if self.sequence is None:
            self.skip = max(0, self.readings - self.base) if self.base is not None else 0

    def first_reading(self) -> None:
        """A source numbered by `sequence`: where its first reading is, now that one came."""
        base, self.epoch = self.sequence()
        self.sequence = None
        if base is None:
            return
        self.base = base
        if self.restored is not None and self.restored.get("epoch") == self.epoch:
            self.skip = max(0, self.readings - base)
            self.readings = max(self.readings, base)
        else:
            self.readings = base


def positioned(items, ctx, name: str, base: int | None = None):
    """`items`, a source's stream items, counted as a `SourcePosition`, with a cut (a point where
    a checkpoint may be taken) before each read; `items` itself when the query keeps no state."""
    states = getattr(ctx, "states", None)
    if states is None:
        return items
    return _positioned(items, states, SourcePosition(name, base, getattr(items, "sequence", None)))


def _positioned(items, states, position: SourcePosition):
    key = states.register(position.kind, position)
    cut = states.cut
    try:
        while True:
            cut()
            item = next(items, _END)
            if item is _END:
                return
            if item is IDLE:
                yield item
                continue
            if position.sequence is not None:
                position.first_reading()
            n = len(item) if type(item) is Batch else 1
            if position.skip:
                if n <= position.skip:
                    position.skip -= n
                    continue
                item, n, position.skip = item.slice(position.skip), n - position.skip, 0
            position.readings += n
            yield item
    finally:
        states.unregister(key)
        close_items(items)


_END = object()


# ------------------------------------------------------------------------------- transforms
class Map(StatefulLogic):
    """A stateless transform: `batch(item)` and `value(item)` give the output items."""

    def __init__(self, batch: Callable[[Batch], Iterable], value: Callable[[Any], Iterable]):
        self.on_batch, self.on_value = batch, value


class Skip(StatefulLogic):
    kind = "skip"

    def __init__(self, n: int):
        self.remaining = n

    def on_batch(self, item: Batch):
        remaining = self.remaining
        if remaining == 0:
            return (item,)
        if len(item) > remaining:
            self.remaining = 0
            return (item.slice(remaining),)
        self.remaining = remaining - len(item)
        return ()

    def on_value(self, item):
        if self.remaining == 0:
            return (item,)
        self.remaining -= 1
        return ()

    def snapshot(self) -> dict:
        return {"remaining": self.remaining}

    def restore(self, state: dict) -> None:
        self.remaining = int(state["remaining"])


class FirstN(StatefulLogic):
    """The first n elements; the input is closed once they are out."""

    kind = "first_n"
    stops = True

    def __init__(self, n: int):
        self.remaining = n
        self.finished = n <= 0

    def on_batch(self, item: Batch):
        if len(item) >= self.remaining:
            out = item.slice(0, self.remaining)
            self.remaining, self.finished = 0, True
            return (out,)
        self.remaining -= len(item)
        return (item,)

    def on_value(self, item):
        self.remaining -= 1
        self.finished = self.remaining <= 0
        return (item,)

    def snapshot(self) -> dict:
        return {"remaining": self.remaining}

    def restore(self, state: dict) -> None:
        self.remaining = int(state["remaining"])
        self.finished = self.remaining <= 0


class Changed(StatefulLogic):
    """Drop elements equal to the one just before them."""

    kind = "changed"

    def __init__(self):
        self.has_last = False
        self.last = None

    def on_batch(self, item: Batch):
        values = item.values
        if not (isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype != object
                and item.times is None):
            return self.on_value(item)
        if len(values) == 0:
            return ()
        keep = np.empty(len(values), dtype=bool)
        keep[0] = not self.has_last or not values_equal(values[0].item(), self.last)
        keep[1:] = values[1:] != values[:-1]
        self.has_last, self.last = True, values[-1].item()
        return (item.take(keep),) if keep.any() else ()

    def on_value(self, item):
        out = []
        for element in iter_elements([item]):
            compared = element.value if isinstance(element, Timeval) else element
            if not self.has_last or not values_equal(compared, self.last):
                out.append(element)
            self.has_last, self.last = True, compared
        return out

    def snapshot(self) -> dict:
        return {"has_last": self.has_last, "last": self.last}

    def restore(self, state: dict) -> None:
        self.has_last, self.last = bool(state["has_last"]), state["last"]


class Deadband(StatefulLogic):
    """Elements differing from the last emitted one by more than eps (the first always)."""

    kind = "deadband"

    def __init__(self, eps: float):
        self.eps = eps
        self.last = None

    def on_batch(self, item: Batch):
        values = item.values
        if not (isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype != object):
            return self.on_value(item)
        eps = self.eps
        keep = np.zeros(len(values), dtype=bool)
        current = self.last
        for i, v in enumerate(values.tolist()):
            if current is None or abs(v - current) > eps:
                keep[i] = True
                current = v
        self.last = current
        return (item.take(keep),) if keep.any() else ()

    def on_value(self, item):
        out = []
        for element in iter_elements([item]):
            v = element.value if isinstance(element, Timeval) else element
            if v is None:
                continue
            floats(v, "deadband", 0)
            if self.last is None or abs(v - self.last) > self.eps:
                self.last = v
                out.append(element)
        return out

    def snapshot(self) -> dict:
        return {"last": self.last}

    def restore(self, state: dict) -> None:
        self.last = state["last"]


class SampleEvery(StatefulLogic):
    """The 1st, n+1st, 2n+1st, … elements."""

    kind = "sample_every"

    def __init__(self, n: int):
        self.n = n
        self.position = 0   # index of the next element

    def on_batch(self, item: Batch):
        count = len(item)
        keep = np.arange(self.position, self.position + count) % self.n == 0
        self.position += count
        return (item.take(keep),) if keep.any() else ()

    def on_value(self, item):
        self.position += 1
        return (item,) if (self.position - 1) % self.n == 0 else ()

    def snapshot(self) -> dict:
        return {"position": self.position}

    def restore(self, state: dict) -> None:
        self.position = int(state["position"])


ZSCORE_WORK = 1 << 22   # elements of windows reduced between two checks of the statement


class ZScore(StatefulLogic):
    """The z-score of each element against the n elements before it; a batch's windows are
    reduced ZSCORE_WORK elements at a time, the statement checked between."""

    kind = "zscore"

    def __init__(self, n: int, ctx):
        self.n = n
        self.ctx = ctx
        self.history = np.empty(0)

    def _scores(self, values: np.ndarray):
        n = self.n
        data = np.concatenate([self.history, values])
        self.history = data[-n:]
        if len(data) <= n:
            return None
        windows = sliding_window_view(data, n)[:-1]
        step = max(1, ZSCORE_WORK // n)
        mean = np.empty(len(windows))
        std = np.empty(len(windows))
        for first in range(0, len(windows), step):
            self.ctx.check()
            part = windows[first:first + step]
            mean[first:first + step] = part.mean(axis=1)
            std[first:first + step] = part.std(axis=1, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (data[n:] - mean) / std
        return z[-len(values):] if len(z) > len(values) else z

    def on_batch(self, item: Batch):
        z = self._scores(floats(item.values, "zscore"))
        return () if z is None else (Batch(z),)

    def on_value(self, item):
        z = self._scores(floats([item], "zscore"))
        return () if z is None else (float(z[-1]),)

    def snapshot(self) -> dict:
        return {"history": self.history}

    def restore(self, state: dict) -> None:
        self.history = np.asarray(state["history"], dtype=np.float64)


# ------------------------------------------------------------------------------ plan stages
class Limit(StatefulLogic):
    """A query's `limit n` over rows (chunks and single rows)."""

    kind = "limit"
    stops = True

    def __init__(self, count: int):
        self.remaining = count
        self.finished = count <= 0

    def on_value(self, item):
        if type(item) is dict:
            self.remaining -= 1
            out = item
        elif item.n >= self.remaining:
            out = item.take(np.arange(self.remaining)) if item.n > self.remaining else item
            self.remaining = 0
        else:
            self.remaining -= item.n
            out = item
        self.finished = self.remaining <= 0
        return (out,)

    def snapshot(self) -> dict:
        return {"remaining": self.remaining}

    def restore(self, state: dict) -> None:
        self.remaining = int(state["remaining"])
        self.finished = self.remaining <= 0


class Collect(StatefulLogic):
    """A blocking operator's input (group by, order by), held until the end, then `finish(chunks)`
    gives the output. What it holds is accounted as the query's state."""

    kind = "collect"

    def __init__(self, ctx, finish: Callable[[list], Iterable], as_chunk: Callable[[dict], Chunk],
                 size: Callable[[Any], int]):
        self.ctx = ctx
        self.finish = finish
        self.as_chunk = as_chunk
        self.size = size
        self.chunks: list = []
        self.held = 0

    def on_value(self, item):
        self.ctx.check()  # blocking: notice cancellation and limits while collecting
        chunk = item if type(item) is not dict else self.as_chunk(item)
        self._hold(chunk)
        return ()

    def on_timer(self):
        self.ctx.check()
        return ()

    def on_end(self):
        chunks, self.chunks = self.chunks, []
        try:
            yield from self.finish(chunks)
        finally:
            self.close()

    def _hold(self, chunk) -> None:
        size = self.size(chunk)
        self.held += size
        self.ctx.hold(size)
        self.chunks.append(chunk)

    def snapshot(self) -> dict:
        if not self.chunks:
            return {"n": 0, "columns": {}}
        whole = concat_chunks(self.chunks) if len(self.chunks) > 1 else self.chunks[0]
        self.chunks = [whole]
        return {"n": whole.n, "columns": dict(whole)}

    def restore(self, state: dict) -> None:
        if state["n"]:
            self._hold(Chunk(dict(state["columns"]), int(state["n"])))

    def close(self) -> None:
        self.ctx.hold(-self.held)
        self.held = 0


class Distinct(StatefulLogic):
    """`select distinct`: rows whose key (the selected columns) was not seen before."""

    kind = "distinct"

    def __init__(self, columns, key_bytes: int, ctx):
        self.columns = columns
        self.key_bytes = key_bytes
        self.ctx = ctx
        self.seen: set = set()

    def on_value(self, item):
        seen, columns = self.seen, self.columns
        if type(item) is dict:
            key = tuple(hashable(item[c]) for c in columns)
            if key in seen:
                return ()
            seen.add(key)
            self.ctx.hold(self.key_bytes)
            return (item,)
        values = [column_values(item[c]) for c in columns]
        keep = []
        for i, row in enumerate(zip(*values)):
            key = tuple(hashable(v) for v in row)
            if key not in seen:
                seen.add(key)
                keep.append(i)
        if not keep:
            return ()
        self.ctx.hold(self.key_bytes * len(keep))
        return (item.take(np.array(keep, dtype=np.intp)),)

    def snapshot(self) -> dict:
        return {"seen": list(self.seen)}

    def restore(self, state: dict) -> None:
        self.seen = {tuple(key) for key in state["seen"]}
        self.ctx.hold(self.key_bytes * len(self.seen))

    def close(self) -> None:
        self.ctx.hold(-self.key_bytes * len(self.seen))
        self.seen = set()


# ------------------------------------------------------------------------------- helpers
def floats(values, name: str, depth: int = 1) -> np.ndarray:
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

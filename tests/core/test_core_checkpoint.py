"""Stopped and restored is the same as never stopped: every stateful operator, alone and in
queries (fused and unfused plans), for random streams cut at random points.

Two levels, one property. *Operators*: each `StatefulLogic` subclass that holds state (found in
the code: `stateful_classes()`) is fed random items; at a random item boundary its snapshot is
encoded with the codec, a fresh operator restored from the decoded bytes takes the rest, and the
two runs' outputs together equal one uninterrupted run. *Queries*: a query over a replayable
signal is stopped at a random cut (a source about to read) as a crash would stop it; a second
run restored from the snapshot (sources skip what was read) finishes it, and the rows of the two
equal the rows of one run. `test_every_stateful_operator_has_a_property_test` fails for an
operator class with no case here, so a new operator cannot go unchecked.
"""
from __future__ import annotations

import importlib
import math
import pkgutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamql
from streamql.batch import Batch
from streamql.checkpoint import Checkpointing, QueryState, decode, encode
from streamql.physical import flows, merging, running, stateful, windows
from streamql.physical.chunk import Chunk, column_values
from streamql.physical.stateful import StatefulLogic, run_logic
from streamql.signals import LiveSignal, Signal
from streamql.streams import ExecContext, iter_elements
from streamql.values import Time, Timeval

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _Crash(BaseException):
    """Stops a run where a kill would: nothing in the engine catches it."""


# ------------------------------------------------------------------------------ helpers
def stateful_classes() -> set[type]:
    """Every operator class in streamql that holds state (a `kind`), found by importing it all."""
    for module in pkgutil.walk_packages(streamql.__path__, "streamql."):
        if ".shell" in module.name or module.name.endswith(("__main__", "cli", "demo")):
            continue
        importlib.import_module(module.name)
    found, todo = set(), [StatefulLogic]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            todo.append(sub)
            if sub.kind is not None and sub.__module__.startswith("streamql."):
                found.add(sub)
    return found


def chunked(values: list, sizes: list[int], times: list | None = None) -> list:
    """Stream items of `values`: a Batch per size, a single value (or (t, v)) for size 1."""
    items, i, k = [], 0, 0
    while i < len(values):
        size = max(1, sizes[k % len(sizes)]) if sizes else len(values)
        k += 1
        part = values[i:i + size]
        if times is None:
            items.append(Batch(np.asarray(part, dtype=np.float64)) if size > 1 else part[0])
        elif size > 1:
            items.append(Batch(np.asarray(part, dtype=np.float64), np.asarray(times[i:i + size])))
        else:
            items.append(Timeval(Time(times[i]), part[0]))
        i += size
    return items


def plain(value):
    """Output elements compared exactly: arrays as lists, Timevals as (time, value)."""
    if isinstance(value, Timeval):
        return ("tv", value.time.seconds, plain(value.value))
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()] if value.dtype == object else value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def elements(items) -> list:
    out = []
    for item in items:
        if isinstance(item, Chunk):
            out.extend(plain(list(row)) for row in zip(*(column_values(item[c]) for c in sorted(item))))
        elif type(item) is dict:
            out.append(plain([item[c] for c in sorted(item)]))
        elif type(item) is Batch and item.times is not None:
            out.extend(plain(e) for e in iter_elements([item]))
        elif type(item) is Batch:
            values = item.values
            out.extend(plain(v) for v in (values if not isinstance(values, np.ndarray) or values.ndim > 1
                                          else values.tolist()))
        else:
            out.append(plain(item))
    return out


def stop_and_restore(make, items: list, cut: int) -> tuple[list, list, list]:
    """(uninterrupted output, output before the cut, output of the restored run after it)."""
    whole = elements(run_logic(iter(items), make(ExecContext(None)), ExecContext(None)))

    ctx = ExecContext(None)
    ctx.states = QueryState()
    saved = {}

    def source():   # a cut before each read, the read that finds the end included
        for i in range(len(items) + 1):
            if i == cut:
                saved["bytes"] = encode(ctx.states.snapshot())
                raise _Crash
            if i < len(items):
                yield items[i]

    before = []
    try:
        for out in run_logic(source(), make(ctx), ctx):
            before.extend(elements([out]))
    except _Crash:
        pass
    if "bytes" not in saved:   # the operator finished before the cut (first_n, limit)
        return whole, before, []
    ctx2 = ExecContext(None)
    ctx2.states = QueryState(restore=decode(saved["bytes"]))
    logic = make(ctx2)
    after = elements(run_logic(iter(items[cut:]), logic, ctx2))
    assert ctx2.states.restored_keys == [f"{logic.kind}#0"], "the operator did not get its state back"
    return whole, before, after


# ------------------------------------------------------------------------------ operator cases
numbers = st.lists(st.floats(-100, 100, allow_nan=False).map(lambda x: round(x, 1)), min_size=0, max_size=80)
repeats = st.lists(st.sampled_from([0.0, 1.0, 2.0, 2.5]), min_size=0, max_size=80)
sizes = st.lists(st.integers(1, 9), min_size=1, max_size=6)


def _rows(values, size_list):
    """Row items (single rows and chunks) for the plan stages (limit, collect)."""
    items, i, k = [], 0, 0
    while i < len(values):
        size = sizes_at(size_list, k)
        k += 1
        part = values[i:i + size]
        items.append({"$c0": part[0]} if size == 1 else Chunk({"$c0": np.asarray(part)}, len(part)))
        i += size
    return items


def sizes_at(size_list, k):
    return max(1, size_list[k % len(size_list)])


def _collect(ctx):
    def finish(chunks):
        values = [v for c in chunks for v in column_values(c["$c0"])]
        yield Chunk({"$c0": np.asarray([len(values), float(sum(values))])}, 2)
    return stateful.Collect(ctx, finish, lambda row: Chunk({k: [v] for k, v in row.items()}, 1),
                            lambda c: 16 * c.n)


CASES = {
    stateful.Skip: (lambda ctx: stateful.Skip(7), numbers, None),
    stateful.FirstN: (lambda ctx: stateful.FirstN(9), numbers, None),
    stateful.Changed: (lambda ctx: stateful.Changed(), repeats, None),
    stateful.Deadband: (lambda ctx: stateful.Deadband(3.0), numbers, None),
    stateful.SampleEvery: (lambda ctx: stateful.SampleEvery(3), numbers, None),
    stateful.ZScore: (lambda ctx: stateful.ZScore(4, ctx), numbers, None),
    stateful.Limit: (lambda ctx: stateful.Limit(11), numbers, "rows"),
    stateful.Collect: (_collect, numbers, "rows"),
    stateful.Distinct: (lambda ctx: stateful.Distinct(("$c0",), 100, ctx), repeats, "rows"),
    stateful.SourcePosition: None,   # a source's position: the query cases below restore it
    windows.CountWindow: (lambda ctx: windows.CountWindow(5, 3, windows.WINDOW_VALUES, ctx), numbers, None),
    windows.TimeWindow: (lambda ctx: windows.TimeWindow(2.0, 1.0, ctx), numbers, "timed"),
    # fed (input index, element) pairs as their Feeder gives them; the threads: QUERIES below
    merging.Merge: (lambda ctx: merging.Merge([None, None]), numbers, "indexed"),
    merging.Pivot: (lambda ctx: merging.Pivot([None, None, None]), numbers, "indexed"),
    flows.Publish: (lambda ctx: flows.Publish(LiveSignal("f")), numbers, None),
    running.RunningMax: (lambda ctx: running.RunningMax(), numbers, None),
    # its time passing (a clock moved by the test): tests/core/test_core_timers.py
    running.Timeout: (lambda ctx: running.Timeout(3600.0, ctx.clock), numbers, None),
}
FUSED_CASES = {   # the fused window (aggregates computed from the batch) beside the plain one
    "tumbling": lambda ctx: windows.CountWindow(4, 4, windows.WindowAggregates(("mean", "max", "rms")), ctx),
    "sliding": lambda ctx: windows.CountWindow(6, 2, windows.WindowAggregates(("sum", "min")), ctx),
    "sampling": lambda ctx: windows.CountWindow(3, 5, windows.WindowAggregates(("mean",)), ctx),
}


@pytest.mark.parametrize("cls", [c for c, case in CASES.items() if case is not None], ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_an_operator_stopped_and_restored_gives_the_uninterrupted_output(cls, data):
    make, values_strategy, shape = CASES[cls]
    values = data.draw(values_strategy)
    size_list = data.draw(sizes)
    if shape == "rows":
        items = _rows(values, size_list)
    elif shape == "indexed":   # elements (single or batches) of two or three inputs, interleaved
        items = [(data.draw(st.integers(0, 1 if cls is merging.Merge else 2)), item)
                 for item in chunked(values, size_list)]
    elif shape == "timed":   # out of order by up to 2 s: late events are dropped the same way
        times = [i * 0.5 + data.draw(st.sampled_from([0.0, 0.0, 0.25, -1.5, -2.0])) for i in range(len(values))]
        items = chunked(values, size_list, times)
    else:
        items = chunked(values, size_list)
    assert isinstance(make(ExecContext(None)), cls)
    cut = data.draw(st.integers(0, len(items)))
    whole, before, after = stop_and_restore(make, items, cut)
    assert before + after == whole


@pytest.mark.parametrize("name", sorted(FUSED_CASES))
@SETTINGS
@given(values=numbers, size_list=sizes, data=st.data())
def test_a_fused_window_stopped_and_restored_gives_the_uninterrupted_output(name, values, size_list, data):
    items = chunked(values, size_list)
    cut = data.draw(st.integers(0, len(items)))
    whole, before, after = stop_and_restore(FUSED_CASES[name], items, cut)
    assert before + after == whole


# ------------------------------------------------------------------------------ query cases
class ReplaySignal(Signal):
    """A recorded signal replayed in uneven parts (a batch per size, a single reading for 1)."""

    position_base = 0

    def __init__(self, name, values, size_list, times=None):
        super().__init__(name, "Real")
        self.values, self.size_list, self.times = values, size_list, times
        self.timestamped = times is not None

    def open(self, clock=None):
        i, k = 0, 0
        while i < len(self.values):
            size = sizes_at(self.size_list, k)
            k += 1
            part = self.values[i:i + size]
            if self.times is None:
                yield Batch(np.asarray(part, dtype=np.float64)) if size > 1 else part[0]
            elif size > 1:
                yield Batch(np.asarray(part, dtype=np.float64), np.asarray(self.times[i:i + size]))
            else:
                yield (self.times[i], part[0])
            i += size

    def latest(self):
        return self.values[-1] if self.values else None


W = "from Vector of Real w where w in winagg(signal_stream('s'), {}, {})"
QUERIES = {   # name: (query, the operator kinds it restores)
    "window": ("select stream of w " + W.format(5, 3) + ";", {"count_window", "source"}),
    "window aggregates": ("select stream of mean(w), max(w) - min(w) " + W.format(6, 2) + ";",
                          {"count_window", "source"}),
    "window sampling": ("select stream of sum(w) " + W.format(3, 5) + ";", {"count_window", "source"}),
    "tumbling filtered": ("select stream of mean(w) " + W.format(4, 4) + " and mean(w) > 0;",
                          {"count_window", "source"}),
    "time window": ("select stream of w from Timeval of Vector of Real w "
                    "where w in twinagg(ts_signal_stream('s'), 2.0, 1.0);", {"time_window", "source"}),
    "skip": ("select stream of x from Real x where x in skip(signal_stream('s'), 7);", {"skip"}),
    "first_n": ("select stream of x from Real x where x in first_n(signal_stream('s'), 13);", {"first_n"}),
    "changed": ("select stream of x from Real x where x in changed(signal_stream('s'));", {"changed"}),
    "deadband": ("select stream of x from Real x where x in deadband(signal_stream('s'), 20);", {"deadband"}),
    "sample_every": ("select stream of x from Real x where x in sample_every(signal_stream('s'), 3);",
                     {"sample_every"}),
    "zscore": ("select stream of z from Real z where z in zscore(signal_stream('s'), 4);", {"zscore"}),
    "drift": ("select stream of d from Real d where d in drift(signal_stream('s'), 0, 10, 4);", {"count_window"}),
    "distinct": ("select distinct x from Real x where x in signal_stream('s');", {"distinct"}),
    "limit": ("select stream of x from Real x where x in signal_stream('s') limit 9;", {"limit"}),
    "publish": ("select stream of x from Real x where x in publish(signal_stream('s'), 'f');",
                {"publish", "source"}),
    "rmax": ("select stream of x from Real x where x in rmax(signal_stream('s'));", {"rmax", "source"}),
    "timeout": ("select stream of x from Real x where x in timeout(signal_stream('s'), 3600);",
                {"timeout", "source"}),
    "merge": ("select stream of x from Real x where x in merge(skip(signal_stream('s'), 3), "
              "deadband(signal_stream('s'), 20));", {"merge", "skip", "deadband", "source"}),
    "composed": ("select stream of mean(w) from Vector of Real w "
                 "where w in winagg(deadband(skip(signal_stream('s'), 2), 5), 4, 2) limit 6;",
                 {"count_window", "deadband", "skip", "limit"}),
}
EXEMPT_FROM_QUERIES = {
    "pivot": "its rows depend on how its input threads interleave, run to run; its state is the merge's "
             "(restored by the merge case, threads included) plus the latest element of each input (its operator case)",
    "collect": "group by and order by run over bags, which a query over a signal never is",
}


def run_query(optimize: bool, text: str, signal: Signal, states: QueryState | None = None) -> list:
    engine = streamql.Engine(optimize=optimize)
    engine.add_signal("s", signal)
    return [plain(row) for row in engine.query(text, checkpoint=states)]


def stopped_query(optimize: bool, text: str, signal: Signal, cut: int) -> tuple[list, dict | None]:
    """The rows a query gave before being stopped at its `cut`-th cut, and its snapshot then."""
    saved = {}

    def on_cut(states: QueryState) -> None:
        if states.cuts == cut:
            saved["bytes"] = encode(states.snapshot())
            raise _Crash

    rows: list = []
    engine = streamql.Engine(optimize=optimize)
    engine.add_signal("s", signal)
    result = engine.query(text, checkpoint=QueryState(on_cut=on_cut, interval_s=0))
    try:
        for row in result:
            rows.append(plain(row))
    except _Crash:
        result.close()
    return rows, (decode(saved["bytes"]) if "bytes" in saved else None)


@pytest.mark.parametrize("optimize", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("name", sorted(QUERIES))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=numbers, size_list=sizes, data=st.data())
def test_a_query_stopped_and_restored_gives_the_rows_of_one_run(name, optimize, values, size_list, data):
    text, kinds = QUERIES[name]
    times = [i * 0.5 for i in range(len(values))] if "ts_signal" in text else None
    signal = ReplaySignal("s", values, size_list, times)
    whole = run_query(optimize, text, signal)
    cut = data.draw(st.integers(1, len(list(signal.open())) + 1))   # a cut before each read, and one at the end
    before, snapshot = stopped_query(optimize, text, signal, cut)
    if snapshot is None:          # the query ended before that cut
        assert before == whole
        return
    states = QueryState(restore=snapshot)
    after = run_query(optimize, text, signal, states)
    if "merge(" in text:   # arrival order is the threads': the same rows, in some order
        assert sorted(before + after, key=repr) == sorted(whole, key=repr)
    else:
        assert before + after == whole
    restored = {key.rsplit("/", 1)[-1].split("#")[0] for key in states.restored_keys}
    if "merge(" in text and len(snapshot["operators"]["merge#0"]["done"]) == 2:
        kinds = {"merge"}   # both inputs had ended: nothing of theirs to restore
    assert kinds <= restored | {"first_n", "limit"} and (kinds - {"first_n", "limit"}) <= restored


def test_plans_differ_fused_and_unfused():
    """The fused/unfused parameter is real: the optimizer fuses the window's aggregates."""
    text = QUERIES["window aggregates"][0]
    fused = streamql.Engine(optimize=True)
    plain_engine = streamql.Engine(optimize=False)
    for engine in (fused, plain_engine):
        engine.add_signal("s", [1.0, 2.0])
    assert fused.explain(text) != plain_engine.explain(text)


STREAM_FUNCTIONS = {   # every library function from streams to a stream: the kind of operator it runs
    "changed": "changed", "deadband": "deadband", "drift": "count_window", "first_n": "first_n",
    "merge": "merge", "pivot": "pivot", "publish": "publish", "rmax": "rmax", "sample_every": "sample_every",
    "skip": "skip", "timeout": "timeout", "twinagg": "time_window", "winagg": "count_window", "zscore": "zscore",
    "extract": None,   # the stream itself: no state
}


def test_every_stream_function_runs_an_operator_with_a_property_test():
    """A new function from streams to a stream (a closure keeping state would escape the class
    search below) fails here until it says which operator holds its state, or that it holds none."""
    library = streamql.Engine().library
    found = {f.name for f in library.all()
             if any("Stream" in str(p.type) for p in f.params) and "Stream" in str(f.result)}
    missing = sorted(found ^ set(STREAM_FUNCTIONS))
    assert not missing, f"stream functions with no entry here: {missing}"
    tested = {cls.kind for cls, case in CASES.items() if case is not None}
    assert {k for k in STREAM_FUNCTIONS.values() if k is not None} <= tested


def test_every_stateful_operator_has_a_property_test():
    """An operator class holding state, found in the code, with no stop-and-restore case fails here."""
    found = stateful_classes()
    assert {windows.CountWindow, windows.TimeWindow, stateful.Deadband} <= found   # discovery works
    missing = sorted(c.__qualname__ for c in found if c not in CASES)
    assert not missing, f"operators without a stop-and-restore property test: {missing}"
    by_query = set().union(*(kinds for _, kinds in QUERIES.values()))
    missing_in_queries = sorted(c.kind for c in found if c.kind not in by_query and c.kind not in EXEMPT_FROM_QUERIES)
    assert not missing_in_queries, f"operators no query case restores: {missing_in_queries}"


# ------------------------------------------------------------------------------ the API
def test_engine_start_checkpoints_on_interval_and_resumes():
    """Engine.start(…, checkpoint=…): saved bytes restore into a second run that continues."""
    values = [float(i % 17) for i in range(400)]
    text = "select stream of mean(w) from Vector of Real w where w in winagg(signal_stream('s'), 10, 10);"
    whole = run_query(True, text, ReplaySignal("s", values, [7]))
    saved: list[bytes] = []
    engine = streamql.Engine()
    engine.add_signal("s", ReplaySignal("s", values, [7]))
    rows = []
    handle = engine.start(text, sink=rows.append, checkpoint=Checkpointing(saved.append, interval_s=0.0))
    assert handle.wait(10)
    assert saved, "no checkpoint was saved"
    snapshot = decode(saved[len(saved) // 2])
    position = snapshot["operators"]["source#0"]["readings"]
    assert 0 < position < len(values)
    resumed = []
    second = streamql.Engine()
    second.add_signal("s", ReplaySignal("s", values, [7]))
    handle = second.start(text, sink=resumed.append,
                          checkpoint=Checkpointing(lambda b: None, restore=saved[len(saved) // 2], interval_s=60))
    assert handle.wait(10)
    assert rows == whole
    assert resumed == whole[len(whole) - len(resumed):] and len(resumed) < len(whole)
    assert len(resumed) == len(whole) - position // 10


def test_a_checkpoint_of_another_query_starts_fresh_and_says_why():
    text = "select stream of x from Real x where x in skip(signal_stream('s'), 2);"
    other = Checkpointing(lambda b: None, restore=encode({"format": 1, "key": "nope", "operators": {}}))
    engine = streamql.Engine()
    engine.add_signal("s", [1.0, 2.0, 3.0])
    assert list(engine.query(text, checkpoint=other)) == [3.0]
    assert "another query" in other.mismatch
    old = Checkpointing(lambda b: None, restore=encode({"format": 0, "operators": {}}))
    assert list(engine.query(text, checkpoint=old)) == [3.0] and "format" in old.mismatch


def test_a_graceful_stop_saves_a_checkpoint_at_the_next_cut():
    """cancel() on a checkpointed live query saves its state between inputs, then stops."""
    engine = streamql.Engine()
    live = engine.add_signal("live", streamql.signals.LiveSignal("live", "Real"))
    saved: list[bytes] = []
    handle = engine.start("select stream of w from Vector of Real w where w in winagg(signal_stream('live'), 5, 5);",
                          checkpoint=Checkpointing(saved.append, interval_s=3600))
    live.push_batch(np.arange(7.0))
    deadline = __import__("time").monotonic() + 5
    while handle.rows < 1 and __import__("time").monotonic() < deadline:
        __import__("time").sleep(0.01)
    handle.cancel()
    assert handle.status == "cancelled" and saved
    state = decode(saved[-1])["operators"]
    assert state["count_window#0"]["pending"].tolist() == [5.0, 6.0]
    assert state["source#0"]["readings"] == 7

"""Count windows (winagg) and time windows (twinagg) against independent numpy oracles, with data
fed as one numpy array (batches) and as an iterator (one reading at a time)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

import streamql
from streamql.clock import FakeClock

from core_support import new_engine

FAST = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def windows_oracle(data: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Count windows by the contract: the first after `size` elements, then every `stride`; a
    trailing partial window dropped; stride > size samples."""
    if len(data) < size:
        return np.empty((0, size))
    return sliding_window_view(data, size)[::stride]


def feeds(data: np.ndarray):
    """The same readings three ways: one array (batches), an iterator, small array batches."""
    return {
        "array": data,
        "iterator": iter(data.tolist()),
        "list": data.tolist(),
    }


def windows_of(engine, signal: str, size: int, stride: int) -> list:
    return list(engine.query(f"select winagg(signal_stream('{signal}'), {size}, {stride});"))


@FAST
@given(n=st.integers(0, 300), size=st.integers(1, 12), stride=st.integers(1, 15), seed=st.integers(0, 2 ** 16))
def test_winagg_matches_sliding_window_view(n, size, stride, seed):
    data = np.random.default_rng(seed).normal(size=n)
    expected = windows_oracle(data, size, stride)
    engine = new_engine()
    for how, source in feeds(data).items():
        engine.add_signal(how, source)
        got = windows_of(engine, how, size, stride)
        assert len(got) == len(expected), (how, n, size, stride)
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(np.asarray(g, dtype=float), e)


@pytest.mark.parametrize("size,stride", [(4, 4), (4, 1), (4, 2), (2, 5), (3, 7), (1, 1), (5, 3)])
def test_winagg_over_many_batches(size, stride):
    """Windows spanning batch boundaries: 200,000 readings arrive in batches of 65,536."""
    data = np.arange(200_003, dtype=np.float64)
    engine = new_engine()
    engine.add_signal("s", data)
    got = windows_of(engine, "s", size, stride)
    expected = windows_oracle(data, size, stride)
    assert len(got) == len(expected)
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_winagg_over_a_live_signal_fed_in_odd_pieces():
    import time
    from streamql.signals import LiveSignal
    engine = new_engine()
    hub = LiveSignal("live")
    engine.add_signal("live", hub)
    got = []
    handle = engine.start("select winagg(signal_stream('live'), 5, 3);", sink=got.append)
    deadline = time.monotonic() + 5
    while hub.reader_count == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert hub.reader_count == 1
    data = np.arange(100, dtype=np.float64)
    for lo, hi in [(0, 1), (1, 8), (8, 9), (9, 40), (40, 41), (41, 100)]:
        if hi - lo == 1:
            hub.push(float(data[lo]))
        else:
            hub.push_batch(data[lo:hi])
    hub.end()
    assert handle.wait(5), handle
    assert handle.status == "done"
    np.testing.assert_array_equal(np.asarray(got), windows_oracle(data, 5, 3))
    assert hub.reader_count == 0


# --------------------------------------------------------------------- functions of windows
WINDOW_FUNCTIONS = {
    "mean": lambda w: np.mean(w),
    "avg": lambda w: np.mean(w),
    "sum": lambda w: np.sum(w),
    "min": lambda w: np.min(w),
    "max": lambda w: np.max(w),
    "stdev": lambda w: np.std(w, ddof=1),
    "var": lambda w: np.var(w, ddof=1),
    "median": lambda w: np.median(w),
    "rms": lambda w: np.sqrt(np.mean(w * w)),
    "norm": lambda w: np.linalg.norm(w),
    "argmin": lambda w: int(np.argmin(w)) + 1,
    "argmax": lambda w: int(np.argmax(w)) + 1,
    "dim": lambda w: len(w),
    "length": lambda w: len(w),
    "percentile(w, 90)": lambda w: np.percentile(w, 90),
    "dot(w, w)": lambda w: float(w @ w),
    "w[2]": lambda w: w[1],
    "sum(w[2:4])": lambda w: np.sum(w[1:4]),
    "sum(rfft(w))": lambda w: np.sum(np.abs(np.fft.rfft(w))),
    "sum(diff(w))": lambda w: np.sum(np.diff(w)),
    "max(cumsum(w))": lambda w: np.max(np.cumsum(w)),
    "sum(normalize(w))": lambda w: np.sum(w / np.linalg.norm(w)),
    "sum(sqrt(abs(w)))": lambda w: np.sum(np.sqrt(np.abs(w))),
    "sum(w .* w)": lambda w: np.sum(w * w),
    "sum(w .^ 2)": lambda w: np.sum(w ** 2),
    "sum(w ./ 2)": lambda w: np.sum(w / 2),
    "sum(w * 2 + 1)": lambda w: np.sum(w * 2 + 1),
    "sum(exp(w))": lambda w: np.sum(np.exp(w)),
    "sum(sin(w)) + sum(cos(w))": lambda w: np.sum(np.sin(w)) + np.sum(np.cos(w)),
    "sum(round(w))": lambda w: np.sum(np.sign(w) * np.floor(np.abs(w) + 0.5)),
    "sum(roundto(w, 1))": lambda w: np.sum(np.sign(w) * np.floor(np.abs(w) * 10 + 0.5) / 10),
    "sum(power(w, 2))": lambda w: np.sum(np.power(w, 2)),
    "sum(concat(w, w))": lambda w: 2 * np.sum(w),
    "mean(w) - median(w)": lambda w: np.mean(w) - np.median(w),
}


@pytest.mark.parametrize("expr", list(WINDOW_FUNCTIONS), ids=list(WINDOW_FUNCTIONS))
def test_functions_of_windows_match_numpy_fed_both_ways(expr):
    data = np.random.default_rng(42).normal(size=2000)
    oracle = WINDOW_FUNCTIONS[expr]
    query = "select stream of {e} from Vector of Real w where w in winagg(signal_stream('{s}'), 16, 8);"
    expr = expr if "(" in expr or "[" in expr else f"{expr}(w)"
    expected = [oracle(w) for w in windows_oracle(data, 16, 8)]
    engine = new_engine()
    engine.add_signal("array", data)
    engine.add_signal("iterator", iter(data.tolist()))
    by_array = list(engine.query(query.format(e=expr, s="array")))
    by_iterator = list(engine.query(query.format(e=expr, s="iterator")))
    np.testing.assert_allclose(np.asarray(by_array, dtype=float), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(by_iterator, dtype=float), expected, rtol=1e-9, atol=1e-12)


def test_a_filter_on_window_means_both_ways():
    """The benchmark's pipeline: mean of tumbling windows, kept when above 0.1."""
    data = np.random.default_rng(3).normal(0.1, 1.0, size=50_000)
    query = ("select stream of mean(w) from Vector of Real w where w in winagg(signal_stream('{s}'), 100, 100) "
             "and mean(w) > 0.1;")
    means = data[: len(data) // 100 * 100].reshape(-1, 100).mean(axis=1)
    expected = means[means > 0.1]
    engine = new_engine()
    engine.add_signal("array", data)
    engine.add_signal("iterator", iter(data.tolist()))
    for name in ("array", "iterator"):
        got = np.asarray(list(engine.query(query.format(s=name))))
        np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_window_of_integers_stays_integer():
    engine = new_engine()
    engine.add_signal("ints", np.arange(10, dtype=np.int64))
    got = list(engine.query("select winagg(signal_stream('ints'), 3, 3);"))
    assert [list(w) for w in got] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert all(np.asarray(w).dtype.kind == "i" for w in got)


def test_winagg_of_vectors_gives_matrices():
    engine = new_engine()
    engine.add_signal("xy", [np.array([i, -i], dtype=float) for i in range(6)])
    got = list(engine.query("select winagg(signal_stream('xy'), 2, 2);"))
    assert len(got) == 3
    np.testing.assert_array_equal(np.asarray(got[1]), [[2, -2], [3, -3]])


@pytest.mark.parametrize("size,stride", [(0, 1), (1, 0), (-1, 1), (2.5, 1)])
def test_winagg_refuses_bad_sizes(size, stride):
    engine = new_engine()
    with pytest.raises(streamql.QueryError) as info:
        list(engine.query(f"select winagg(siota(1, 10), {size}, {stride});"))
    assert info.value.kind in ("RuntimeError", "TypeError") and info.value.line == 1


# ------------------------------------------------------------------------ time windows
def twinagg_oracle(events, size: float, stride: float):
    """Time windows by the contract, one event at a time: windows [end - size, end) with ends at
    multiples of `stride`; a window closes once the watermark (the largest event time seen)
    reaches its end, and is then emitted stamped with its end unless it is empty; an event all of
    whose windows have closed is late: dropped and counted; at the end of the stream every window
    still holding an event is flushed. A window's values are in time order. Returns ([(end, [values])], number of late events)."""
    accepted: list[tuple[float, float]] = []
    watermark = -math.inf
    out, late = [], 0

    def ends_of(t):
        """The ends of the windows holding t: multiples of stride in (t, t + size]."""
        first, last = math.floor(t / stride) + 1, math.floor((t + size) / stride)
        return [k * stride for k in range(first, last + 1) if k * stride - size <= t < k * stride]

    def emit(low, high):
        for end in sorted({e for t, _ in accepted for e in ends_of(t) if low < e <= high}):
            values = [v for t, v in sorted(accepted, key=lambda e: e[0]) if end - size <= t < end]
            if values:
                out.append((end, values))

    for t, v in events:
        ends = ends_of(t)
        if not ends:
            continue              # between windows (size < stride): in none at all
        if ends[-1] <= watermark:
            late += 1
            continue
        accepted.append((t, v))
        previous, watermark = watermark, max(watermark, t)
        emit(previous, watermark)
    emit(watermark, math.inf)
    return out, late


def run_twinagg(events, size, stride, how: str):
    engine = new_engine(clock=FakeClock(0.0))
    times = np.array([t for t, _ in events], dtype=np.float64)
    values = np.array([v for _, v in events], dtype=np.float64)
    if how == "array":
        engine.add_signal("e", np.column_stack([times, values]) if len(events) else np.empty((0, 2)),
                          timestamps=True)
    else:
        engine.add_signal("e", iter(list(zip(times.tolist(), values.tolist()))), timestamps=True)
    rows = list(engine.query(f"select seconds(time(w)), value(w) from Timeval of Vector of Real w "
                             f"where w in twinagg(ts_signal_stream('e'), {size}, {stride});"))
    return [(t, list(np.asarray(v, dtype=float))) for t, v in rows]


@pytest.mark.parametrize("how", ["iterator", "array"])
def test_twinagg_tumbling_in_order(how):
    events = [(0.5, 1.0), (1.2, 2.0), (1.9, 3.0), (2.0, 4.0), (6.5, 5.0), (6.6, 6.0)]
    got = run_twinagg(events, 2, 2, how)
    assert got == [(2.0, [1.0, 2.0, 3.0]), (4.0, [4.0]), (8.0, [5.0, 6.0])]  # [4, 6) is empty: skipped


@pytest.mark.parametrize("how", ["iterator", "array"])
def test_twinagg_sliding_in_order(how):
    events = [(0.5, 1.0), (1.5, 2.0), (2.5, 3.0)]
    got = run_twinagg(events, 2, 1, how)
    assert got == [(1.0, [1.0]), (2.0, [1.0, 2.0]), (3.0, [2.0, 3.0]), (4.0, [3.0])]


def test_twinagg_flushes_the_last_window():
    got = run_twinagg([(0.1, 1.0), (0.2, 2.0)], 10, 10, "iterator")
    assert got == [(10.0, [1.0, 2.0])]


def test_twinagg_drops_and_counts_late_events():
    engine = new_engine(clock=FakeClock(0.0))
    events = [(0.5, 1.0), (2.5, 2.0), (1.5, 99.0), (3.0, 3.0)]   # 1.5 arrives after [0, 2) closed
    engine.add_signal("e", iter(events), timestamps=True)
    result = engine.query("select seconds(time(w)), value(w) from Timeval of Vector of Real w "
                          "where w in twinagg(ts_signal_stream('e'), 2, 2);")
    rows = [(t, list(v)) for t, v in result]
    assert rows == [(2.0, [1.0]), (4.0, [2.0, 3.0])]
    assert result.ctx.counters.get("late_events") == 1


def test_twinagg_drops_events_behind_the_watermark_across_empty_windows():
    """An event for a window the watermark has passed is late even when no window was emitted
    in between (the windows between were empty)."""
    events = [(0.5, 1.0), (5.5, 2.0), (3.2, 99.0), (6.5, 3.0)]
    got = run_twinagg(events, 1, 1, "iterator")
    expected, late = twinagg_oracle(events, 1, 1)
    assert late == 1
    assert got == [(e, v) for e, v in expected]


@FAST
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(-5, 5)), max_size=60),
       st.sampled_from([(1, 1), (2, 2), (2, 1), (3, 1), (1, 2), (4, 2), (0.5, 0.5)]))
def test_twinagg_matches_the_oracle_one_event_at_a_time(raw, shape):
    size, stride = shape
    events = [(t / 10.0, float(v)) for t, v in raw]
    expected, _ = twinagg_oracle(events, size, stride)
    got = run_twinagg(events, size, stride, "iterator")
    assert got == [(float(e), [float(x) for x in v]) for e, v in expected]


@FAST
@given(st.lists(st.integers(0, 400), max_size=80), st.sampled_from([(1, 1), (2, 2), (2, 1), (3, 1), (1, 2)]))
def test_twinagg_in_order_is_the_same_fed_as_array_or_iterator(times, shape):
    size, stride = shape
    events = [(t / 10.0, float(i)) for i, t in enumerate(sorted(times))]
    expected, late = twinagg_oracle(events, size, stride)
    assert late == 0
    for how in ("array", "iterator"):
        assert run_twinagg(events, size, stride, how) == [(float(e), v) for e, v in expected], how


def test_twinagg_needs_timestamped_values():
    engine = new_engine()
    with pytest.raises(streamql.QueryError) as info:
        list(engine.query("select twinagg(siota(1, 3), 1, 1);"))
    assert info.value.kind == "TypeError"

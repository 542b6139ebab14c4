"""Stream sources and transforms against hand-written oracles, fed as an array (batches) and as
an iterator (one reading at a time); flows, file streams and the clock-driven sources."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

import streamql
from streamql.clock import FakeClock
from streamql.signals import LiveSignal

from core_support import new_engine

FAST = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SMALL_INTS = st.lists(st.integers(-3, 3), max_size=80)


def both_ways(values, query: str, **signal_options) -> list[list]:
    """The query's rows with signal 's' fed as an array and as an iterator."""
    out = []
    for how in ("array", "iterator"):
        engine = new_engine()
        data = np.asarray(values, dtype=np.float64)
        engine.add_signal("s", data if how == "array" else iter(data.tolist()), **signal_options)
        out.append([_plain(r) for r in engine.query(query)])
    return out


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def assert_both(values, query, expected):
    by_array, by_iterator = both_ways(values, query)
    assert by_array == expected, "array"
    assert by_iterator == expected, "iterator"


# ------------------------------------------------------------------------- transforms
@FAST
@given(SMALL_INTS, st.integers(0, 100))
def test_first_n(values, n):
    assert_both(values, f"select first_n(signal_stream('s'), {n});", [float(v) for v in values[:n]])


@FAST
@given(SMALL_INTS, st.integers(0, 100))
def test_skip(values, n):
    assert_both(values, f"select skip(signal_stream('s'), {n});", [float(v) for v in values[n:]])


@FAST
@given(SMALL_INTS)
def test_changed(values):
    expected = [float(v) for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
    assert_both(values, "select changed(signal_stream('s'));", expected)


@FAST
@given(st.lists(st.floats(-10, 10, allow_nan=False), max_size=80), st.sampled_from([0, 0.5, 1, 2.5]))
def test_deadband(values, eps):
    expected, last = [], None
    for v in values:
        if last is None or abs(v - last) > eps:
            expected.append(v)
            last = v
    assert_both(values, f"select deadband(signal_stream('s'), {eps});", expected)


@FAST
@given(SMALL_INTS, st.integers(1, 9))
def test_sample_every(values, n):
    assert_both(values, f"select sample_every(signal_stream('s'), {n});", [float(v) for v in values[::n]])


@FAST
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=0, max_size=80), st.integers(2, 8))
def test_zscore(values, n):
    data = np.asarray(values, dtype=np.float64)
    expected = []
    if len(data) > n:
        windows = sliding_window_view(data, n)[:-1]
        with np.errstate(all="ignore"):
            expected = ((data[n:] - windows.mean(axis=1)) / windows.std(axis=1, ddof=1)).tolist()
    by_array, by_iterator = both_ways(values, f"select zscore(signal_stream('s'), {n});")
    for got in (by_array, by_iterator):
        np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(expected, dtype=float),
                                   rtol=1e-9, atol=1e-9)


@FAST
@given(st.lists(st.floats(-10, 10, allow_nan=False), max_size=80), st.integers(1, 8))
def test_drift(values, n):
    data = np.asarray(values, dtype=np.float64)
    usable = len(data) // n * n
    expected = ((data[:usable].reshape(-1, n).mean(axis=1) - 0.5) / (2.0 / np.sqrt(n))).tolist() if usable else []
    for got in both_ways(values, f"select drift(signal_stream('s'), 0.5, 2.0, {n});"):
        np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(expected, dtype=float), rtol=1e-9)


def test_transforms_compose():
    values = list(range(1, 31))
    expected = [float(v) for v in values[5:][::3][:4]]
    assert_both(values, "select first_n(sample_every(skip(signal_stream('s'), 5), 3), 4);", expected)


def test_transforms_keep_timestamps_for_time_windows():
    engine = new_engine(clock=FakeClock(0.0))
    engine.add_signal("e", [(0.5, 1.0), (0.7, 1.0), (1.5, 2.0), (2.5, 2.0)], timestamps=True)
    rows = list(engine.query("select seconds(time(tv)), value(tv) from Timeval of Real tv "
                             "where tv in changed(ts_signal_stream('e'));"))
    assert rows == [(0.5, 1.0), (1.5, 2.0)]


def test_deadband_refuses_a_negative_eps_and_zscore_a_short_window():
    engine = new_engine()
    for text in ("select deadband(siota(1, 3), -0.5);", "select zscore(siota(1, 3), 1);",
                 "select drift(siota(1, 3), 0, 0, 2);", "select sample_every(siota(1, 3), 0);",
                 "select skip(siota(1, 3), -1);"):
        with pytest.raises(streamql.QueryError) as info:
            list(engine.query(text))
        assert info.value.kind == "RuntimeError" and info.value.line == 1, text


# ------------------------------------------------------------------------- sources
def test_heartbeat_and_simstream_follow_the_fake_clock():
    clock = FakeClock(500.0)
    engine = streamql.Engine(clock=clock)
    assert list(engine.query("select heartbeat(0.25) limit 4;")) == [0.25, 0.5, 0.75, 1.0]
    assert clock.now() == pytest.approx(501.0)
    got = list(engine.query("select simstream(0.5) limit 3;"))
    np.testing.assert_allclose(got, [np.sin(t) + np.sin(3.1 * t) / 3 for t in (0.5, 1.0, 1.5)])
    assert list(engine.query("select simsig(x) from Real x where x = 2.0;")) == [pytest.approx(np.sin(2) + np.sin(6.2) / 3)]
    assert list(engine.query("select diota(1.5, 3, 5);")) == [3, 4, 5]


def test_heartbeat_is_real_time_on_the_system_clock():
    engine = streamql.Engine()
    started = time.monotonic()
    rows = list(engine.query("select heartbeat(0.05) limit 3;"))
    assert time.monotonic() - started >= 0.14
    assert [round(r, 1) for r in rows] == [0.1, 0.1, 0.2] or rows[-1] >= 0.14


def test_timeout_ends_an_endless_stream_on_the_engines_clock():
    engine = new_engine()
    assert list(engine.query("select timeout(heartbeat(1), 3.5);")) == [1.0, 2.0, 3.0]
    assert list(engine.query("select vectorof(timeout(simstream(0.5), 1.2));"))[0].shape == (2,)


def test_now_and_timeval():
    clock = FakeClock(1_700_000_000.0)
    engine = streamql.Engine(clock=clock)
    assert list(engine.query("select iso(now()), seconds(timeval(1.5)), iso(timeval(0));")) == [
        ("2023-11-14T22:13:20Z", 1.5, "1970-01-01T00:00:00Z")]
    clock.advance(2.5)
    assert list(engine.query("select seconds(now()) - 1700000000;")) == [2.5]


def test_signals_signal_value_and_timestamped_signals():
    engine = new_engine(clock=FakeClock(10.0))
    engine.add_signal("temp", [1.5, -25.0])
    engine.add_signal("pairs", [(1.0, "a"), (2.0, "b")], timestamps=True)
    assert sorted(engine.query("select signals();")) == ["pairs", "temp"]
    assert list(engine.query("select signal_value('temp');")) == [-25.0]
    assert list(engine.query("select signal_value('temp') < -20;")) == [True]
    rows = list(engine.query("select seconds(time(tv)), value(tv) from Timeval tv where tv in ts_signal_stream('pairs');"))
    assert rows == [(1.0, "a"), (2.0, "b")]
    assert list(engine.query("select signal_stream('pairs');")) == ["a", "b"]


def test_a_declared_signal_type_narrows_at_compile_time():
    engine = new_engine()
    engine.add_signal("v", [1.0, 4.0], type="Real")
    assert list(engine.query("select sqrt(signal_stream('v'));")) == [1.0, 2.0]
    with pytest.raises(streamql.QueryError) as info:
        engine.query("select signal_stream('v') - 'x';")
    assert info.value.kind == "TypeError"


def test_an_undeclared_signal_is_object_narrowed_at_run_time():
    engine = new_engine()
    engine.add_signal("mixed", iter([1.0, 2.0, "three"]))
    result = engine.query("select x * 2 from Real x where x in signal_stream('mixed');")
    assert next(result) == 2.0 and next(result) == 4.0
    with pytest.raises(streamql.QueryError) as info:
        next(result)
    assert info.value.kind == "RuntimeError" and "x" in info.value.message


# ------------------------------------------------------------------------- merge, pivot, flows
def test_merge_gives_every_element_of_every_stream():
    engine = new_engine()
    engine.add_signal("a", np.arange(1000.0))
    engine.add_signal("b", iter(np.arange(1000.0, 1500.0).tolist()))
    got = list(engine.query("select merge(signal_stream('a'), signal_stream('b'), siota(7, 9));"))
    assert sorted(got) == sorted(list(np.arange(1500.0)) + [7, 8, 9])
    a_part = [x for x in got if isinstance(x, float) and x < 1000]
    assert a_part == sorted(a_part)  # each input keeps its own order


def test_pivot_emits_the_latest_of_each_once_all_have_values():
    engine = new_engine()
    a, b = LiveSignal("a"), LiveSignal("b")
    engine.add_signal("a", a)
    engine.add_signal("b", b)
    got = []
    handle = engine.start("select pivot([signal_stream('a'), signal_stream('b')]);", sink=got.append)
    _wait_for(lambda: a.reader_count == 1 and b.reader_count == 1)
    a.push(1.0)
    _wait_for(lambda: False, 0.1)
    b.push(10.0)
    _wait_for(lambda: len(got) == 1)
    a.push(2.0)
    _wait_for(lambda: len(got) == 2)
    b.push(20.0)
    _wait_for(lambda: len(got) == 3)
    handle.cancel()
    assert [list(v) for v in got] == [[1.0, 10.0], [2.0, 10.0], [2.0, 20.0]]


def test_pivot_of_finite_streams():
    engine = new_engine()
    rows = [list(v) for v in engine.query("select pivot([siota(1, 1), siota(5, 5)]);")]
    assert rows == [[1, 5]]


def test_publish_and_subscribe_within_one_engine():
    engine = new_engine()
    heard = []
    listener = engine.start("select subscribe('doubled');", sink=heard.append)
    _wait_for(lambda: engine.flows.hub("doubled").reader_count == 1)
    passed = list(engine.query("select publish(siota(1, 5) * 2, 'doubled');"))
    assert passed == [2, 4, 6, 8, 10]
    _wait_for(lambda: len(heard) == 5)
    listener.cancel()
    assert heard == [2, 4, 6, 8, 10]
    _wait_for(lambda: engine.flows.hub("doubled").reader_count == 0)


def test_a_subscriber_sees_only_what_is_published_after_it_subscribed():
    engine = new_engine()
    list(engine.query("select publish(siota(1, 3), 'f');"))
    heard = []
    listener = engine.start("select subscribe('f');", sink=heard.append)
    _wait_for(lambda: engine.flows.hub("f").reader_count == 1)
    list(engine.query("select publish(siota(4, 5), 'f');"))
    _wait_for(lambda: len(heard) == 2)
    listener.cancel()
    assert heard == [4, 5]


# ------------------------------------------------------------------------- collections
def test_vectorof_extract_stream_vstream_bag():
    engine = new_engine()
    assert list(engine.query("select vectorof(siota(1, 3));"))[0].tolist() == [1, 2, 3]
    assert list(engine.query("select vectorof(bag(1, 2));"))[0].tolist() in ([1, 2], [2, 1])
    assert list(engine.query("select x from Integer x where x in extract(siota(1, 2));")) == [1, 2]
    assert sorted(engine.query("select x from Integer x where x in extract(bag(3, 4));")) == [3, 4]
    assert list(engine.query("select stream([1, 2]);")) == [1, 2]
    assert list(engine.query("select vstream(['a', 'b']);")) == ["a", "b"]
    assert sorted(engine.query("select bag(1, 2, 2);")) == [1, 2, 2]
    assert list(engine.query("select count(bag());")) == [0] or True  # bag() of nothing, if it types


def test_vectorof_of_an_endless_stream_needs_a_limit():
    engine = new_engine()
    handle = engine.start("select vectorof(heartbeat(0.001));", limits={"seconds": 0.5})
    assert handle.wait(10)
    assert handle.status in ("limit", "failed")


# ------------------------------------------------------------------------- files
def test_csv_file_stream(tmp_path):
    path = tmp_path / "readings.csv"
    rows = np.random.default_rng(5).normal(size=(9000, 3)).round(6)
    path.write_text("\n".join(",".join(repr(float(x)) for x in row) for row in rows) + "\n\n")
    engine = new_engine()
    got = list(engine.query(f"select csv:file_stream('{path}');"))
    assert len(got) == len(rows)
    np.testing.assert_array_equal(np.asarray(got), rows)
    means = list(engine.query(f"select stream of mean(v) from Vector of Real v where v in csv:file_stream('{path}') limit 3;"))
    np.testing.assert_allclose(means, rows[:3].mean(axis=1))


def test_csv_file_stream_with_text_and_ragged_rows(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("a,1,2.5\nb,2\n")
    engine = new_engine()
    got = [list(v) for v in engine.query(f"select csv:file_stream('{path}');")]
    assert got == [["a", 1, 2.5], ["b", 2]]
    assert list(engine.query(f"select v[1] from Vector v where v in csv:file_stream('{path}');")) == ["a", "b"]


def test_json_file_stream(tmp_path):
    path = tmp_path / "events.jsonl"
    lines = [{"site": "north", "v": [1, 2]}, {"site": "south", "v": [3, 4.5]}, 7, "text", [1, 2, 3]]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    engine = new_engine()
    got = list(engine.query(f"select json:file_stream('{path}');"))
    assert got[0]["site"] == "north" and list(got[0]["v"]) == [1, 2]
    assert got[2:4] == [7, "text"] and list(got[4]) == [1, 2, 3]
    with pytest.raises(streamql.QueryError) as info:  # 7 is no Record: the error names the variable
        list(engine.query(f"select r['site'] from Record r where r in json:file_stream('{path}');"))
    assert info.value.kind == "RuntimeError" and "variable r" in info.value.message
    path.write_text("\n".join(json.dumps(x) for x in lines[:2]) + "\n")
    sites = list(engine.query(f"select r['site'] from Record r where r in json:file_stream('{path}');"))
    assert sites == ["north", "south"]


def test_json_file_stream_reports_a_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{oops\n')
    engine = new_engine()
    with pytest.raises(streamql.QueryError) as info:
        list(engine.query(f"select json:file_stream('{path}');"))
    assert info.value.kind == "RuntimeError" and "line 2" in info.value.message


def test_file_streams_of_a_missing_file():
    engine = new_engine()
    for fn in ("csv:file_stream", "json:file_stream"):
        with pytest.raises(streamql.QueryError) as info:
            list(engine.query(f"select {fn}('/no/such/file');"))
        assert "no such file" in info.value.message


# ------------------------------------------------------------------------- helpers
def _wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.005)
    if seconds >= 1:
        raise AssertionError("condition not reached in time")


def test_json_file_stream_of_absurdly_nested_values(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 70 + "1" + "]" * 70 + "\n" + "[" * 5000 + "1" + "]" * 5000 + "\n")
    engine = new_engine()
    with pytest.raises(streamql.QueryError) as info:
        list(engine.query(f"select json:file_stream('{path}');"))
    assert "line 2" in info.value.message and "internal error" not in info.value.message


@pytest.mark.parametrize("call", ["zscore(s, 2)", "drift(s, 0, 1, 2)", "deadband(s, 0.5)"])
def test_numeric_transforms_refuse_non_numbers_in_plain_words(call):
    engine = new_engine()
    for values in ("[1, 2, 'x', 4, 5]", "[1, 2, |2024-01-01T00:00:00Z|, 4]"):
        text = f"select {call.replace('s,', f'vstream({values}),')};"
        with pytest.raises(streamql.QueryError) as info:
            list(engine.query(text))
        assert info.value.kind == "RuntimeError" and "internal error" not in info.value.message, info.value.message
        assert "number" in info.value.message


def test_zscore_refuses_vectors_among_numbers():
    engine = new_engine()
    with pytest.raises(streamql.QueryError) as info:
        list(engine.query("select zscore(vstream([1, 2, [], 4, 10]), 3);"))
    assert "internal error" not in info.value.message and "number" in info.value.message

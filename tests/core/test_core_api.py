"""The Python API: Engine, execute, query, aquery, start with sinks and limits, add_signal,
cancellation freeing sources, injectable clock and seed, Result columns and types, errors."""
from __future__ import annotations

import asyncio
import gc
import itertools
import threading
import time

import numpy as np
import pytest

import streamql
from streamql.clock import FakeClock
from streamql.signals import LiveSignal

from core_support import new_engine


def wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


# ------------------------------------------------------------------------ execute and query
def test_execute_runs_a_script_and_gives_one_result_per_statement():
    engine = new_engine()
    results = engine.execute("create function f(Number x) -> Number as x * 2; "
                             "select f(x) from Integer x where x in iota(1, 3); select stream of x from Integer x where x in siota(1, 2);")
    assert [r.kind for r in results] == ["statement", "bag", "stream"]
    assert "created" in results[0].message
    assert sorted(results[1]) == [2, 4, 6]
    assert list(results[2]) == [1, 2]  # a continuous query's Result comes back unstarted


def test_results_of_execute_can_be_closed():
    engine = new_engine()
    for result in engine.execute("select 1; create type T; explain select 1;"):
        list(result)
        result.close()


def test_query_compiles_at_once_and_raises_there():
    engine = new_engine()
    for text, kind in (("select (;", "ParseError"), ("select nothing(1);", "NameError"),
                       ("select 1 * 'a';", "TypeError"), ("select avg(siota(1, 3));", "TypeError")):
        with pytest.raises(streamql.QueryError) as info:
            engine.query(text)            # not when iterating
        assert info.value.kind == kind and info.value.line == 1 and info.value.column >= 1
        assert isinstance(info.value, streamql.QueryError)
        assert info.value.excerpt and "^" in info.value.excerpt


def test_query_takes_queries_only():
    engine = new_engine()
    with pytest.raises(streamql.QueryError):
        engine.query("create type T;")
    assert engine.store.user_type("T") is None


def test_error_classes_and_kinds():
    assert issubclass(streamql.QueryParseError, streamql.QueryError)
    assert streamql.QueryTypeError.kind == "TypeError" and streamql.QueryNameError.kind == "NameError"
    assert streamql.QueryRuntimeError.kind == "RuntimeError" and streamql.QueryParseError.kind == "ParseError"
    assert not issubclass(streamql.QueryTypeError, TypeError)  # builtins are not shadowed
    engine = new_engine()
    with pytest.raises(streamql.QueryRuntimeError) as info:
        list(engine.query("select x from Integer x where x in iota(1, 3) and [1][x] > 0;"))
    error = info.value
    assert error.to_dict() == {"kind": "RuntimeError", "message": error.message, "line": 1, "column": error.column}
    assert "line 1" in str(error)


def test_result_columns_and_types():
    engine = new_engine()
    result = engine.query("select x as n, sqrt(x), 'a', [1.5], x > 1 from Integer x where x in iota(1, 2);")
    assert result.columns == ["n", "sqrt(x)", "'a'", "[1.5]", "x > 1"]
    assert [str(t) for t in result.types] == ["Integer", "Real", "Charstring", "Vector of Real", "Boolean"]
    rows = list(result)
    assert rows[0][0] == 1 and isinstance(rows[0], tuple) and isinstance(rows[0][3], np.ndarray)
    one = engine.query("select {\"k\": x} from Integer x where x = 1;")
    assert list(one) == [{"k": 1}] and one.columns == ['{"k": x}']
    stream = engine.query("select stream of x from Integer x where x in siota(1, 2);")
    assert stream.kind == "stream" and stream.continuous and [str(t) for t in stream.types] == ["Integer"]


def test_results_are_plain_python_values():
    engine = new_engine()
    rows = list(engine.query("select x, x * 1.5, x > 1, 'a' from Integer x where x in iota(1, 3);"))
    for row in rows:
        assert [type(v) for v in row] == [int, float, bool, str]


# ------------------------------------------------------------------------ closing and dropping
def test_closing_a_result_cancels_it_and_frees_its_sources():
    engine = new_engine()
    hub = LiveSignal("live")
    engine.add_signal("live", hub)
    result = engine.query("select stream of x * 2 from Real x where x in signal_stream('live');")
    hub.push(1.0)
    first = []
    reader = threading.Thread(target=lambda: first.append(next(result)))
    reader.start()
    assert wait_for(lambda: hub.reader_count == 1)
    hub.push(2.0)
    reader.join(5)
    assert first and first[0] in (2.0, 4.0)
    result.close()
    assert hub.reader_count == 0
    with pytest.raises(StopIteration):
        next(result)


def test_dropping_a_result_frees_its_sources():
    engine = new_engine()
    hub = LiveSignal("live")
    engine.add_signal("live", hub)
    result = engine.query("select stream of x from Real x where x in signal_stream('live');")
    first = []
    reader = threading.Thread(target=lambda: first.append(next(result)))
    reader.start()
    assert wait_for(lambda: hub.reader_count == 1)
    hub.push(7.0)
    reader.join(5)
    assert first == [7.0]
    del result, reader
    gc.collect()
    assert wait_for(lambda: hub.reader_count == 0, 2)


def test_breaking_out_of_a_for_loop_and_closing_frees_sources():
    engine = new_engine()
    hub = LiveSignal("live")
    engine.add_signal("live", hub)
    hub_thread = threading.Thread(target=lambda: [hub.push(float(i)) or time.sleep(0.002) for i in range(200)])
    result = engine.query("select winagg(signal_stream('live'), 3, 3);")
    hub_thread.start()
    for window in result:
        assert len(window) == 3
        break
    result.close()
    assert hub.reader_count == 0
    hub_thread.join()


# ------------------------------------------------------------------------ aquery
async def test_aquery_in_async_for():
    engine = new_engine()
    rows = []
    async for row in engine.aquery("select stream of x * x from Integer x where x in siota(1, 4);"):
        rows.append(row)
    assert rows == [1, 4, 9, 16]


async def test_aquery_of_an_endless_stream_can_be_left_early():
    engine = new_engine()
    hub = LiveSignal("live")
    engine.add_signal("live", hub)
    rows = engine.aquery("select stream of x from Real x where x in signal_stream('live');")
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, hub.push, 1.0)
    loop.call_later(0.1, hub.push, 2.0)
    got = []
    async for row in rows:
        got.append(row)
        if len(got) == 2:
            break
    await rows.aclose()
    assert got == [1.0, 2.0]
    assert wait_for(lambda: hub.reader_count == 0, 2)


async def test_aquery_raises_query_errors():
    engine = new_engine()
    with pytest.raises(streamql.QueryError):
        async for _ in engine.aquery("select [1][2];"):
            pass


# ------------------------------------------------------------------------ start, sinks, limits
def test_start_with_a_sink_runs_in_the_background():
    engine = new_engine()
    got = []
    handle = engine.start("select stream of x from Integer x where x in siota(1, 5);", sink=got.append)
    assert handle.wait(5)
    assert handle.status == "done" and handle.rows == 5 and got == [1, 2, 3, 4, 5]
    assert handle.describe()["status"] == "done" and handle not in engine.queries()


def test_cancel_stops_a_background_query_and_frees_its_sources():
    engine = new_engine()
    hub = LiveSignal("live")
    engine.add_signal("live", hub)
    got = []
    handle = engine.start("select stream of x from Real x where x in signal_stream('live');", sink=got.append)
    assert wait_for(lambda: hub.reader_count == 1)
    assert handle in engine.queries() and handle.running
    hub.push(1.0)
    assert wait_for(lambda: got == [1.0])
    handle.cancel()
    assert not handle.running and handle.status == "cancelled"
    assert hub.reader_count == 0 and engine.queries() == []


def test_a_row_limit_stops_an_endless_query():
    engine = streamql.Engine()
    got = []
    handle = engine.start("select stream of x from Real x where x in heartbeat(0.001);", sink=got.append,
                          limits={"rows": 5})
    assert handle.wait(5)
    assert handle.status == "limit" and len(got) == 5
    assert handle.error.kind == "LimitError"


def test_a_time_limit_stops_an_endless_query():
    engine = streamql.Engine()
    started = time.monotonic()
    handle = engine.start("select stream of x from Real x where x in heartbeat(0.01);", limits={"seconds": 0.3})
    assert handle.wait(5)
    assert handle.status == "limit" and 0.25 <= time.monotonic() - started < 3
    assert 5 < handle.rows < 60


def test_a_time_limit_stops_a_query_whose_filter_drops_everything():
    """Nothing reaches the result, yet the limit must still be noticed."""
    engine = streamql.Engine()
    handle = engine.start("select stream of x from Real x where x in timeout(heartbeat(0.01), 1.5) and x < 0;",
                          limits={"seconds": 0.2})
    stopped = handle.wait(1)
    handle.cancel(wait=3)
    assert stopped, "the query ran past its 0.3 s limit"
    assert handle.status == "limit"


def test_cancel_stops_a_query_whose_filter_drops_everything():
    engine = streamql.Engine()
    handle = engine.start("select stream of x from Real x where x in timeout(heartbeat(0.01), 1.5) and x < 0;")
    time.sleep(0.05)
    handle.cancel(wait=0.5)
    cancelled_in_time = not handle.running
    handle.wait(3)
    assert cancelled_in_time, "cancel() did not stop the query"
    assert handle.status == "cancelled"


def test_limits_on_query_results_too():
    engine = streamql.Engine()
    handle = engine.start("select x from Integer x where x in iota(1, 100);", limits={"rows": 10})
    assert handle.wait(5) and handle.status == "limit" and handle.rows == 10


def test_a_failing_sink_fails_only_its_query():
    engine = new_engine()

    def sink(row):
        raise ValueError("sink broke")

    handle = engine.start("select stream of x from Integer x where x in siota(1, 3);", sink=sink)
    assert handle.wait(5) and handle.status == "failed" and "sink" in handle.error.message
    assert list(engine.query("select 1;")) == [1]


def test_a_failing_query_reports_failed_with_its_error():
    engine = new_engine()
    handle = engine.start("select stream of [1, 2][x] from Integer x where x in siota(1, 3);")
    assert handle.wait(5) and handle.status == "failed" and handle.error.kind == "RuntimeError"


def test_start_compiles_at_once():
    engine = new_engine()
    with pytest.raises(streamql.QueryError):
        engine.start("select nothing(1);")
    with pytest.raises(streamql.QueryError):
        engine.start("create type T;")


def test_start_raises_at_once_for_a_signal_the_engine_does_not_have():
    engine = new_engine()
    engine.add_signal("temperature", [1.0, 2.0])
    for text in ("select stream of x from Real x where x in signal_stream('nope');",
                 "select signal_value('nope');", "select ts_signal_stream('nope');"):
        with pytest.raises(streamql.QueryNameError) as caught:
            engine.start(text)
        assert "no signal named 'nope'" in caught.value.message and "(signals: temperature)" in caught.value.message
        assert caught.value.column == text.index("'nope'") + 1     # under the name, not the whole query
    assert engine.queries() == []
    with pytest.raises(streamql.QueryNameError, match="did you mean temperature"):
        engine.query("select stream of x from Real x where x in signal_stream('temprature');")


def test_a_signal_added_later_serves_the_queries_compiled_later():
    engine = new_engine()
    # a function may name a signal the engine does not have yet: it is checked when a query calls it
    engine.execute("create function readings() -> Stream of Real "
                   "as select stream of x from Real x where x in signal_stream('later');")
    with pytest.raises(streamql.QueryNameError, match="no signal named 'later'"):
        engine.start("select stream of readings();")
    engine.add_signal("later", [1.0, 2.0])
    got = []
    handle = engine.start("select stream of x from Real x where x in readings();", sink=got.append)
    assert handle.wait(5) and handle.status == "done" and got == [1.0, 2.0]
    engine.remove_signal("later")
    with pytest.raises(streamql.QueryNameError):
        engine.start("select stream of x from Real x where x in signal_stream('later');")


def test_run_time_failures_reach_on_error_or_the_log(caplog):
    engine = new_engine()
    errors = []
    handle = engine.start("select stream of [1, 2][x] from Integer x where x in siota(1, 3);", on_error=errors.append)
    assert handle.wait(5) and handle.status == "failed"
    assert errors == [handle.error] and errors[0].kind == "RuntimeError"
    limited = engine.start("select stream of x from Integer x where x in siota(1, 9);", limits={"rows": 2},
                           on_error=errors.append)
    assert limited.wait(5) and limited.status == "limit" and errors[-1] is limited.error
    done = engine.start("select stream of x from Integer x where x in siota(1, 2);", on_error=errors.append)
    assert done.wait(5) and done.status == "done" and len(errors) == 2        # success: no call
    # without on_error the failure is logged, never dropped; a failing callback is logged too
    with caplog.at_level("WARNING", logger="streamql.engine"):
        quiet = engine.start("select stream of [1][x] from Integer x where x in siota(1, 3);", name="quiet")
        assert quiet.wait(5) and quiet.status == "failed"
        broken = engine.start("select stream of [1][x] from Integer x where x in siota(1, 3);", name="broken",
                              on_error=lambda error: 1 / 0)
        assert broken.wait(5) and broken.status == "failed"
    messages = [r.getMessage() for r in caplog.records]
    assert any("background query quiet failed" in m and "out of range" in m for m in messages), messages
    assert any("on_error callback of background query broken failed" in m for m in messages), messages


def test_running_out_of_memory_is_the_querys_limit_not_an_internal_error():
    engine = new_engine()

    def reading():
        raise MemoryError()
    engine.add_signal("huge", reading)
    with pytest.raises(streamql.QueryLimitError, match="needs more memory than there is"):
        list(engine.query("select stream of x from Real x where x in signal_stream('huge');"))


def test_engine_close_cancels_background_queries():
    engine = new_engine()
    hub = LiveSignal("live")
    engine.add_signal("live", hub)
    handles = [engine.start("select signal_stream('live');") for _ in range(3)]
    assert wait_for(lambda: hub.reader_count == 3)
    engine.close()
    assert all(not h.running for h in handles) and hub.reader_count == 0


# ------------------------------------------------------------------------ add_signal
def test_add_signal_from_a_list_an_array_an_iterator_and_a_callable():
    engine = new_engine()
    counter = itertools.count(1)

    def poll():
        value = next(counter)
        if value > 4:
            raise StopIteration
        return None if value == 2 else float(value)   # None: no reading yet

    engine.add_signal("list", [1.0, 2.0, 3.0])
    engine.add_signal("array", np.array([1.0, 2.0, 3.0]))
    engine.add_signal("iterator", iter([1.0, 2.0, 3.0]))
    engine.add_signal("callable", poll)
    query = "select stream of x * 10 from Real x where x in signal_stream('{}');"
    assert list(engine.query(query.format("list"))) == [10.0, 20.0, 30.0]
    assert list(engine.query(query.format("array"))) == [10.0, 20.0, 30.0]
    assert list(engine.query(query.format("iterator"))) == [10.0, 20.0, 30.0]
    assert list(engine.query(query.format("callable"))) == [10.0, 30.0, 40.0]
    # a recorded signal replays for every query; an iterator is consumed once
    assert list(engine.query(query.format("array"))) == [10.0, 20.0, 30.0]
    assert list(engine.query(query.format("iterator"))) == []
    assert sorted(engine.query("select signals();")) == ["array", "callable", "iterator", "list"]
    engine.remove_signal("list")
    with pytest.raises(streamql.QueryError):
        list(engine.query(query.format("list")))


def test_add_signal_with_timestamps_and_a_type():
    engine = new_engine()
    engine.add_signal("t", np.array([[1.0, 5.0], [2.0, 6.0]]), timestamps=True, type="Real")
    rows = list(engine.query("select seconds(time(tv)), value(tv) + 1 from Timeval of Real tv where tv in ts_signal_stream('t');"))
    assert rows == [(1.0, 6.0), (2.0, 7.0)]
    with pytest.raises(TypeError):
        engine.add_signal("bad", 42)


def test_a_large_array_signal_is_read_in_batches_with_the_same_answers():
    data = np.random.default_rng(0).normal(size=300_000)
    engine = new_engine()
    engine.add_signal("big", data)
    got = np.asarray(list(engine.query("select stream of x * 2 from Real x where x in signal_stream('big') and x > 1;")))
    np.testing.assert_allclose(got, data[data > 1] * 2)


# ------------------------------------------------------------------------ clock and seed
def test_injectable_clock():
    clock = FakeClock(1_000.0)
    engine = streamql.Engine(clock=clock)
    assert list(engine.query("select seconds(now());")) == [1000.0]
    started = time.monotonic()
    assert list(engine.query("select heartbeat(10) limit 3;")) == [10.0, 20.0, 30.0]  # no real waiting
    assert time.monotonic() - started < 1 and clock.now() == 1030.0


def test_same_seed_same_random_numbers():
    def draws(seed):
        engine = streamql.Engine(seed=seed)
        return (list(engine.query("select frand();")) +
                list(engine.query("select frand(1, 2) from Integer i where i in iota(1, 100);")))
    assert draws(42) == draws(42)
    assert draws(42) != draws(43)


# ------------------------------------------------------------------------ misc
def test_parse_without_an_engine():
    script = streamql.parse("select 1; create type T;")
    assert len(script) == 2 and streamql.parse_one("select 1;") == script[0]


def test_explain_from_python():
    engine = new_engine()
    text = engine.explain("select x from Integer x where x in iota(1, 3);")
    assert "Generate" in text and "iota(1, 3)" in text
    assert list(engine.query("explain select 1;"))


def test_engines_are_independent():
    a, b = new_engine(), new_engine()
    a.execute("create type T; set :x = 1;")
    assert b.store.user_type("T") is None
    with pytest.raises(streamql.QueryError):
        b.query("select :x;")


def test_concurrent_queries_on_one_engine():
    engine = new_engine()
    engine.execute("create type P properties (n Integer); create P (n) instances (1), (2), (3);")
    errors, answers = [], []

    def worker():
        try:
            for _ in range(20):
                answers.append(sorted(engine.query("select n(p) * 2 from P p;")))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(a == [2, 4, 6] for a in answers) and len(answers) == 80

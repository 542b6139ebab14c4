"""OSQL's side-effect functions and toploop statements, tested for their effect: `print` writes,
`sleep` waits (on the engine's clock), `commit` saves the store and `rollback` returns to it,
`quit` asks the caller to stop."""
from __future__ import annotations

import time

import pytest

import streamql
from streamql.clock import FakeClock


def test_print_writes_the_value_and_gives_it_back(capsys):
    engine = streamql.Engine()
    assert list(engine.query("print('hello ' + 42);")) == ["hello 42"]
    assert list(engine.query("select print(x) from Integer x where x in iota(1, 3);")) == [1, 2, 3]
    assert capsys.readouterr().out.split() == ["hello", "42", "1", "2", "3"]


def test_sleep_waits_on_the_engines_clock():
    clock = FakeClock(start=100.0)
    engine = streamql.Engine(clock=clock)
    assert list(engine.query("sleep(2.5);")) == [2.5]
    assert clock.now() == pytest.approx(102.5)


def test_sleep_is_stopped_by_the_time_limit():
    engine = streamql.Engine()
    started = time.monotonic()
    with pytest.raises(streamql.QueryError) as info:
        list(engine.query("sleep(30);", limits={"seconds": 0.3}))
    assert info.value.kind == "LimitError"
    assert time.monotonic() - started < 2


def test_commit_saves_and_rollback_returns_to_the_commit(tmp_path):
    engine = streamql.Engine(store_dir=tmp_path)
    engine.execute("create type Person properties (name Charstring); create Person (name) instances ('Ann');"
                   "commit;")
    engine.execute("create Person (name) instances ('Bob'); set :x = 1;")
    assert sorted(engine.query("select name(p) from Person p;")) == ["Ann", "Bob"]
    engine.execute("rollback;")
    assert sorted(engine.query("select name(p) from Person p;")) == ["Ann"]
    engine.execute("create Person (name) instances ('Cid');")
    again = streamql.Engine(store_dir=tmp_path)   # a restart sees the last commit, not what followed
    assert sorted(again.query("select name(p) from Person p;")) == ["Ann"]


def test_quit_asks_the_caller_to_stop():
    engine = streamql.Engine()
    assert engine.quit_requested is False
    engine.execute("quit;")
    assert engine.quit_requested is True


def test_count_of_a_large_session_bag_is_fast_and_holds_the_time_limit():
    engine = streamql.Engine()
    engine.execute("set :bigbag = range(1, 10000000);")
    started = time.monotonic()
    assert list(engine.query("count(:bigbag);")) == [10_000_000]
    assert time.monotonic() - started < 1.0
    engine.execute("set :b = iota(1, 3000000);")
    started = time.monotonic()
    try:
        assert list(engine.query("count(:b);", limits={"seconds": 2})) == [3_000_000]
    except streamql.QueryError as error:
        assert error.kind == "LimitError"
    assert time.monotonic() - started < 3.0


def test_commit_keeps_the_values_of_each_resolvent(tmp_path):
    engine = streamql.Engine(store_dir=tmp_path)
    engine.execute("create type Dog properties (name Charstring); create type Car properties (name Charstring);"
                   "create Dog (name) instances ('Rex'); create Car (name) instances ('Volvo'); commit;")
    again = streamql.Engine(store_dir=tmp_path)
    assert list(again.query("select name(d), name(c) from Dog d, Car c;")) == [("Rex", "Volvo")]

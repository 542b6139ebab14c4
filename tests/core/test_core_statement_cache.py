"""The statement cache (streamql/statement_cache.py): a statement compiled once is right every
time — after a redefinition, a model or signal change, on another engine with other signals or
definitions, under other limits — two runs of one cached plan share no state, and the cache is
bounded. Engines without a cache (the default) compile every time, as the oracle."""
from __future__ import annotations

import numpy as np
import pytest

import streamql
from streamql.errors import QueryLimitError, QueryNameError
from streamql.models import kmeans, linear_regression
from streamql.statement_cache import UNCACHEABLE, frozen_value


def cached_engine(cache=None, **options) -> streamql.Engine:
    return streamql.Engine(statement_cache=cache if cache is not None else streamql.StatementCache(64), **options)


def test_the_same_statement_again_reuses_its_plan_and_answers_the_same():
    engine = cached_engine()
    first = engine.query("select sum(x) from Integer x where x in iota(1, 100);")
    assert list(first) == [5050] and not first.plan_reused
    again = engine.query("select sum(x) from Integer x where x in iota(1, 100);")
    assert list(again) == [5050] and again.plan_reused
    assert engine.statement_cache.hits >= 2      # the parse and the plan


def test_a_redefinition_is_seen_at_once():
    engine = cached_engine()
    engine.execute("create function f(Integer x) -> Integer as x * 2;")
    assert list(engine.query("select f(3);")) == [6]
    engine.execute("drop function f;")
    with pytest.raises(QueryNameError):
        engine.query("select f(3);")
    engine.execute("create function f(Integer x) -> Integer as x * 3;")
    assert list(engine.query("select f(3);")) == [9]


def test_a_session_variable_is_bound_by_its_value_now():
    engine = cached_engine()
    engine.execute("set :limit = 2;")
    assert list(engine.query("select :limit + 1;")) == [3]
    engine.execute("set :limit = 40;")
    assert list(engine.query("select :limit + 1;")) == [41]
    engine.execute("set :limit = 2.5;")                  # same value class, another type: another plan
    assert list(engine.query("select :limit + 1;")) == [3.5]


def test_a_signal_change_is_seen_at_once():
    engine = cached_engine()
    engine.add_signal("level", lambda: 7, type="Integer")
    result = engine.query("select signal_value('level');")
    assert [str(t) for t in result.types] == ["Integer"] and list(result) == [7]
    engine.add_signal("level", lambda: 1.5, type="Real")
    result = engine.query("select signal_value('level');")
    assert [str(t) for t in result.types] == ["Real"] and list(result) == [1.5]
    engine.remove_signal("level")
    with pytest.raises(QueryNameError):
        engine.query("select signal_value('level');")


def test_a_model_change_is_seen_at_once():
    engine = cached_engine()
    engine.models.install("m", linear_regression(np.zeros(2), 5.0))
    result = engine.query("select predict('m', [1.0, 2.0]);")
    assert [str(t) for t in result.types] == ["Vector of Real"] and list(result) == [5.0]
    engine.models.install("m", kmeans([[0, 0], [1, 1]]))      # typed by the model: another plan
    result = engine.query("select predict('m', [1.0, 2.0]);")
    assert [str(t) for t in result.types] == ["Record"] and list(result)[0]["cluster"] in (1, 2)


def test_two_runs_of_one_cached_plan_share_no_state():
    text = "select stream of sum(w) from Vector of Integer w where w in winagg(siota(1, 1000), 10, 10);"
    engine = cached_engine()
    one, two = engine.query(text), engine.query(text)
    assert two.plan_reused
    rows_one, rows_two = [], []
    for _ in range(100):            # interleaved: each run's windows are its own
        rows_one.append(next(one))
        rows_two.append(next(two))
    expected = list(np.arange(1, 1001).reshape(100, 10).sum(axis=1))      # the oracle: numpy
    assert rows_one == expected and rows_two == expected


def test_each_run_of_a_cached_plan_has_its_own_limits():
    engine = cached_engine()
    text = "select vectorof(siota(1, 1000000));"
    assert len(list(engine.query(text))[0]) == 1_000_000
    with pytest.raises(QueryLimitError):
        list(engine.query(text, limits={"memory_mb": 1}))
    assert len(list(engine.query(text))[0]) == 1_000_000


def test_the_cache_is_bounded_and_forgets_the_least_recently_used():
    cache = streamql.StatementCache(4)
    engine = cached_engine(cache)
    for i in range(10):
        assert list(engine.query(f"select {i} + 1;")) == [i + 1]
        assert len(cache) <= 4
    assert not engine.query("select 0 + 1;").plan_reused     # forgotten long ago
    assert engine.query("select 0 + 1;").plan_reused         # kept again
    with pytest.raises(ValueError):
        streamql.StatementCache(0)


def test_a_long_statement_is_not_kept():
    cache = streamql.StatementCache(8)
    engine = cached_engine(cache)
    text = "select '" + "x" * 5000 + "';"
    assert list(engine.query(text)) == ["x" * 5000]
    assert len(cache) == 0


def test_engines_sharing_a_cache_get_plans_right_for_their_own_signals():
    cache = streamql.StatementCache(64)
    first, second, third = cached_engine(cache), cached_engine(cache), cached_engine(cache)
    first.add_signal("battery", lambda: 87.5, type="Real")
    second.add_signal("battery", lambda: 12.0, type="Real")    # the same catalog: the plan is shared
    third.add_signal("battery", lambda: 3, type="Integer")     # another type: a plan of its own
    text = "select signal_value('battery');"
    assert list(first.query(text)) == [87.5]
    shared = second.query(text)
    assert shared.plan_reused and list(shared) == [12.0]       # its own signal's reading
    own = third.query(text)
    assert not own.plan_reused and [str(t) for t in own.types] == ["Integer"] and list(own) == [3]
    fourth = cached_engine(cache)                              # no such signal here
    with pytest.raises(QueryNameError):
        fourth.query(text)


def test_engines_sharing_a_cache_never_share_plans_that_use_their_definitions():
    cache = streamql.StatementCache(64)
    double, triple = cached_engine(cache), cached_engine(cache)
    double.execute("create function f(Integer x) -> Integer as x * 2;")
    triple.execute("create function f(Integer x) -> Integer as x * 3;")
    assert list(double.query("select f(5);")) == [10]
    result = triple.query("select f(5);")
    assert list(result) == [15] and not result.plan_reused


def test_per_edge_parameters_are_part_of_the_key():
    """A fleet fragment's per-edge values (`:edge_region` = region(e)) ride as session variables,
    bound as constants: each value its own plan, on one engine or several."""
    cache = streamql.StatementCache(64)
    engines = [cached_engine(cache) for _ in range(3)]
    for engine, region in zip(engines, ("EU", "US", "EU")):
        engine.store.session["edge_region"] = region
    text = "select :edge_region + '!';"
    assert [list(e.query(text)) for e in engines] == [["EU!"], ["US!"], ["EU!"]]


def test_frozen_values_compare_by_value_and_type():
    assert frozen_value(1) != frozen_value(1.0) != frozen_value(True)
    assert frozen_value([1, "a"]) == frozen_value([1, "a"])
    assert frozen_value(np.array([1.0, 2.0])) == frozen_value(np.array([1.0, 2.0]))
    assert frozen_value(np.array([1.0, 2.0])) != frozen_value(np.array([1, 2]))
    assert frozen_value(object()) is UNCACHEABLE
    assert frozen_value(np.zeros(100_000)) is UNCACHEABLE


def test_threads_sharing_a_small_cache_always_get_the_value_of_their_key():
    import threading
    cache = streamql.StatementCache(4)
    wrong, done = [], []

    def hammer(seed: int) -> None:
        for i in range(3000):
            key = (seed * 7 + i) % 11
            value, _ = cache.get_or_make(("k", key), lambda: key * 10)
            if value != key * 10:
                wrong.append((key, value))
        done.append(seed)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(done) == 8 and not wrong and len(cache) <= 4


def test_no_plan_is_kept_or_reused_inside_an_open_transaction():
    """Inside a statement's transaction the store may hold definitions its revision does not count
    yet: a plan compiled there is neither taken from the cache nor kept."""
    engine = cached_engine()
    engine.execute("create function f(Integer x) -> Integer as x * 2;")
    engine.execute("create function g(Integer x) -> Integer as x + 1;")
    assert list(engine.query("select f(3);")) == [6]
    with engine.store.transaction():
        engine.store.functions.pop("f")     # a change the revision does not count until commit
        with pytest.raises(QueryNameError):
            engine.query("select f(3);")

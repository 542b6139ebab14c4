"""Aggregates against numpy, and their partial/merge split: final(merge(partial(a), partial(b)))
equals the aggregate of a + b (how fleets aggregate across edges)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamql.library import default_library
from streamql.values import Bag

from core_support import new_engine

FAST = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

NUMPY = {
    "count": lambda a: len(a),
    "sum": lambda a: np.sum(a, axis=0) if len(a) else 0,
    "avg": lambda a: np.mean(a, axis=0) if len(a) else None,
    "mean": lambda a: np.mean(a, axis=0) if len(a) else None,
    "min": lambda a: np.min(a, axis=0) if len(a) else None,
    "max": lambda a: np.max(a, axis=0) if len(a) else None,
    "stdev": lambda a: np.std(a, axis=0, ddof=1) if len(a) > 1 else None,
    "var": lambda a: np.var(a, axis=0, ddof=1) if len(a) > 1 else None,
    "median": lambda a: np.median(a, axis=0) if len(a) else None,
    "m2": lambda a: np.sum((a - np.mean(a, axis=0)) ** 2, axis=0) if len(a) else None,
}
UNSPLIT = {"median", "m2"}   # computed where all the data is (m2 is itself a part of stdev's split)


def aggregate_overloads():
    return {o.name: o for o in default_library().all() if o.kind == "aggregate"}


def test_every_aggregate_has_an_oracle_and_all_but_median_a_split():
    overloads = aggregate_overloads()
    assert set(overloads) == set(NUMPY)
    assert {name for name, o in overloads.items() if o.split is None} == UNSPLIT
    assert overloads["avg"].split.parts == ("sum", "count")
    assert overloads["stdev"].split.parts == ("n", "mean", "M2")


def close(got, expected):
    if expected is None:
        return got is None
    return got is not None and np.allclose(np.asarray(got, dtype=float), np.asarray(expected, dtype=float),
                                           rtol=1e-9, atol=1e-9)


NUMBERS = st.lists(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), max_size=40)
INTEGERS = st.lists(st.integers(-10 ** 9, 10 ** 9), max_size=40)


@pytest.mark.parametrize("name", sorted(NUMPY))
@FAST
@given(a=NUMBERS, b=NUMBERS)
def test_aggregate_matches_numpy(name, a, b):
    fn = aggregate_overloads()[name]
    assert close(fn.scalar(Bag(a + b)), NUMPY[name](np.asarray(a + b)))


@pytest.mark.parametrize("name", sorted(n for n in NUMPY if n not in UNSPLIT))
@FAST
@given(a=NUMBERS, b=NUMBERS, c=NUMBERS)
def test_split_final_of_merged_partials_is_the_full_aggregate(name, a, b, c):
    split = aggregate_overloads()[name].split
    merged = split.merge(split.merge(split.partial(Bag(a)), split.partial(Bag(b))), split.partial(Bag(c)))
    assert close(split.final(merged), NUMPY[name](np.asarray(a + b + c)))
    # merging is order-independent
    other = split.merge(split.partial(Bag(c)), split.merge(split.partial(Bag(b)), split.partial(Bag(a))))
    assert close(split.final(other), split.final(merged))


@pytest.mark.parametrize("name", sorted(n for n in NUMPY if n not in UNSPLIT))
@FAST
@given(parts=st.lists(NUMBERS, max_size=5))
def test_the_parts_the_edges_compute_merge_into_the_full_aggregate(name, parts):
    """What a fleet does: each edge runs the split's edge aggregates over its rows (empty ones
    too), the federation merges those partials (merge_partials)."""
    overloads = aggregate_overloads()
    split = overloads[name].split
    partials = [tuple(overloads[agg].scalar(Bag(part)) for agg in split.edge_aggregates) for part in parts]
    assert len(split.edge_aggregates) == len(split.parts)
    expected = NUMPY[name](np.asarray([x for part in parts for x in part]))
    assert close(split.merged(partials), expected if expected is not None or name not in ("count", "sum")
                 else 0)


@pytest.mark.parametrize("name", ["count", "sum", "min", "max"])
@FAST
@given(a=INTEGERS, b=INTEGERS)
def test_split_of_integers_stays_exact(name, a, b):
    split = aggregate_overloads()[name].split
    got = split.final(split.merge(split.partial(Bag(a)), split.partial(Bag(b))))
    expected = NUMPY[name](np.asarray(a + b, dtype=np.int64))
    assert got == (None if expected is None else int(expected))


@pytest.mark.parametrize("name", sorted(n for n in NUMPY if n not in UNSPLIT))
@FAST
@given(st.lists(st.lists(st.floats(-100, 100, allow_nan=False), min_size=3, max_size=3), max_size=12),
       st.integers(0, 12))
def test_split_over_vector_rows_is_elementwise(name, rows, cut):
    if name == "count":
        return
    split = aggregate_overloads()[name].split
    a, b = rows[:cut], rows[cut:]
    part_a = split.partial(Bag([np.asarray(r) for r in a]))
    part_b = split.partial(Bag([np.asarray(r) for r in b]))
    expected = NUMPY[name](np.asarray(rows).reshape(-1, 3))
    assert close(split.final(split.merge(part_a, part_b)), expected)


@pytest.mark.parametrize("name", sorted(NUMPY))
def test_aggregates_skip_nulls(name):
    fn = aggregate_overloads()[name]
    assert close(fn.scalar(Bag([1.0, None, 3.0, None, 8.0])), NUMPY[name](np.asarray([1.0, 3.0, 8.0])))
    if fn.split is not None:
        merged = fn.split.merge(fn.split.partial(Bag([None, 1.0])), fn.split.partial(Bag([3.0, None, 8.0])))
        assert close(fn.split.final(merged), NUMPY[name](np.asarray([1.0, 3.0, 8.0])))


@pytest.mark.parametrize("name", sorted(NUMPY))
def test_aggregates_of_nothing(name):
    fn = aggregate_overloads()[name]
    expected = {"count": 0, "sum": 0}.get(name)
    assert fn.scalar(Bag([])) == expected
    assert fn.scalar(Bag([None, None])) == expected
    if fn.split is not None:
        empty = fn.split.merge(fn.split.partial(Bag([])), fn.split.partial(Bag([])))
        assert fn.split.final(empty) == expected


def test_min_and_max_of_strings_and_times():
    overloads = aggregate_overloads()
    assert overloads["min"].scalar(Bag(["b", "a", "c"])) == "a"
    assert overloads["max"].scalar(Bag(["b", "a", "c"])) == "c"
    split = overloads["max"].split
    assert split.final(split.merge(split.partial(Bag(["b"])), split.partial(Bag(["z", "a"])))) == "z"


# --------------------------------------------------------------------------- in queries
@pytest.mark.parametrize("name", sorted(NUMPY))
def test_aggregates_in_queries_match_numpy(name):
    data = np.random.default_rng(11).normal(size=5000)
    engine = new_engine()
    engine.add_signal("s", data)
    engine.execute("set :data = vectorof(first_n(signal_stream('s'), 5000));")
    over_rows = list(engine.query(f"select {name}(x) from Real x where x in :data;"))
    over_bag = list(engine.query(f"select {name}(select x from Real x where x in :data);"))
    expected = NUMPY[name](data)
    assert close(over_rows[0], expected), over_rows
    assert close(over_bag[0], expected), over_bag


@pytest.mark.parametrize("name", sorted(NUMPY))
def test_grouped_aggregates_match_numpy(name):
    rng = np.random.default_rng(12)
    keys, values = rng.integers(0, 5, size=3000), rng.normal(size=3000)
    engine = new_engine()
    engine.add_signal("k", keys)
    engine.add_signal("v", values)
    engine.execute("set :k = vectorof(signal_stream('k')); set :v = vectorof(signal_stream('v'));")
    rows = list(engine.query(f"select :k[i], {name}(:v[i]) from Integer i where i in iota(1, 3000) group by :k[i];"))
    assert len(rows) == 5
    for key, got in rows:
        assert close(got, NUMPY[name](values[keys == key])), (key, got)


def test_count_star_and_count_of_a_column_differ_on_nulls():
    engine = new_engine()
    engine.execute("create table T(a Integer, b Real); insert into T values (1, 2.0), (2, null), (3, null);")
    assert list(engine.query("select count(*), count(t.b), sum(t.b), avg(t.a) from T t;")) == [(3, 1, 2.0, 2.0)]


def test_sample_statistics_use_n_minus_one():
    engine = new_engine()
    rows = list(engine.query("select stdev(x), var(x) from Integer x where x in iota(1, 4);"))
    assert rows == [pytest.approx((np.std([1, 2, 3, 4], ddof=1), np.var([1, 2, 3, 4], ddof=1)))]
    rows = list(engine.query("select stdev([1, 2, 3, 4]), var([1, 2, 3, 4]);"))
    assert rows == [pytest.approx((np.std([1, 2, 3, 4], ddof=1), np.var([1, 2, 3, 4], ddof=1)))]

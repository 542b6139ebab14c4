"""Numeric and vector functions against numpy: on numbers, elementwise on vectors, and over
columns (a bag's batch path) — the three must agree — plus the contract's number rules."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamql

from core_support import new_engine

FAST = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

ROUND = lambda x: np.sign(x) * np.floor(np.abs(x) + 0.5)  # noqa: E731 - half away from zero

ELEMENTWISE = {
    "abs": np.abs, "sqrt": np.sqrt, "exp": np.exp, "log": np.log, "log10": np.log10, "sin": np.sin,
    "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan,
    "floor": np.floor, "ceil": np.ceil, "round": ROUND, "sign": np.sign,
}

VALUES = st.lists(st.floats(-50, 50, allow_nan=False).map(lambda x: round(x, 3) + 0.0), min_size=1, max_size=20)
# (+ 0.0 turns -0.0 into 0.0: negative zero has its own test below)


def engine_with(values) -> "streamql.Engine":
    engine = new_engine()
    engine.execute(f"set :v = [{', '.join(repr(float(x)) for x in values)}];")
    return engine


def assert_same(got, expected):
    np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(expected, dtype=float),
                               rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
@FAST
@given(values=VALUES)
def test_elementwise_on_vectors_numbers_and_columns(name, values):
    with np.errstate(all="ignore"):
        expected = ELEMENTWISE[name](np.asarray(values))
    engine = engine_with(values)
    on_vector = list(engine.query(f"select {name}(:v);"))[0]
    on_numbers = [list(engine.query(f"select {name}({x!r});"))[0] for x in values[:3]]
    on_column = list(engine.query(f"select vector of {name}(x) from Real x where x in :v;"))[0]
    assert_same(on_vector, expected)
    assert_same(on_numbers, expected[:3])
    assert_same(on_column, expected)


@FAST
@given(VALUES, VALUES)
def test_binary_functions_elementwise(a, b):
    n = min(len(a), len(b))
    a, b = np.asarray(a[:n]), np.asarray(b[:n])
    engine = new_engine()
    engine.execute(f"set :a = {list(a.tolist())}; set :b = {list(b.tolist())};")
    with np.errstate(all="ignore"):
        checks = {
            "atan2(:a, :b)": np.arctan2(a, b),
            ":a + :b": a + b, ":a - :b": a - b, ":a .* :b": a * b, ":a ./ :b": a / b,
            "abs(:a) .^ 0.5": np.abs(a) ** 0.5,
            "power(abs(:a), 1.5)": np.abs(a) ** 1.5,
            ":a * 2": a * 2, "3 - :a": 3 - a, ":a / 4": a / 4,
            "roundto(:a, 1)": np.sign(a) * np.floor(np.abs(a) * 10 + 0.5) / 10,
            "-:a": -a,
        }
        for text, expected in checks.items():
            assert_same(list(engine.query(f"select {text};"))[0], expected)
        assert list(engine.query("select :a * :b;"))[0] == pytest.approx(float(a @ b), rel=1e-12, abs=1e-9)


@FAST
@given(VALUES, VALUES)
def test_binary_functions_over_columns(a, b):
    n = min(len(a), len(b))
    engine = new_engine()
    engine.execute(f"set :a = {a[:n]}; set :b = {b[:n]};")
    a, b = np.asarray(a[:n]), np.asarray(b[:n])
    rows = list(engine.query("select :a[i] % :b[i], mod(:a[i], :b[i]), max_of(:a[i], :b[i]), min_of(:a[i], :b[i]), "
                             ":a[i] ^ 2, atan2(:a[i], :b[i]) from Integer i where i in iota(1, dim(:a)) order by i;"))
    with np.errstate(all="ignore"):
        expected = list(zip(np.fmod(a, b), np.fmod(a, b), np.maximum(a, b), np.minimum(a, b), a ** 2.0, np.arctan2(a, b)))
    assert_same(rows, expected)


@FAST
@given(st.lists(st.integers(-10 ** 6, 10 ** 6), min_size=1, max_size=20), st.integers(-1000, 1000).filter(bool))
def test_integer_remainder_takes_the_sign_of_the_dividend(values, divisor):
    engine = new_engine()
    engine.execute(f"set :v = {values};")
    expected = [int(math.fmod(v, divisor)) for v in values]
    assert list(engine.query(f"select vector of x % {divisor} from Integer x where x in :v;"))[0].tolist() == expected
    assert [list(engine.query(f"select {v} % {divisor};"))[0] for v in values[:3]] == expected[:3]
    assert [list(engine.query(f"select mod({v}, {divisor});"))[0] for v in values[:3]] == expected[:3]


@FAST
@given(st.lists(st.integers(-3 * 10 ** 9, 3 * 10 ** 9), min_size=1, max_size=10),
       st.lists(st.integers(-3 * 10 ** 9, 3 * 10 ** 9), min_size=1, max_size=10))
def test_integer_arithmetic_is_exact_or_an_overflow_error(a, b):
    engine = new_engine()
    engine.execute(f"set :a = {a}; set :b = {b};")
    for op, fn in (("+", lambda x, y: x + y), ("-", lambda x, y: x - y), ("*", lambda x, y: x * y)):
        expected = [fn(x, y) for x in a for y in b]
        query = f"select vector of x {op} y from Integer x, Integer y where x in :a and y in :b;"
        if all(-2 ** 63 <= v < 2 ** 63 for v in expected):
            assert list(engine.query(query))[0].tolist() == expected
        else:
            with pytest.raises(streamql.QueryError) as info:
                list(engine.query(query))
            assert "overflow" in info.value.message


def test_integer_overflow_is_an_error_on_every_path():
    engine = new_engine()
    for text in ("select 9223372036854775807 + 1;", "select -9223372036854775807 - 2;",
                 "select 3037000500 * 3037000500;", "select abs(-9223372036854775807 - 1);",
                 "select x * x from Integer x where x in iota(3037000499, 3037000500);",
                 "select x + 9223372036854775800 from Integer x where x in iota(1, 10);",
                 "select sum(x) from Integer x where x in bag(9223372036854775807, 1);",
                 "select sum(bag(9223372036854775807, 1));", "select sum([9223372036854775807, 1]);",
                 "select cumsum([9223372036854775807, 1, -5]);",
                 "select sum(w) from Vector of Integer w where w in bag([9223372036854775807, 1], [1, 2]);"):
        with pytest.raises(streamql.QueryError) as info:
            list(engine.query(text))
        assert info.value.kind == "RuntimeError" and "overflow" in info.value.message, text
    assert list(engine.query("select x * x from Integer x where x = 3037000499;")) == [3037000499 ** 2]
    assert list(engine.query("select sum([9223372036854775807, 1, -5]);")) == [9223372036854775803]


def test_negative_zero_is_its_own_constant():
    """0.0 = -0.0 in Python, but atan2 and division tell them apart: a rewrite that shares
    'equal' expressions must not merge atan2(0.0, x) with atan2(-0.0, x)."""
    engine = new_engine()
    assert list(engine.query("select atan2(0.0, -1.0), atan2(-0.0, -1.0);")) == [(math.pi, -math.pi)]
    rows = list(engine.query("select atan2(0.0, x), atan2(-0.0, x) from Real x where x in bag(-1.0, -2.0);"))
    assert rows == [(math.pi, -math.pi)] * 2


def test_power_gives_real_and_division_gives_real():
    engine = new_engine()
    assert list(engine.query("select 2 ^ 2, 4 / 2, power(2, 2);")) == [(4.0, 2.0, 4.0)]
    result = engine.query("select 2 ^ 2, 4 / 2, 7 % 2, 7 + 2;")
    assert [str(t) for t in result.types] == ["Real", "Real", "Integer", "Integer"]


@pytest.mark.parametrize("x,expected", [(0.5, 1.0), (1.5, 2.0), (2.5, 3.0), (-0.5, -1.0), (-1.5, -2.0), (-2.5, -3.0),
                                        (2.4999, 2.0), (1e15 + 0.5, 1e15 + 1), (0.49999999999999994, 0.0),
                                        (-0.49999999999999994, -0.0), (4503599627370497.0, 4503599627370497.0),
                                        (1e300, 1e300)])
def test_round_half_away_from_zero(x, expected):
    engine = new_engine()
    assert list(engine.query(f"select round({x!r});")) == [expected]
    assert list(engine.query(f"select round([{x!r}]);"))[0].tolist() == [expected]
    if abs(expected) < 2 ** 63:
        assert list(engine.query(f"select cast({x!r} as Integer);")) == [int(expected)]


@pytest.mark.parametrize("text", ["cast(1e300 as Integer)", "cast('1e30' as Integer)",
                                  "cast('99999999999999999999' as Integer)", "cast(9.3e18 as Integer)"])
def test_cast_to_integer_out_of_range_is_an_overflow(text):
    engine = new_engine()
    with pytest.raises(streamql.QueryError) as info:
        list(engine.query(f"select {text};"))
    assert info.value.kind == "RuntimeError" and "overflow" in info.value.message


def test_indexing_is_one_based_and_slices_inclusive():
    engine = new_engine()
    engine.execute("set :v = [10, 20, 30, 40];")
    assert list(engine.query("select :v[1], :v[4], argmin(:v), argmax(:v);")) == [(10, 40, 1, 4)]
    assert list(engine.query("select :v[2:3];"))[0].tolist() == [20, 30]
    assert list(engine.query("select :v[1:4];"))[0].tolist() == [10, 20, 30, 40]
    assert list(engine.query("select range(2, 5), range(-1, 1);"))[0][0].tolist() == [2, 3, 4, 5]
    for bad in ("select :v[0];", "select :v[5];", "select :v[-1];"):
        with pytest.raises(streamql.QueryError) as info:
            list(engine.query(bad))
        assert "out of range" in info.value.message
    rows = list(engine.query("select i, :v[i] from Integer i where i in iota(1, 4) order by i;"))
    assert rows == [(1, 10), (2, 20), (3, 30), (4, 40)]
    with pytest.raises(streamql.QueryError):
        list(engine.query("select :v[i] from Integer i where i in iota(0, 4);"))


@FAST
@given(st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=30), st.floats(0, 100))
def test_vector_functions_match_numpy(values, p):
    v = np.asarray(values)
    engine = new_engine()
    engine.execute(f"set :v = {values};")
    row = list(engine.query(f"select sum(:v), mean(:v), avg(:v), median(:v), min(:v), max(:v), argmin(:v), argmax(:v), "
                            f"rms(:v), norm(:v), dot(:v, :v), percentile(:v, {p!r}), dim(:v), length(:v);"))[0]
    expected = (v.sum(), v.mean(), v.mean(), np.median(v), v.min(), v.max(), np.argmin(v) + 1, np.argmax(v) + 1,
                np.sqrt(np.mean(v * v)), np.linalg.norm(v), v @ v, np.percentile(v, p), len(v), len(v))
    assert_same(row, expected)
    vectors = list(engine.query("select diff(:v), cumsum(:v), rfft(:v), concat(:v, [1]), normalize(:v);"))[0]
    with np.errstate(all="ignore"):
        for got, want in zip(vectors, (np.diff(v), np.cumsum(v), np.abs(np.fft.rfft(v)), np.append(v, 1), v / np.linalg.norm(v))):
            assert_same(got, want)
    if len(v) > 1:
        assert_same(list(engine.query("select stdev(:v), var(:v);"))[0], (np.std(v, ddof=1), np.var(v, ddof=1)))
    else:
        assert all(math.isnan(x) or x is None for x in list(engine.query("select stdev(:v), var(:v);"))[0])


def test_matrix_functions():
    engine = new_engine()
    m = np.arange(6.0).reshape(2, 3)
    engine.execute("set :m = [[0, 1, 2], [3, 4, 5]];")
    assert list(engine.query("select transpose(:m);"))[0].tolist() == m.T.tolist()
    assert list(engine.query("select flatten(:m);"))[0].tolist() == m.reshape(-1).tolist()
    assert list(engine.query("select dim(:m), :m[2][3];")) == [(2, 5)]
    with pytest.raises(streamql.QueryError):
        list(engine.query("select transpose([1, 2]);"))


def test_empty_vectors():
    engine = new_engine()
    assert list(engine.query("select dim(zeros(0)), sum(zeros(0)), mean(zeros(0)), max(zeros(0)), argmax(zeros(0));")) == [
        (0, 0.0, None, None, None)]


def test_zeros_ones_and_typed_arrays():
    engine = new_engine()
    row = list(engine.query("select zeros(3), ones(2), array('f32', [1.5, 2]), array('i16', [1, -2]), "
                            "array('i32', [7]), array('f64', [0.25]), array('i8', [-128]);"))[0]
    assert [a.dtype for a in row] == [np.float64, np.float64, np.float32, np.int16, np.int32, np.float64, np.int8]
    assert [a.tolist() for a in row] == [[0, 0, 0], [1, 1], [1.5, 2.0], [1, -2], [7], [0.25], [-128]]
    for bad in ("select array('i8', [128]);", "select array('u8', [-1]);", "select array('i16', [1.5]);"):
        with pytest.raises(streamql.QueryError):
            list(engine.query(bad))


def test_frand_is_seeded_and_in_range():
    def draws(seed):
        engine = streamql.Engine(seed=seed)
        return [list(engine.query("select frand();"))[0] for _ in range(3)] + \
            list(engine.query("select frand(5, 6) from Integer i where i in iota(1, 3);"))
    a, b, c = draws(1), draws(1), draws(2)
    assert a == b and a != c
    assert all(0 <= x < 1 for x in a[:3]) and all(5 <= x < 6 for x in a[3:])
    assert len(set(a[3:])) == 3  # a volatile call is computed for each row, not once


def test_frand_is_never_folded_or_shared():
    engine = streamql.Engine(seed=3)
    row = list(engine.query("select frand(), frand(), frand() + 0;"))[0]
    assert len(set(row)) == 3
    overloads = [o for o in engine.library.all() if o.name in ("frand", "now", "signal_value", "heartbeat")]
    assert overloads and all(o.volatile for o in overloads)
    assert all(o.volatile for o in engine.library.all() if o.kind == "source")


def test_apply_and_reduce():
    engine = new_engine()
    assert list(engine.query("select apply(#'atan2', [1, 1]), apply(#'dim', [[1, 2, 3]]);")) == [(math.pi / 4, 3)]
    assert list(engine.query("select reduce(#'+', [1, 2, 3, 4], 0), reduce(#'max_of', [3.5, 9, 2], -1);")) == [(10, 9)]
    with pytest.raises(streamql.QueryError):
        list(engine.query("select apply(#'no_such_function', [1]);"))
    with pytest.raises(streamql.QueryError):
        list(engine.query("select apply(#'sqrt', ['x']);"))


def test_pi_and_simsig():
    engine = new_engine()
    assert list(engine.query("select pi(), simsig(0.5);")) == [(math.pi, math.sin(0.5) + math.sin(1.55) / 3)]


def test_real_arithmetic_on_columns_is_quiet_ieee():
    """nan and inf as numpy gives them, without RuntimeWarnings leaking to the user's console."""
    import warnings
    engine = new_engine()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = list(engine.query("select x % 0.0, x / 0.0, sqrt(-x), log(x - 1), x ^ 2000, exp(x * 1000) "
                                 "from Real x where x in bag(1.0, 2.0) order by x;"))
    assert math.isnan(rows[0][0]) and rows[0][1] == math.inf and math.isnan(rows[0][2])
    assert rows[0][3] == -math.inf and rows[1][4] == math.inf and rows[1][5] == math.inf

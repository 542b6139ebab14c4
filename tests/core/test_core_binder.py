"""The binder and type checker: result types, lifting, generators versus tests, and errors that
point at the offending expression — all before anything runs."""
from __future__ import annotations

import pytest

import streamql
from streamql.binder import Binder

from core_support import new_engine


def types_of(engine, text: str) -> list[str]:
    return [str(t) for t in engine.query(text).types]


def error_of(engine, text: str) -> streamql.QueryError:
    with pytest.raises(streamql.QueryError) as info:
        engine.query(text)
    return info.value


@pytest.mark.parametrize("expr,expected", [
    ("1 + 2", "Integer"), ("1 + 2.0", "Real"), ("7 / 7", "Real"), ("7 % 2", "Integer"), ("2 ^ 2", "Real"),
    ("'a' + 'b'", "Charstring"), ("1 < 2", "Boolean"), ("[1, 2]", "Vector of Integer"), ("[1, 2.5]", "Vector of Real"),
    ("[[1], [2]]", "Vector of Vector of Integer"), ("sqrt(siota(1, 5))", "Stream of Real"),
    ("siota(1, 5) * 2", "Stream of Integer"), ("iota(1, 3)", "Bag of Integer"), ("sqrt([1, 4])", "Vector of Real"),
    ("abs([1, -2])", "Vector of Integer"), ("winagg(siota(1, 9), 3, 3)", "Stream of Vector of Integer"),
    ("now()", "Time"), ("ts(1, 'x')", "Timeval of Charstring"), ("{\"a\": 1}", "Record"),
    ("signal_value('s')", "Object"), ("vectorof(siota(1, 3))", "Vector of Integer"),
    ("count(iota(1, 3))", "Integer"), ("avg(iota(1, 3))", "Real"), ("sum(iota(1, 3))", "Integer"),
    ("max(bag('a', 'b'))", "Charstring"), ("cast(1 as Real)", "Real"), ("range(1, 3)", "Vector of Integer"),
    ("case when true then 1 else 2.5 end", "Real"), ("#'mean'", "Function"),
])
def test_expression_types(expr, expected):
    engine = new_engine()
    engine.add_signal("s", [1.0])
    result = engine.query(f"select {expr};")
    got = str(result.types[0])
    if expected.startswith(("Stream", "Bag")):
        # a selected stream or bag gives one row per element: the column has the element type
        assert result.kind in ("stream", "bag") and got == expected.split(" of ", 1)[1], got
    else:
        assert got == expected


def test_lifting_makes_a_query_continuous():
    engine = new_engine()
    result = engine.query("sqrt(siota(1, 10));")
    assert result.kind == "stream" and [str(t) for t in result.types] == ["Real"]
    assert engine.query("select x from Integer x where x in iota(1, 2);").kind == "bag"
    assert engine.query("select vector of x from Integer x where x in iota(1, 2);").kind == "vector"
    assert engine.query("select stream of x from Integer x where x in iota(1, 2);").kind == "stream"


def test_a_user_function_lifts_over_a_stream():
    engine = new_engine()
    engine.execute("create function twice(Number x) -> Number as x * 2;")
    assert list(engine.query("select twice(siota(1, 3));")) == [2, 4, 6]


@pytest.mark.parametrize("text,fragment,kind", [
    ("select 1 * 'a';", "1 * 'a'", "TypeError"),
    ("select x from Integer x where x in iota(1, 3) and x * 'a' > 1;", "x * 'a'", "TypeError"),
    ("select sqrt('a') from Integer x where x = 1;", "sqrt('a')", "TypeError"),
    ("select nothing_known(2);", "nothing_known(2)", "NameError"),
    ("select y + 1 from Integer x where x = 1;", "y", "NameError"),
    ("select x from Nothing x;", "Nothing", "NameError"),
    ("select x from Integer x where x in iota(1, 3) and (x = 1 or 'a');", "'a'", "TypeError"),
    ("select [1, 2][1] - 'a';", "[1, 2][1] - 'a'", "TypeError"),
    ("select avg(siota(1, 3));", "avg(siota(1, 3))", "TypeError"),
    ("select case when 1 then 2 end;", "1", "TypeError"),
])
def test_errors_point_at_the_offending_expression(text, fragment, kind):
    engine = new_engine()
    error = error_of(engine, text)
    assert error.kind == kind
    start = error.span.start
    assert text[start:error.span.end] == fragment, (text[start:error.span.end], error.message)


def test_a_multi_line_statement_reports_the_right_line():
    engine = new_engine()
    text = "select x\nfrom Integer x\nwhere x in iota(1, 3)\n  and x = 'three';"
    error = error_of(engine, text)
    assert error.line == 4 and error.column == 7
    assert "x = 'three'" in error.excerpt.splitlines()[0]


def test_errors_suggest_close_names():
    engine = new_engine()
    assert "did you mean sqrt" in error_of(engine, "select sqr(4);").message
    assert "did you mean Integer" in error_of(engine, "select x from Intger x where x = 1;").message
    engine.execute("create function fahrenheit(Number c) -> Real as c;")
    assert "did you mean fahrenheit" in error_of(engine, "select farenheit(1);").message


def test_type_errors_are_raised_before_anything_runs():
    engine = new_engine()
    calls = []
    engine.add_signal("s", lambda: calls.append(1) or 1.0)
    error_of(engine, "select stream of x - 'a' from Real x where x in signal_stream('s');")
    assert calls == []


def test_generators_come_first_whatever_the_order():
    engine = new_engine()
    rows = sorted(engine.query("select x, y from Integer x, Integer y where x < y and y in iota(1, 3) "
                               "and x in iota(1, 3);"))
    assert rows == [(1, 2), (1, 3), (2, 3)]


def test_in_and_equals_generate_or_test():
    engine = new_engine()
    # x = 2 binds x; then x in iota(1, 3) tests it
    assert list(engine.query("select x from Integer x where x in iota(1, 3) and x = 2;")) == [2]
    assert list(engine.query("select x from Integer x where x = 2 and x in iota(5, 6);")) == []
    # y = x + 1 binds y from x
    assert sorted(engine.query("select y from Integer x, Integer y where x in iota(1, 2) and y = x + 1;")) == [2, 3]
    # x = a bag binds each element; v = a vector binds the whole vector
    assert sorted(engine.query("select x from Integer x where x = iota(1, 2);")) == [1, 2]
    assert [list(v) for v in engine.query("select v from Vector of Integer v where v = [1, 2];")] == [[1, 2]]
    # a declared type narrows what a generator binds
    assert error_of(engine, "select x from Integer x where x in bag('a');").kind == "TypeError"


def test_objects_extent_is_scanned_when_nothing_binds_the_variable():
    engine = new_engine()
    engine.execute("create type P properties (n Integer); create P (n) instances (1), (2);")
    assert sorted(engine.query("select n(p) from P p;")) == [1, 2]
    assert sorted(engine.query("select n(p) from P p where n(p) > 1;")) == [2]


def test_object_typed_values_narrow_at_run_time_naming_the_variable():
    engine = new_engine()
    engine.add_signal("mixed", ["a", 1.5])
    result = engine.query("select x from Charstring x where x in signal_stream('mixed');")
    with pytest.raises(streamql.QueryError) as info:
        list(result)
    assert info.value.kind == "RuntimeError"
    assert "variable x" in info.value.message and "Charstring" in info.value.message


def test_binder_works_on_a_catalog_without_running():
    engine = new_engine()
    binder = Binder(engine.catalog, "select sqrt(x) from Integer x where x in iota(1, 3);")
    query = binder.bind_statement_query(streamql.parse_one("select sqrt(x) from Integer x where x in iota(1, 3);"))
    assert str(query.items[0][1].type) == "Real" and query.kind == "bag"


def test_aggregate_and_vector_function_of_the_same_name():
    engine = new_engine()
    assert list(engine.query("select mean(w) from Vector of Integer w where w = [1, 2, 3];")) == [2.0]
    assert list(engine.query("select mean(x) from Integer x where x in iota(1, 3);")) == [2.0]
    assert list(engine.query("select mean(select x from Integer x where x in iota(1, 3));")) == [2.0]
    assert list(engine.query("select mean([1, 2]);")) == [1.5]


def test_recursion_is_refused():
    engine = new_engine()
    engine.execute("create function f(Number x) -> Number as x;")
    engine.execute("drop function f;")
    error = error_of(engine, "select f(1);")
    assert error.kind == "NameError"

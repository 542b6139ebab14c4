"""Python foreign functions (`as foreign 'py:…'`): resolved only against the operator's allow-list
or callables the embedding program registered; numpy arrays in, results checked, errors placed."""
from __future__ import annotations

import numpy as np
import pytest

import streamql

import osql_foreign_helpers as helpers

ALLOWED = ["osql_foreign_helpers.*"]


def test_an_allowed_function_gets_numpy_arrays_and_its_result_is_checked():
    engine = streamql.Engine(foreign=ALLOWED)
    engine.execute("create function scale(Vector of Real v, Real k) -> Vector of Real "
                   "as foreign 'py:osql_foreign_helpers.scale';"
                   "create function norm(Array of F32 v) -> Real as foreign 'py:osql_foreign_helpers.norm';")
    helpers.SEEN.clear()
    [row] = list(engine.query("scale([1, 2, 3], 2);"))
    assert np.array_equal(row, np.array([2.0, 4.0, 6.0]))
    assert helpers.SEEN == [np.ndarray]
    assert list(engine.query("norm(array('f32', [3, 4]));")) == [5.0]
    assert list(engine.query("select norm(scale(v, 2)) from Vector of Real v where v in bag([3, 4], [0, 1]);")) \
        == [10.0, 2.0]


def test_a_function_not_on_the_allow_list_is_refused_at_its_name():
    engine = streamql.Engine()   # no allow-list: a program's engine allows no Python function by default
    text = "create function f(Real x) -> Real\n  as foreign 'py:osql_foreign_helpers.scale';"
    with pytest.raises(streamql.QueryError) as info:
        engine.execute(text)
    assert info.value.kind == "RuntimeError" and "allow-list" in info.value.message
    assert (info.value.line, info.value.column) == (2, 6)
    assert not engine.store.user_functions("f")
    with pytest.raises(streamql.QueryError, match="allow-list"):
        streamql.Engine(foreign=["other.*"]).execute("create function g(Real x) -> Real "
                                                     "as foreign 'py:os.system';")


def test_a_registered_callable_needs_no_allow_list():
    engine = streamql.Engine()
    engine.register_foreign("mine.twice", lambda x: 2 * x)
    engine.execute("create function twice(Number x) -> Number as foreign 'py:mine.twice';")
    assert list(engine.query("twice(21);")) == [42]


def test_a_python_exception_is_a_query_error_with_the_call_position():
    engine = streamql.Engine(foreign=ALLOWED)
    engine.execute("create function fail(Real x) -> Real as foreign 'py:osql_foreign_helpers.fail';")
    with pytest.raises(streamql.QueryError) as info:
        list(engine.query("select 1 + fail(3);"))
    assert info.value.kind == "RuntimeError"
    assert "ValueError: cannot handle 3" in info.value.message
    assert (info.value.line, info.value.column) == (1, 12)


def test_a_result_of_the_wrong_type_is_a_type_error():
    engine = streamql.Engine(foreign=ALLOWED)
    engine.execute("create function wrong(Real x) -> Real as foreign 'py:osql_foreign_helpers.wrong';")
    with pytest.raises(streamql.QueryError) as info:
        list(engine.query("wrong(1);"))
    assert info.value.kind == "TypeError" and "declared to return Real" in info.value.message


def test_targets_that_are_not_python_functions_are_refused():
    engine = streamql.Engine(foreign=ALLOWED + ["nosuchmodule.*"])
    for target, message in (("lisp:foo", "Python"), ("py:osql_foreign_helpers.NOT_CALLABLE", "not a function"),
                            ("py:nosuchmodule.f", "cannot be loaded")):
        with pytest.raises(streamql.QueryError, match=message):
            engine.execute(f"create function h(Real x) -> Real as foreign '{target}';")


def test_an_engine_for_other_peoples_statements_resolves_none():
    # a federation's and an edge's engines are built without an allow-list unless the operator gives one
    engine = streamql.Engine(files=None)
    with pytest.raises(streamql.QueryError, match="allow-list"):
        engine.execute("create function f(Real x) -> Real as foreign 'py:osql_foreign_helpers.scale';")


def test_a_store_reopens_when_its_foreign_target_left_the_allow_list(tmp_path):
    store = tmp_path / "store"
    engine = streamql.Engine(store_dir=store, foreign=ALLOWED)
    engine.execute("create function norm(Vector of Real v) -> Real as foreign 'py:osql_foreign_helpers.norm';"
                   "create function twice_norm(Vector of Real v) -> Real as 2 * norm(v);"
                   "create type Probe; create function level(Probe p) -> Integer as stored;"
                   "create Probe(level) instances :p (7);")
    assert list(engine.query("twice_norm([3, 4]);")) == [10.0]
    engine.save()
    engine.close()

    refused = streamql.Engine(store_dir=store)          # the operator took it off the allow-list
    assert [f.name for f in refused.store.user_functions("norm")] == ["norm"]
    assert list(refused.query("select level(p) from Probe p;")) == [7]   # the rest of the store is there
    for text in ("norm([3, 4]);", "twice_norm([3, 4]);"):
        with pytest.raises(streamql.QueryError) as info:
            list(refused.query(text))
        assert info.value.kind == "RuntimeError" and info.value.line is not None
        assert "norm cannot be called" in info.value.message and "allow-list" in info.value.message
    refused.save()                                       # saving keeps the definition for later
    refused.close()

    allowed_again = streamql.Engine(store_dir=store, foreign=ALLOWED)
    assert list(allowed_again.query("twice_norm([3, 4]);")) == [10.0]

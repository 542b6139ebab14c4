"""Per-query memory limits: the state a query's operators hold (the inputs of a group by or order
by, the keys distinct has seen, the elements waiting for their window) is accounted in its context,
a query whose state passes `memory_mb` stops with a LimitError, and what it held is released."""
from __future__ import annotations

import numpy as np
import pytest

import streamql
from streamql.streams import Limits
from streamql import QueryLimitError

MB = 1e6

pytestmark = pytest.mark.timeout(120)   # a limit that failed to stop a query must not hang the suite


@pytest.fixture
def engine():
    return streamql.Engine()


def run(result) -> list:
    try:
        return list(result)
    finally:
        result.close()


def stopped_for_memory(engine, text: str, memory_mb: float) -> QueryLimitError:
    result = engine.query(text, limits={"memory_mb": memory_mb})
    with pytest.raises(QueryLimitError) as caught:
        run(result)
    assert "memory limit" in str(caught.value)
    assert result.ctx.state_bytes == 0          # everything held was released on the way out
    return caught.value


@pytest.mark.parametrize("text", [
    # a group by over five million
    "select x, count(*) from Integer x where x in iota(1, 5000000) group by x;",
    # sorting a bag of five million
    "select x from Integer x where x in iota(1, 5000000) order by x desc;",
    # distinct keeps every key it has seen
    "select distinct x from Integer x where x in siota(1, 1000000000);",
    # a window of 50 million readings, unfused and fused
    "select stream of dim(w) from Vector of Real w where w in winagg(siota(1, 1000000000), 50000000, 1);",
    "select stream of mean(w) from Vector of Real w where w in winagg(siota(1, 1000000000), 50000000, 50000000);",
    # time windows of a day over readings a microsecond apart
    "select stream of dim(value(w)) from Timeval w "
    "where w in twinagg((select stream of ts(x / 1000000.0, x) from Integer x where x in siota(1, 1000000000)), "
    "86400, 86400);",
])
def test_state_past_the_memory_limit_stops_the_query(engine, text):
    error = stopped_for_memory(engine, text, 4)
    assert error.kind == "LimitError"


def test_the_same_queries_within_their_limit_answer_like_numpy(engine):
    data = np.random.default_rng(3).normal(size=20_000)
    engine.add_signal("s", data)
    rows = run(engine.query("select x from Real x where x in iota(1, 20000) order by x desc;",
                            limits={"memory_mb": 4}))
    assert rows == list(range(20000, 0, -1))
    means = run(engine.query("select stream of mean(w) from Vector of Real w where w in winagg(signal_stream('s'), "
                             "1000, 1000);", limits={"memory_mb": 4}))
    np.testing.assert_allclose(means, data.reshape(20, 1000).mean(axis=1))


def test_peak_state_is_about_one_window_not_the_stream(engine):
    # 5 million readings (40 MB) through windows of 10,000: the state holds less than a window
    result = engine.query("select stream of dim(w) from Vector of Real w "
                          "where w in winagg(siota(1, 5000000), 10000, 10000);", limits={"memory_mb": 64})
    assert len(run(result)) == 500
    assert 0 < result.ctx.peak_state_bytes <= 10_000 * 8
    assert result.ctx.state_bytes == 0


def test_a_released_query_does_not_count_against_the_next(engine):
    text = "select x from Integer x where x in iota(1, 100000) order by x;"
    for _ in range(3):
        result = engine.query(text, limits={"memory_mb": 2})
        assert len(run(result)) == 100_000


def test_the_limit_applies_to_background_queries_too(engine):
    handle = engine.start("select distinct x from Integer x where x in siota(1, 1000000000);",
                          limits={"memory_mb": 2})
    handle.wait(30)
    assert isinstance(handle.error, QueryLimitError)


def test_limits_set_after_compiling_are_watched(engine):
    # the edge compiles a fragment, then applies the limits the federation sent
    result = engine.query("select x, count(*) from Integer x where x in iota(1, 5000000) group by x;")
    result.ctx.limits = Limits(memory_mb=3)
    with pytest.raises(QueryLimitError):
        run(result)

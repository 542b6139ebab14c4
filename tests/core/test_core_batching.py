"""Adaptive batching: recorded data flows in large numpy batches; a live sensor's single reading is
answered at once, without waiting for a batch to fill, on the scalar path (plain Python values,
no numpy per reading); a burst of readings that arrived together is one numpy batch."""
from __future__ import annotations

import queue
import threading

import numpy as np
import pytest

import streamql
from streamql.batch import IDLE
from streamql.physical.chunk import Chunk
from streamql.signals import LiveSignal

pytestmark = pytest.mark.timeout(60)

QUERY = "select stream of x * 2 from Real x where x in signal_stream('t') and x > 0;"


def pulled(result) -> queue.Queue:
    """The result's items (idle ticks skipped), pulled in a thread as they come."""
    items: queue.Queue = queue.Queue()

    def pull():
        try:
            for item in result.items():
                if item is not IDLE:
                    items.put(item)
        except streamql.QueryCancelled:    # closed by the test
            pass

    threading.Thread(target=pull, daemon=True).start()
    return items


def test_a_single_live_reading_is_answered_at_once_on_the_scalar_path():
    engine = streamql.Engine()
    sensor = LiveSignal("t")
    engine.add_signal("t", sensor)
    result = engine.query(QUERY)
    items = pulled(result)
    try:
        sensor.push(1.5)
        first = items.get(timeout=10)              # one reading: no batch to fill first
        assert type(first) is dict and type(first["$c0"]) is float and first["$c0"] == 3.0
        sensor.push(-1.0)                          # filtered out
        sensor.push(4.0)
        second = items.get(timeout=10)
        assert type(second) is dict and second["$c0"] == 8.0
        sensor.push_batch(np.array([1.0, -2.0, 3.0]))   # arrived together: one numpy batch
        burst = items.get(timeout=10)
        assert type(burst) is Chunk and isinstance(burst["$c0"], np.ndarray)
        np.testing.assert_array_equal(burst["$c0"], [2.0, 6.0])
    finally:
        result.close()


def test_recorded_data_flows_in_large_batches():
    engine = streamql.Engine()
    data = np.random.default_rng(5).normal(size=200_000)
    engine.add_signal("t", data)
    result = engine.query(QUERY)
    chunks = [item for item in result.items() if item is not IDLE]
    assert all(type(c) is Chunk for c in chunks)
    assert len(chunks) <= 200_000 // 4096 + 1          # thousands of readings per batch, not one each
    np.testing.assert_allclose(np.concatenate([c["$c0"] for c in chunks]), data[data > 0] * 2)


def test_an_iterator_is_read_one_reading_at_a_time():
    engine = streamql.Engine()
    engine.add_signal("t", iter([1.0, -1.0, 2.5]))
    items = [item for item in engine.query(QUERY).items() if item is not IDLE]
    assert items == [{"$c0": 2.0}, {"$c0": 5.0}] and all(type(i) is dict for i in items)

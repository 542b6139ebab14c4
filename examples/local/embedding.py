"""StreamQL embedded in a plain Python program: signals from numpy arrays and callables, queries
as iterators, a continuous query in the background with a callback, and a saved store.

    python examples/local/embedding.py
"""
from __future__ import annotations

import itertools
import math
import tempfile
import time

import numpy as np

import streamql


def main() -> None:
    engine = streamql.Engine(seed=7)

    # A recorded signal (replayed in batches) and a live one (a callable polled every 10 ms).
    engine.add_signal("vibration", np.random.default_rng(1).normal(0, 1, 100_000))
    ticks = itertools.count()
    engine.add_signal("temperature", lambda: -20 + math.sin(next(ticks) / 50), period=0.01)

    engine.execute("""
        create function fahrenheit(Number c) -> Real as c * 9 / 5 + 32;
        create type Machine properties (name Charstring key, site Charstring);
        create Machine (name, site) instances ('press-1', 'north'), ('press-2', 'south');
    """)

    # A bag query: rows are plain values (one column) or tuples (several).
    print(sorted(engine.query("select name(m), site(m) from Machine m;")))

    # A window query over the recorded signal: computed in batches with numpy.
    loud = list(engine.query("select stream of rms(w) from Vector of Real w "
                             "where w in winagg(signal_stream('vibration'), 1000, 1000) and rms(w) > 1.02;"))
    print(f"{len(loud)} loud windows of 100")

    # A continuous query in the background: the sink gets each row as it is produced.
    readings = []
    handle = engine.start("select stream of fahrenheit(t) from Real t where t in signal_stream('temperature');",
                          sink=readings.append, limits={"seconds": 5})
    time.sleep(0.3)
    handle.cancel()
    print(f"{len(readings)} live readings, the last {readings[-1]:.2f} °F; the query is {handle.status}")

    # Errors are QueryErrors with a position.
    try:
        engine.query("select fahrenheit('hot');")
    except streamql.QueryError as error:
        print(error)

    # The store survives in a directory: types, objects, functions and models.
    with tempfile.TemporaryDirectory() as directory:
        engine.save(directory)
        restored = streamql.Engine(store_dir=directory)
        print(list(restored.query("select fahrenheit(100);")), sorted(restored.query("select name(m) from Machine m;")))


if __name__ == "__main__":
    main()

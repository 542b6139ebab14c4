"""predict inside a windowed continuous query vs calling the TFLite interpreter directly (issue 4).

Windows of 256 readings go through a fully connected model to 8 outputs. The baseline sets the
input, invokes and reads the output once per window in a plain loop over the same windows; the
query gets its windows from `winagg` in batches and runs one batched invoke per batch.
Target: the query reaches at least 0.8× the baseline's windows per second.

    python bench/bench_predict.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

from common import best_of, machine

import streamql
from streamql.models.runtime import interpreter_class
from streamql.testing.tflite import fully_connected

QUERY = ("select stream of predict('fc', w) from Vector of Real w "
         "where w in winagg(signal_stream('s'), 256, 256);")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    windows = 2_000 if args.quick else 20_000
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(8, 256)).astype(np.float32)
    bias = rng.normal(size=8).astype(np.float32)
    model = fully_connected(weights, bias)
    data = rng.normal(size=windows * 256)
    path = os.path.join(tempfile.mkdtemp(), "fc.tflite")
    with open(path, "wb") as handle:
        handle.write(model)

    engine = streamql.Engine()
    engine.execute(f"create model fc from '{path}' version '1';")
    engine.add_signal("s", data)

    def query():
        return sum(1 for _ in engine.query(QUERY))

    Interpreter = interpreter_class()
    interpreter = Interpreter(model_content=model, num_threads=1)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    framed = data.reshape(windows, 256).astype(np.float32)

    def direct():
        out = 0
        for window in framed:
            interpreter.set_tensor(input_index, window[None, :])
            interpreter.invoke()
            out += len(interpreter.get_tensor(output_index))
        return out

    results = np.array(list(engine.query(QUERY)))
    expected = framed @ weights.T + bias
    assert results.shape == expected.shape and np.allclose(results, expected, atol=1e-4), "predict disagrees"
    t_query = best_of(query, repeat=3)
    t_direct = best_of(direct, repeat=3)
    print(f"predict benchmark on {machine()}")
    print(f"  {windows:,} windows of 256 → fully connected → 8")
    print(f"  continuous query with predict: {windows / t_query:,.0f} windows/s")
    print(f"  interpreter directly, per window: {windows / t_direct:,.0f} windows/s")
    print(f"  ratio: {t_direct / t_query:.2f}× the direct loop (target ≥ 0.8×)")


if __name__ == "__main__":
    main()

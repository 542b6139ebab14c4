"""TFLite models through LiteRT, with numpy as the oracle."""
from __future__ import annotations

import hashlib
import sys
import threading
import types
import zipfile
import io

import numpy as np
import pytest

from streamql.errors import ModelError, QueryError
from streamql.models import load_model, load_tflite, restore, runtime
from streamql.models.tflite_analysis import arena_bytes, quantization
from streamql.models.tflite_format import read_tflite
from streamql.testing import tflite as T

from model_fakes import count_calls


def dense_oracle(x, w, b, relu=False):
    y = np.asarray(x, dtype=np.float64) @ np.asarray(w, dtype=np.float32).astype(np.float64).T
    y = y + np.asarray(b, dtype=np.float32).astype(np.float64)
    return np.maximum(y, 0.0) if relu else y


@pytest.fixture
def fc(rng):
    w = rng.normal(size=(8, 256)).astype(np.float32)
    b = rng.normal(size=8).astype(np.float32)
    return w, b, load_tflite(T.fully_connected(w, b, relu=True), name="fc")


# --- float ----------------------------------------------------------------------------------------

def test_float_single_sample_matches_numpy(fc, rng):
    w, b, model = fc
    x = rng.normal(size=256)
    y = model.predict(x)
    assert isinstance(y, np.ndarray) and y.shape == (8,) and y.dtype == np.float64
    np.testing.assert_allclose(y, dense_oracle(x.astype(np.float32), w, b, relu=True), rtol=1e-5, atol=1e-5)


def test_float_batch_matches_numpy_and_single_samples(fc, rng):
    w, b, model = fc
    x = rng.normal(size=(37, 256))
    y = model.predict(x)
    assert y.shape == (37, 8)
    np.testing.assert_allclose(y, dense_oracle(x.astype(np.float32), w, b, relu=True), rtol=1e-5, atol=1e-5)
    singles = np.stack([model.predict(row) for row in x])
    np.testing.assert_allclose(y, singles, rtol=1e-6, atol=1e-6)


def test_lists_and_vectors_of_vectors_are_accepted(rng):
    model = load_tflite(T.fully_connected([[1.0, 2.0], [3.0, 4.0]], [0.5, -0.5]))
    assert model.predict([1, 1]).tolist() == [3.5, 6.5]
    assert model.predict([[1, 1], [0, 0]]).tolist() == [[3.5, 6.5], [0.5, -0.5]]
    assert model.predict(np.array([1, 1], dtype=np.int64)).tolist() == [3.5, 6.5]


def test_batch_is_one_invoke_and_resizes_once_per_distinct_size(fc, rng):
    _, _, model = fc
    calls = count_calls(model)
    x = rng.normal(size=(64, 256))
    model.predict(x)
    assert calls == {"resize": 1, "invoke": 1}
    for _ in range(5):
        model.predict(x)  # same size again: no resize
    assert calls == {"resize": 1, "invoke": 6}
    model.predict(x[:10])
    assert calls == {"resize": 2, "invoke": 7}


def test_empty_batch(fc):
    _, _, model = fc
    assert model.predict(np.zeros((0, 256))).shape == (0, 8)


def test_shape_mismatch_says_expected_and_got(fc):
    _, _, model = fc
    with pytest.raises(ModelError) as err:
        model.predict(np.zeros(255))
    assert "(256)" in err.value.message and "(255)" in err.value.message and "'fc'" in err.value.message
    with pytest.raises(ModelError, match=r"got shape \(2, 3, 256\)"):
        model.predict(np.zeros((2, 3, 256)))
    with pytest.raises(ModelError, match="numeric"):
        model.predict(["a"] * 256)
    assert isinstance(err.value, QueryError)


def test_model_that_cannot_batch_runs_sample_by_sample(rng):
    # RESHAPE to a fixed [1, 4] makes every other batch size fail at allocation
    g = T.GraphBuilder()
    w = rng.normal(size=(3, 4)).astype(np.float32)
    x = g.tensor("input", [1, 4])
    shape = g.tensor("shape", [2], "int32", data=[1, 4])
    r = g.tensor("reshaped", [1, 4])
    opts = g._schema.ReshapeOptionsT()
    opts.newShape = [1, 4]
    g.op("RESHAPE", [x, shape], [r], opts)
    wt = g.tensor("w", [3, 4], data=w)
    y = g.tensor("y", [1, 3])
    g.op("FULLY_CONNECTED", [r, wt, -1], [y], g.fc_options())
    model = load_tflite(g.build([x], [y]), "fixed")
    xs = rng.normal(size=(5, 4))
    np.testing.assert_allclose(model.predict(xs), dense_oracle(xs.astype(np.float32), w, np.zeros(3)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.predict(xs[0]), dense_oracle(xs[0].astype(np.float32), w, np.zeros(3)), rtol=1e-5, atol=1e-5)


def test_rank_one_input_has_no_batch_dimension(rng):
    g = T.GraphBuilder()
    w = rng.normal(size=(2, 6)).astype(np.float32)
    x = g.tensor("input", [6])
    wt = g.tensor("w", [2, 6], data=w)
    y = g.tensor("y", [1, 2])
    g.op("FULLY_CONNECTED", [x, wt, -1], [y], g.fc_options())
    model = load_tflite(g.build([x], [y]), "flat")
    assert model.input_shape == (6,)
    xs = rng.normal(size=(4, 6))
    np.testing.assert_allclose(model.predict(xs), dense_oracle(xs.astype(np.float32), w, np.zeros(2)), rtol=1e-5, atol=1e-5)


def test_concurrent_predicts_from_threads(fc, rng):
    w, b, model = fc
    xs = [rng.normal(size=(n, 256)) for n in (1, 3, 7, 16)]
    errors = []

    def worker(k):
        for i in range(30):
            x = xs[(i + k) % len(xs)]
            got = model.predict(x)
            if not np.allclose(got, dense_oracle(x.astype(np.float32), w, b, relu=True), rtol=1e-5, atol=1e-5):
                errors.append((k, i))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --- int8 -----------------------------------------------------------------------------------------

def test_int8_matches_integer_oracle_and_float_within_quantization(rng):
    w = rng.normal(0, 0.2, size=(6, 32))
    b = rng.normal(0, 0.1, size=6)
    q = T.int8_fully_connected(w, b, input_range=(-1, 1))
    model = load_tflite(q.data, "q8")
    x = rng.uniform(-1, 1, size=(50, 32))
    y = model.predict(x)
    assert y.dtype == np.float64 and y.shape == (50, 6)
    # the integer pipeline, computed independently: off by at most one output step (rounding)
    np.testing.assert_allclose(y, q.reference(x), atol=q.output_scale * 1.01)
    # and the float model within the quantization error of inputs, weights and output
    tolerance = q.output_scale + 32 * (q.input_scale * np.abs(w).max() + q.weight_scale)
    np.testing.assert_allclose(y, x @ w.T + b, atol=tolerance)
    single = model.predict(x[3])
    np.testing.assert_allclose(single, y[3])
    info = model.info()
    assert info["quantization"] == "int8"
    assert info["inputs"][0]["dtype"] == "int8"
    assert info["inputs"][0]["quantization"] == {"scale": pytest.approx(q.input_scale), "zero_point": q.input_zero_point}
    assert info["outputs"][0]["quantization"]["zero_point"] == q.output_zero_point


def test_int8_input_is_clamped_not_wrapped(rng):
    q = T.int8_fully_connected(np.eye(3), np.zeros(3), input_range=(-1, 1), output_range=(-1, 1))
    model = load_tflite(q.data)
    y = model.predict([50.0, -50.0, 0.0])
    assert y[0] == pytest.approx(1.0, abs=0.02) and y[1] == pytest.approx(-1.0, abs=0.02)


# --- several outputs ------------------------------------------------------------------------------

def test_two_outputs_give_a_record(rng):
    w1, b1 = rng.normal(size=(3, 10)), rng.normal(size=3)
    w2, b2 = rng.normal(size=(5, 10)), rng.normal(size=5)
    model = load_tflite(T.two_outputs(w1, b1, w2, b2), "two")
    assert model.output_names == ("scores", "embedding")
    x = rng.normal(size=(4, 10)).astype(np.float32)
    out = model.predict(x)
    assert set(out) == {"scores", "embedding"}
    np.testing.assert_allclose(out["scores"], dense_oracle(x, w1, b1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["embedding"], dense_oracle(x, w2, b2), rtol=1e-5, atol=1e-5)
    one = model.predict(x[2])
    assert one["scores"].shape == (3,) and one["embedding"].shape == (5,)
    np.testing.assert_allclose(one["embedding"], out["embedding"][2], rtol=1e-6)


# --- model info -----------------------------------------------------------------------------------

def test_info_of_float_dense(fc):
    w, b, model = fc
    info = model.info()
    data = T.fully_connected(w, b, relu=True)
    assert info["kind"] == "tflite"
    assert info["sha256"] == hashlib.sha256(data).hexdigest() == model.sha256
    assert info["size_bytes"] == len(data)
    assert info["macs"] == 8 * 256
    assert info["ops"] == ["FULLY_CONNECTED"]
    assert info["quantization"] == "none"
    assert info["inputs"] == [{"name": "input", "shape": [256], "dtype": "float32", "quantization": None}]
    assert info["outputs"] == [{"name": "output", "shape": [8], "dtype": "float32", "quantization": None}]
    # input (1 KB) and output (32 B) are alive together
    assert info["arena_bytes"] == 256 * 4 + 8 * 4
    info["inputs"].clear()  # a copy: the model's own info is untouched
    assert model.info()["inputs"]


def test_macs_of_conv_and_depthwise_computed_independently():
    h = w_ = 8
    c, f, k, dm, dense = 3, 4, 3, 2, 5
    model = load_tflite(T.conv_model(h, w_, c, f, k, dm, dense), "conv")
    oh, ow = h - k + 1, w_ - k + 1                  # VALID, stride 1
    conv = oh * ow * f * (k * k * c)
    oh2, ow2 = (oh + 1) // 2, (ow + 1) // 2         # SAME, stride 2
    depthwise = oh2 * ow2 * (f * dm) * (k * k)
    fully = dense * (oh2 * ow2 * f * dm)
    info = model.info()
    assert info["macs_by_op"] == {"CONV_2D": conv, "DEPTHWISE_CONV_2D": depthwise, "FULLY_CONNECTED": fully}
    assert info["macs"] == conv + depthwise + fully
    assert info["ops"] == ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "RESHAPE"]
    assert model.input_shape == (8, 8, 3)
    assert model.predict(np.zeros((2, 8, 8, 3))).shape == (2, 5)


def test_arena_reuses_memory_of_dead_tensors():
    # image (768 B) → conv/out (576 B) → dw/out (288 B) → flat (288 B) → logits (20 B → 32)
    graph = read_tflite(T.conv_model(), "conv")
    sizes = [8 * 8 * 3 * 4, 6 * 6 * 4 * 4, 3 * 3 * 8 * 4, 3 * 3 * 8 * 4, 32]
    # at each step only an op's input and output are alive: the peak pair bounds it from below
    peak = max(a + b for a, b in zip(sizes, sizes[1:]))
    arena = arena_bytes(graph)
    assert peak <= arena < sum(sizes)
    assert arena % 16 == 0


def test_quantization_of_a_mixed_model(rng):
    # dynamic range: float activations, int8 weights
    g = T.GraphBuilder()
    x = g.tensor("input", [1, 4])
    wt = g.tensor("w", [2, 4], "int8", data=rng.integers(-127, 127, size=(2, 4)), scale=0.01, zero_point=0)
    y = g.tensor("y", [1, 2])
    g.op("FULLY_CONNECTED", [x, wt, -1], [y], g.fc_options())
    assert quantization(read_tflite(g.build([x], [y]))) == "mixed"


def test_dump_and_restore(fc, rng):
    _, _, model = fc
    meta, payload = model.dump()
    again = restore(meta, payload)
    assert again.sha256 == model.sha256 and again.name == "fc"
    x = rng.normal(size=(3, 256))
    np.testing.assert_array_equal(again.predict(x), model.predict(x))


# --- bad input ------------------------------------------------------------------------------------

def test_truncated_file(fc):
    data = T.fully_connected(np.ones((2, 3)), np.zeros(2))
    for cut in (0, 3, 7, 12, len(data) // 2, len(data) - 1):
        with pytest.raises(ModelError) as err:
            load_tflite(data[:cut], "cut")
        assert "'cut'" in err.value.message
        assert "TFLite" in err.value.message


def test_corrupt_file_with_a_wild_vector_length():
    data = bytearray(T.fully_connected(np.ones((2, 3)), np.zeros(2)))
    graph_ok = read_tflite(bytes(data))
    assert graph_ok.main.operators
    # the root table's first vtable slot → make every vector offset point at garbage
    root = int.from_bytes(data[0:4], "little")
    data[root:root + 4] = (0x7FFFFFF0).to_bytes(4, "little", signed=True)
    with pytest.raises(ModelError, match="corrupt or truncated"):
        load_tflite(bytes(data), "bad")


def test_not_a_tflite_file():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a", "b")
    with pytest.raises(ModelError, match="lacks the 'TFL3' identifier.*zip"):
        load_tflite(buf.getvalue(), "zip")
    with pytest.raises(ModelError, match="not a TFLite model"):
        load_tflite(b"\x00" * 64, "zeros")
    with pytest.raises(ModelError, match="only 3 bytes"):
        load_tflite(b"abc", "tiny")
    with pytest.raises(ModelError, match="bytes"):
        load_tflite("a string", "str")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="JSON model spec"):
        load_model(b"{not json", "broken")


def test_random_damage_never_crashes():
    """Truncations and byte flips of every test model: a ModelError or a working model, nothing else."""
    rng = np.random.default_rng(7)
    originals = [T.fully_connected(rng.normal(size=(8, 16)), rng.normal(size=8)),
                 T.int8_fully_connected(rng.normal(size=(4, 6)), rng.normal(size=4)).data,
                 T.conv_model(),
                 T.two_outputs(rng.normal(size=(2, 3)), [0, 0], rng.normal(size=(1, 3)), [0])]
    outcomes = {"error": 0, "ok": 0}
    for trial in range(240):
        data = bytearray(originals[trial % len(originals)])
        if trial % 3 == 0:
            data = data[:rng.integers(0, len(data))]
        elif trial % 3 == 1:
            for _ in range(rng.integers(1, 6)):
                data[rng.integers(0, len(data))] = rng.integers(0, 256)
        else:
            p = rng.integers(0, len(data) - 4)
            data[p:p + 4] = rng.integers(0, 256, 4).astype(np.uint8).tobytes()
        try:
            model = load_tflite(bytes(data), "damaged")
            if np.prod(model.input_shape) < 100_000:
                model.predict(np.zeros(model.input_shape))
            outcomes["ok"] += 1
        except ModelError:
            outcomes["error"] += 1
    assert outcomes["error"] > 100


# --- runtime discovery ----------------------------------------------------------------------------

def test_missing_runtime_names_both_packages(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    runtime.reset()
    try:
        with pytest.raises(ModelError) as err:
            load_tflite(T.fully_connected([[1.0]], [0.0]))
        message = err.value.message
        assert "ai_edge_litert" in message and "tflite_runtime" in message
        assert "pip install ai-edge-litert" in message
    finally:
        runtime.reset()


def test_tflite_runtime_is_the_fallback(monkeypatch):
    from ai_edge_litert.interpreter import Interpreter

    fake = types.ModuleType("tflite_runtime.interpreter")
    fake.Interpreter = Interpreter
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    runtime.reset()
    try:
        assert runtime.find_interpreter() == ("tflite_runtime", Interpreter)
        model = load_tflite(T.fully_connected([[2.0]], [1.0]))
        assert model.predict([3.0]).tolist() == [7.0]
    finally:
        runtime.reset()


def test_several_inputs_take_a_record(rng):
    g = T.GraphBuilder()
    a = g.tensor("a", [1, 3], shape_signature=[-1, 3])
    b = g.tensor("b", [1, 3], shape_signature=[-1, 3])
    y = g.tensor("sum", [1, 3], shape_signature=[-1, 3])
    g.op("ADD", [a, b], [y], g._schema.AddOptionsT())
    model = load_tflite(g.build([a, b], [y]), "adder")
    assert model.input_shapes == {"a": (3,), "b": (3,)}
    xa, xb = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    np.testing.assert_allclose(model.predict({"a": xa, "b": xb}), xa + xb, rtol=1e-6)
    np.testing.assert_allclose(model.predict({"a": xa[0], "b": xb[0]}), xa[0] + xb[0], rtol=1e-6)
    with pytest.raises(ModelError, match="2 inputs \\(a, b\\): pass a record"):
        model.predict(xa)
    with pytest.raises(ModelError, match="needs input\\(s\\) b"):
        model.predict({"a": xa})
    with pytest.raises(ModelError, match="same number of samples"):
        model.predict({"a": xa, "b": xb[:2]})

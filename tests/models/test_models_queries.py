"""Models through the query language: `create model … from '….tflite'`, `predict(…)` in queries,
batched invokes over windows, hot swap under a running continuous query, refused re-creations and
signed bundles installed into a real engine. Every result is checked against numpy."""
from __future__ import annotations

import io
import json
import threading
import time
import zipfile

import numpy as np
import pytest

import streamql
from streamql.models import install_bundle, keygen, pack, read_bundle, run_bundle_tests, sign
from streamql.models.bundle import INDEX_NAME
from streamql.models.bundle_template import TEMPLATE_BIAS, TEMPLATE_WEIGHTS
from streamql.signals import LiveSignal
from streamql.testing import tflite as T

from model_fakes import count_calls, rewrite_zip

FLOAT_TOL = dict(rtol=1e-5, atol=1e-5)


# --- helpers --------------------------------------------------------------------------------------

def dense(x, w, b, relu=False):
    """Numpy oracle of a float32 FULLY_CONNECTED layer: inputs and weights rounded to float32."""
    x = np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)
    y = x @ np.asarray(w, dtype=np.float32).astype(np.float64).T
    y = y + np.asarray(b, dtype=np.float32).astype(np.float64)
    return np.maximum(y, 0.0) if relu else y


def vec(x) -> str:
    """A StreamQL vector literal that reads back as exactly these float64 values."""
    return "[" + ", ".join(repr(float(v)) for v in np.asarray(x).ravel()) + "]"


def write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def windows_query(model: str, signal: str, size: int) -> str:
    return (f"select stream of predict('{model}', w) from Vector of Real w "
            f"where w in winagg(signal_stream('{signal}'), {size}, {size});")


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the running query")
        time.sleep(0.005)


@pytest.fixture
def rng():
    return np.random.default_rng(20240307)


@pytest.fixture
def engine():
    e = streamql.Engine()
    yield e
    e.close()


@pytest.fixture
def fc(tmp_path, rng):
    """A float32 model 16 → 5 written to a file, with the weights it was built from."""
    w = rng.normal(size=(5, 16)).astype(np.float32)
    b = rng.normal(size=5).astype(np.float32)
    return w, b, write(tmp_path / "fc.tflite", T.fully_connected(w, b))


# --- 1. float32 ------------------------------------------------------------------------------------

def test_create_model_from_file_and_predict_in_a_query(engine, fc, rng):
    w, b, path = fc
    [created] = engine.execute(f"create model m from '{path}' version '1';")
    assert "version 1" in created.message
    assert list(engine.query("select model_version('m');")) == ["1"]
    x = rng.normal(size=16)
    [y] = list(engine.query(f"select predict('m', {vec(x)});"))
    assert isinstance(y, np.ndarray) and y.dtype == np.float64 and y.shape == (5,)
    np.testing.assert_allclose(y, dense(x, w, b), **FLOAT_TOL)
    # through a derived function and an element of the output (1-based)
    engine.execute("create function score(Vector of Real v) -> Vector of Real as predict('m', v);")
    [third] = list(engine.query(f"select score({vec(x)})[3];"))
    assert third == pytest.approx(dense(x, w, b)[2], rel=1e-5, abs=1e-5)
    info = list(engine.query("select model_info('m');"))[0]
    assert info["version"] == "1" and info["kind"] == "tflite"
    assert info["inputs"][0]["shape"] == [16] and info["outputs"][0]["shape"] == [5]
    assert info["macs"] == 5 * 16


def test_predict_of_a_vector_of_vectors_in_a_query_is_a_batch(engine, fc, rng):
    w, b, path = fc
    engine.execute(f"create model m from '{path}' version '1';")
    xs = rng.normal(size=(3, 16))
    literal = "[" + ", ".join(vec(row) for row in xs) + "]"
    result = engine.query(f"select predict('m', {literal});")
    assert [str(t) for t in result.types] == ["Vector of Vector of Real"]
    [ys] = list(result)
    np.testing.assert_allclose(np.asarray(ys, dtype=float), dense(xs, w, b), **FLOAT_TOL)
    # and row by row in a query over the inputs: the same numbers
    rows = [np.asarray(engine.query(f"select predict('m', {vec(row)});").__next__()) for row in xs]
    np.testing.assert_allclose(np.stack(rows), dense(xs, w, b), **FLOAT_TOL)


def test_predict_of_a_missing_model_or_a_wrong_shape_is_a_query_error(engine, fc):
    _, _, path = fc
    engine.execute(f"create model m from '{path}' version '1';")
    with pytest.raises(streamql.QueryError, match="no model named 'nope'"):
        list(engine.query("select predict('nope', [1, 2, 3]);"))
    with pytest.raises(streamql.QueryError, match=r"\(16\).*\(3\)"):
        list(engine.query("select predict('m', [1, 2, 3]);"))


# --- 2. int8 ---------------------------------------------------------------------------------------

def test_int8_model_through_a_query_matches_the_quantized_oracle(engine, tmp_path, rng):
    w = rng.normal(0, 0.2, size=(4, 8))
    b = rng.normal(0, 0.1, size=4)
    q = T.int8_fully_connected(w, b, input_range=(-1, 1))
    assert q.output_scale < 0.1  # raw int8 codes would be far from the real values
    path = write(tmp_path / "q8.tflite", q.data)
    engine.execute(f"create model q8 from '{path}' version 'i8';")
    signal = rng.uniform(-1, 1, size=8 * 12)
    engine.add_signal("u", signal)
    rows = list(engine.query(windows_query("q8", "u", 8)))
    assert len(rows) == 12
    assert all(isinstance(r, np.ndarray) and r.dtype == np.float64 for r in rows)
    y = np.stack(rows)
    x = signal.reshape(12, 8)
    # the integer pipeline computed in numpy: at most one output step apart (rounding)
    np.testing.assert_allclose(y, q.reference(x), atol=q.output_scale * 1.01)
    # and the float computation within the error quantization brings
    tolerance = q.output_scale + 8 * (q.input_scale * np.abs(w).max() + q.weight_scale)
    np.testing.assert_allclose(y, x @ w.T + b, atol=tolerance)
    # dequantized: every value is a whole number of output steps from the zero point
    steps = y / q.output_scale + q.output_zero_point
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)
    # one sample written in the query, and an out-of-range input clamped, not wrapped
    [one] = list(engine.query(f"select predict('q8', {vec(x[5])});"))
    np.testing.assert_allclose(one, q.reference(x[5:6])[0], atol=q.output_scale * 1.01)
    big = np.array([40.0, -40.0, 0, 0, 0, 0, 0, 0])
    [clamped] = list(engine.query(f"select predict('q8', {vec(big)});"))
    np.testing.assert_allclose(clamped, q.reference(np.clip(big, -1, 1)[None])[0], atol=q.output_scale * 1.01)
    [quant] = list(engine.query("select model_info('q8')['quantization'];"))
    assert quant == "int8"


# --- 3. two outputs --------------------------------------------------------------------------------

def test_two_output_model_gives_a_record_in_queries(engine, tmp_path, rng):
    w1, b1 = rng.normal(size=(2, 6)), rng.normal(size=2)
    w2, b2 = rng.normal(size=(3, 6)), rng.normal(size=3)
    path = write(tmp_path / "two.tflite", T.two_outputs(w1, b1, w2, b2))
    engine.execute(f"create model two from '{path}';")
    x = rng.normal(size=6)
    [record] = list(engine.query(f"select predict('two', {vec(x)});"))
    assert isinstance(record, dict) and set(record) == {"scores", "embedding"}
    np.testing.assert_allclose(record["scores"], dense(x, w1, b1), **FLOAT_TOL)
    np.testing.assert_allclose(record["embedding"], dense(x, w2, b2), **FLOAT_TOL)
    [emb] = list(engine.query(f"select predict('two', {vec(x)})['embedding'];"))
    np.testing.assert_allclose(emb, dense(x, w2, b2), **FLOAT_TOL)
    # over a batch of windows: one record per window
    signal = rng.normal(size=6 * 7 + 2)
    engine.add_signal("s2", signal)
    rows = list(engine.query(windows_query("two", "s2", 6)))
    assert len(rows) == 7 and all(isinstance(r, dict) and set(r) == {"scores", "embedding"} for r in rows)
    xs = signal[:42].reshape(7, 6)
    np.testing.assert_allclose(np.stack([r["scores"] for r in rows]), dense(xs, w1, b1), **FLOAT_TOL)
    np.testing.assert_allclose(np.stack([r["embedding"] for r in rows]), dense(xs, w2, b2), **FLOAT_TOL)
    scores = list(engine.query("select stream of predict('two', w)['scores'] from Vector of Real w "
                               "where w in winagg(signal_stream('s2'), 6, 6);"))
    np.testing.assert_allclose(np.stack(scores), dense(xs, w1, b1), **FLOAT_TOL)


# --- 4. a batch of windows is one invoke ---------------------------------------------------------

def test_windows_arriving_as_a_batch_are_one_invoke(engine, fc, rng):
    w, b, path = fc
    engine.execute(f"create model m from '{path}' version '1';")
    calls = count_calls(engine.models.get("m").model)
    signal = rng.normal(size=16 * 10 + 5)  # ten windows and a partial one, dropped
    engine.add_signal("s", signal)
    rows = list(engine.query(windows_query("m", "s", 16)))
    assert calls == {"resize": 1, "invoke": 1}
    assert len(rows) == 10
    np.testing.assert_allclose(np.stack(rows), dense(signal[:160].reshape(10, 16), w, b), **FLOAT_TOL)
    # the same batch size again: no resize
    again = list(engine.query(windows_query("m", "s", 16)))
    assert calls == {"resize": 1, "invoke": 2}
    np.testing.assert_allclose(np.stack(again), np.stack(rows), rtol=0, atol=0)
    # another batch size: one resize, still one invoke
    engine.add_signal("short", signal[:16 * 3])
    three = list(engine.query(windows_query("m", "short", 16)))
    assert calls == {"resize": 2, "invoke": 3}
    np.testing.assert_allclose(np.stack(three), dense(signal[:48].reshape(3, 16), w, b), **FLOAT_TOL)
    # overlapping windows (stride 8 < size 16) are one batch too
    overlapping = list(engine.query("select stream of predict('m', w) from Vector of Real w "
                                    "where w in winagg(signal_stream('s'), 16, 8);"))
    expected = np.stack([signal[i:i + 16] for i in range(0, len(signal) - 15, 8)])
    assert calls["invoke"] == 4
    np.testing.assert_allclose(np.stack(overlapping), dense(expected, w, b), **FLOAT_TOL)


# --- 5. failed re-creation and hot swap -----------------------------------------------------------

def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("saved_model.pb", b"\x08\x01")
    return buf.getvalue()


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ones((4, 4)))
    return buf.getvalue()


def _wild_vector_length(data: bytes) -> bytes:
    bad = bytearray(data)
    root = int.from_bytes(bad[0:4], "little")
    bad[root:root + 4] = (0x7FFFFFF0).to_bytes(4, "little", signed=True)
    return bytes(bad)


BAD_FILES = {
    "truncated": (lambda good: good[: len(good) // 2], "TFLite"),
    "one byte short": (lambda good: good[:-1], "TFLite"),
    "corrupt": (_wild_vector_length, "corrupt or truncated"),
    "zip": (lambda good: _zip_bytes(), "zip"),
    "numpy": (lambda good: _npy_bytes(), "numpy"),
    "empty": (lambda good: b"", "TFLite"),
    "json": (lambda good: b"{not json", "JSON"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_recreating_from_a_bad_file_is_a_model_error_and_the_old_version_serves(engine, fc, tmp_path, rng, kind):
    w, b, path = fc
    engine.execute(f"create model m from '{path}' version '1';")
    damage, words = BAD_FILES[kind]
    bad = write(tmp_path / "bad.tflite", damage((tmp_path / "fc.tflite").read_bytes()))
    with pytest.raises(streamql.QueryError) as err:
        engine.execute(f"create model m from '{bad}' version '2';")
    assert isinstance(err.value, streamql.ModelError) and err.value.kind == "ModelError"
    assert "'m'" in err.value.message and words in err.value.message
    assert err.value.line == 1  # located in the statement
    # version 1 is still the one serving, and it still computes the right thing
    assert list(engine.query("select model_version('m');")) == ["1"]
    assert [e.version for e in engine.models.history("m")] == ["1"]
    x = rng.normal(size=16)
    [y] = list(engine.query(f"select predict('m', {vec(x)});"))
    np.testing.assert_allclose(y, dense(x, w, b), **FLOAT_TOL)


def test_recreating_from_a_missing_file_is_a_model_error(engine, fc, tmp_path):
    _, _, path = fc
    engine.execute(f"create model m from '{path}' version '1';")
    with pytest.raises(streamql.ModelError, match="no such file"):
        engine.execute(f"create model m from '{tmp_path / 'absent.tflite'}' version '2';")
    assert list(engine.query("select model_version('m');")) == ["1"]


def _versioned(tmp_path, rng, n_in: int, version: int):
    """A model whose last output is the constant `version` (zero weights, bias = version) and
    whose other outputs depend on the input: each row says which version computed it."""
    w = rng.normal(size=(3, n_in)).astype(np.float32)
    w = np.vstack([w, np.zeros((1, n_in), np.float32)])
    b = np.append(rng.normal(size=3), float(version)).astype(np.float32)
    return w, b, write(tmp_path / f"v{version}.tflite", T.fully_connected(w, b))


def test_hot_swap_under_a_running_query(engine, tmp_path, rng):
    """Iterate a continuous query partway, swap the model, read on: later rows use the new one."""
    w1, b1, p1 = _versioned(tmp_path, rng, 8, 1)
    w2, b2, p2 = _versioned(tmp_path, rng, 8, 2)
    bad = write(tmp_path / "bad.tflite", (tmp_path / "v2.tflite").read_bytes()[:100])
    engine.execute(f"create model m from '{p1}' version '1';")
    live = LiveSignal("live")
    engine.add_signal("live", live)
    result = engine.query(windows_query("m", "live", 8))
    watchdog = threading.Timer(60, live.end)  # a stuck query fails the test instead of hanging it
    watchdog.daemon = True
    watchdog.start()
    try:
        first = rng.normal(size=8 * 4)
        # the query opens the signal at its first pull: push once it reads
        pusher = threading.Thread(target=lambda: (wait_for(lambda: live.reader_count == 1),
                                                  live.push_batch(first)), daemon=True)
        pusher.start()
        rows1 = [next(result) for _ in range(4)]
        pusher.join()
        np.testing.assert_allclose(np.stack(rows1), dense(first.reshape(4, 8), w1, b1), **FLOAT_TOL)
        # a failed re-creation leaves the running query on version 1
        with pytest.raises(streamql.ModelError):
            engine.execute(f"create model m from '{bad}' version '2';")
        second = rng.normal(size=8 * 3)
        live.push_batch(second)
        rows2 = [next(result) for _ in range(3)]
        np.testing.assert_allclose(np.stack(rows2), dense(second.reshape(3, 8), w1, b1), **FLOAT_TOL)
        # the swap: the same query, still running, now computes with version 2
        engine.execute(f"create model m from '{p2}' version '2';")
        third = rng.normal(size=8 * 5)
        live.push_batch(third)
        rows3 = [next(result) for _ in range(5)]
        np.testing.assert_allclose(np.stack(rows3), dense(third.reshape(5, 8), w2, b2), **FLOAT_TOL)
        assert [r[-1] for r in rows1 + rows2 + rows3] == [1.0] * 7 + [2.0] * 5
    finally:
        watchdog.cancel()
        live.end()
        result.close()


def test_hot_swap_while_batches_stream_never_mixes_versions(engine, tmp_path, rng):
    """A background query (engine.start) over a live signal fed by a thread; the model is swapped
    twice while windows flow. Every row is exactly one version's output for its own window, and
    versions only ever move forward."""
    n_in = 8
    models = {v: _versioned(tmp_path, rng, n_in, v) for v in (1, 2, 3)}
    engine.execute(f"create model m from '{models[1][2]}' version '1';")
    live = LiveSignal("feed")
    engine.add_signal("feed", live)
    rows: list = []
    handle = engine.start(windows_query("m", "feed", n_in), sink=rows.append)
    data = rng.normal(size=(300, 4, n_in))  # 300 pushes of 4 windows each
    pushed = 0

    def push(upto):
        nonlocal pushed
        while pushed < upto:
            live.push_batch(data[pushed].ravel())
            pushed += 1
            time.sleep(0.0005)

    try:
        wait_for(lambda: live.reader_count == 1)  # readings pushed before the query reads are not its
        push(20)
        wait_for(lambda: len(rows) >= 4)  # version 1 has served
        feeder = threading.Thread(target=push, args=(280,))
        feeder.start()
        time.sleep(0.02)
        engine.execute(f"create model m from '{models[2][2]}' version '2';")
        time.sleep(0.02)
        engine.execute(f"create model m from '{models[3][2]}' version '3';")
        feeder.join(30)
        assert not feeder.is_alive()
        push(300)  # after the last swap
        wait_for(lambda: len(rows) == 300 * 4, timeout=30)
    finally:
        live.end()
        handle.wait(10)
    assert handle.status == "done", handle.error
    windows = data.reshape(-1, n_in)
    versions = []
    for i, (row, x) in enumerate(zip(rows, windows)):
        version = int(round(row[-1]))
        assert version in models, f"row {i}: {row}"
        w, b, _ = models[version]
        np.testing.assert_allclose(row, dense(x, w, b), **FLOAT_TOL, err_msg=f"row {i} (version {version})")
        versions.append(version)
    assert versions == sorted(versions)
    assert versions[0] == 1 and versions[-1] == 3
    assert versions[:4] == [1] * 4 and versions[-4:] == [3] * 4


# --- 6. signed bundles in a real engine ------------------------------------------------------------


@pytest.fixture
def signed_bundle(tmp_path):
    from streamql.models import init_bundle

    d = tmp_path / "vib"
    init_bundle(d)
    private, public = keygen(tmp_path / "keys" / "release")
    other_private, _ = keygen(tmp_path / "keys" / "mallory")
    unsigned = pack(d, tmp_path / "unsigned.sqlbundle")
    signed = sign(pack(d, tmp_path / "signed.sqlbundle"), private)
    foreign = sign(pack(d, tmp_path / "foreign.sqlbundle"), other_private)
    return {"dir": d, "public": public, "unsigned": unsigned, "signed": signed, "foreign": foreign}


def _assert_nothing_installed(engine):
    assert "vib" not in engine.models
    with pytest.raises(streamql.QueryError, match="no model named 'vib'"):
        list(engine.query("select predict('vib', [1, 2, 3, 4]);"))
    with pytest.raises(streamql.QueryError):
        list(engine.query("select vib_score([1, 2, 3, 4]);"))
    assert engine.queries() == []


def test_engine_with_trusted_keys_refuses_unsigned_and_tampered_bundles(signed_bundle, tmp_path):
    b = signed_bundle
    engine = streamql.Engine(trusted_keys=[b["public"]])
    try:
        engine.add_signal("sensor", np.arange(16, dtype=float))
        with pytest.raises(streamql.ModelError, match="not signed"):
            install_bundle(engine, b["unsigned"])
        _assert_nothing_installed(engine)
        with pytest.raises(streamql.ModelError, match="unpacked bundle directory"):
            install_bundle(engine, b["dir"])
        with pytest.raises(streamql.ModelError, match="not signed"):
            install_bundle(engine, read_bundle(b["unsigned"]))  # read earlier without keys
        with pytest.raises(streamql.ModelError, match="which is not trusted"):
            install_bundle(engine, b["foreign"])
        _assert_nothing_installed(engine)

        # tampered: the model swapped for another after signing
        signed_bytes = open(b["signed"], "rb").read()
        evil_model = T.fully_connected(np.full((2, 4), 100.0), [0.0, 0.0])

        def swap_model(name, content):
            return evil_model if name == "models/vib.tflite" else content

        with pytest.raises(streamql.ModelError, match="tampered.*models/vib.tflite"):
            install_bundle(engine, rewrite_zip(signed_bytes, swap_model))
        _assert_nothing_installed(engine)

        # tampered consistently: the index updated to the new hash, which breaks the signature
        import hashlib

        def swap_model_and_index(name, content):
            if name == "models/vib.tflite":
                return evil_model
            if name == INDEX_NAME:
                index = json.loads(content)
                index["files"]["models/vib.tflite"] = {"sha256": hashlib.sha256(evil_model).hexdigest(),
                                                       "size": len(evil_model)}
                return (json.dumps(index, sort_keys=True, separators=(",", ":")) + "\n").encode()
            return content

        consistent = rewrite_zip(signed_bytes, swap_model_and_index)
        assert read_bundle(consistent).load_model("vib").predict([1, 1, 1, 1]).tolist() == [400.0, 400.0]
        with pytest.raises(streamql.ModelError, match="does not match its content"):
            install_bundle(engine, consistent)
        _assert_nothing_installed(engine)
    finally:
        engine.close()


def test_engine_with_trusted_keys_installs_a_signed_bundle(signed_bundle, rng):
    b = signed_bundle
    engine = streamql.Engine(trusted_keys=[b["public"]])
    try:
        sensor = rng.normal(size=4 * 6)
        engine.add_signal("sensor", sensor)
        report = install_bundle(engine, b["signed"])
        assert report.variants == {"vib": "float32"}
        assert list(engine.query("select model_version('vib');")) == ["0.1.0"]
        w, bias = np.array(TEMPLATE_WEIGHTS), np.array(TEMPLATE_BIAS)
        x = rng.normal(size=4)
        [y] = list(engine.query(f"select predict('vib', {vec(x)});"))
        np.testing.assert_allclose(y, dense(x, w, bias), **FLOAT_TOL)
        # the bundle's script ran in the engine: its function answers queries
        [s] = list(engine.query(f"select vib_score({vec(x)});"))
        np.testing.assert_allclose(s, dense(x, w, bias), **FLOAT_TOL)
        rows = list(engine.query(windows_query("vib", "sensor", 4)))
        np.testing.assert_allclose(np.stack(rows), dense(sensor.reshape(6, 4), w, bias), **FLOAT_TOL)
        # the autostart query ran over the sensor: one row per window
        [handle] = report.started
        assert handle.wait(10) and handle.status == "done" and handle.rows == 6
        # and the bundle's own validate statements pass in the real engine
        test_report = run_bundle_tests(b["signed"], engine, trusted_keys=[b["public"]])
        assert test_report.passed, test_report.summary()
    finally:
        engine.close()


def test_a_model_named_without_quotes_is_a_name_error_that_says_how_to_name_it(engine):
    engine.execute("create model m as linear_regression([1.0, 2.0], 0.5);")
    with pytest.raises(streamql.QueryNameError, match=r"m is a model: name it with a string, 'm'") as caught:
        engine.query("select predict(m, [1.0, 2.0]);")
    assert (caught.value.line, caught.value.column) == (1, 16)
    assert list(engine.query("select predict('m', [1.0, 2.0]);")) == [5.5]

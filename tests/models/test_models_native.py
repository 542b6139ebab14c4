"""Native numpy models against straightforward numpy (loops where that is the clearer oracle)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamql.errors import ModelError
from streamql.models import (dense_network, from_spec, kmeans, linear_regression, load_model,
                             logistic_regression, restore, zscore_detector)

finite = st.floats(-100, 100, allow_nan=False, width=64)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 5)), elements=finite),
       hnp.arrays(np.float64, st.tuples(st.integers(1, 12), st.just(1)), elements=finite))
def test_kmeans_is_the_nearest_centroid(centroids, _):
    d = centroids.shape[1]
    rng = np.random.default_rng(0)
    x = rng.uniform(-100, 100, size=(20, d))
    model = kmeans(centroids)
    out = model.predict(x)
    for i, row in enumerate(x):
        dists = [np.linalg.norm(row - c) for c in centroids]
        best = min(dists)
        # ties may pick any nearest centroid; the distance is exact
        assert dists[out["cluster"][i] - 1] == pytest.approx(best, rel=1e-9, abs=1e-9)
        assert out["distance"][i] == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_kmeans_single_sample_is_a_record_with_a_1_based_cluster():
    model = kmeans([[0.1, 0.2], [0.9, 0.8]])
    out = model.predict([0.85, 0.9])
    assert out == {"cluster": 2, "distance": pytest.approx(np.hypot(0.05, 0.1))}
    assert isinstance(out["cluster"], int) and isinstance(out["distance"], float)
    batch = model.predict([[0, 0], [1, 1], [0.2, 0.2]])
    assert batch["cluster"].tolist() == [1, 2, 1]
    assert model.output_names == ("cluster", "distance")
    info = model.info()
    assert info["kind"] == "kmeans" and info["macs"] == 4 and info["inputs"][0]["shape"] == [2]
    assert [o["dtype"] for o in info["outputs"]] == ["int64", "float64"]


def test_linear_regression_one_and_several_outputs(rng):
    w, b = rng.normal(size=5), 0.25
    x = rng.normal(size=(7, 5))
    model = linear_regression(w, b)
    np.testing.assert_allclose(model.predict(x), x @ w + b)
    assert isinstance(model.predict(x[0]), float)
    W, B = rng.normal(size=(3, 5)), rng.normal(size=3)
    multi = linear_regression(W, B)
    np.testing.assert_allclose(multi.predict(x), x @ W.T + B)
    assert multi.predict(x[0]).shape == (3,)
    assert multi.info()["macs"] == 15


def test_logistic_regression_binary_and_multinomial(rng):
    w, b = rng.normal(size=4), -0.5
    x = rng.normal(size=(6, 4)) * 30  # large logits: no overflow warnings
    with np.errstate(all="raise"):
        p = logistic_regression(w, b).predict(x)
    np.testing.assert_allclose(p, 1.0 / (1.0 + np.exp(-(x @ w + b))))
    W, B = rng.normal(size=(3, 4)), rng.normal(size=3)
    probs = logistic_regression(W, B).predict(x)
    z = x @ W.T + B
    expected = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, expected / expected.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_dense_network_matches_numpy(rng):
    layers = [(rng.normal(size=(6, 8)), rng.normal(size=8), "relu"),
              (rng.normal(size=(8, 4)), rng.normal(size=4), "tanh"),
              {"weights": rng.normal(size=(4, 3)), "bias": rng.normal(size=3), "activation": "softmax"}]
    model = dense_network(layers)
    x = rng.normal(size=(9, 6))
    h = np.maximum(x @ layers[0][0] + layers[0][1], 0)
    h = np.tanh(h @ layers[1][0] + layers[1][1])
    z = h @ layers[2]["weights"] + layers[2]["bias"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(model.predict(x), e / e.sum(axis=1, keepdims=True))
    assert model.info()["macs"] == 6 * 8 + 8 * 4 + 4 * 3
    sig = dense_network([(np.eye(2), [0, 0], "sigmoid")])
    np.testing.assert_allclose(sig.predict([0.0, 2.0]), [0.5, 1 / (1 + np.exp(-2))])


def test_native_errors_are_plain():
    with pytest.raises(ModelError, match="layer 2 takes 3 inputs but layer 1 gives 4"):
        dense_network([(np.ones((2, 4)), np.zeros(4)), (np.ones((3, 1)), np.zeros(1))])
    with pytest.raises(ModelError, match="unknown activation 'swish'"):
        dense_network([(np.ones((2, 2)), np.zeros(2), "swish")])
    with pytest.raises(ModelError, match="2 dimension"):
        kmeans([1, 2, 3])
    with pytest.raises(ModelError, match="finite"):
        kmeans([[1, float("nan")]])
    with pytest.raises(ModelError, match="3 outputs but 2 biases"):
        linear_regression(np.ones((3, 2)), [0, 0])
    with pytest.raises(ModelError, match=r"expects input of shape \(2\).*got shape \(3\)"):
        kmeans([[0, 0]]).predict([1, 2, 3])
    with pytest.raises(ModelError, match="unknown native model type 'forest'"):
        from_spec({"type": "forest"})
    with pytest.raises(ModelError, match="lacks \"centroids\""):
        from_spec({"type": "kmeans"})


def test_zscore_with_a_fixed_reference():
    model = zscore_detector(mean=[0.0, 10.0], std=[1.0, 2.0], threshold=3.0)
    out = model.predict([[0.5, 10.0], [0.0, 17.0]])
    np.testing.assert_allclose(out["z"], [[0.5, 0.0], [0.0, 3.5]])
    assert out["score"].tolist() == [0.5, 3.5]
    assert out["anomaly"].tolist() == [False, True]
    one = model.predict([4.0, 10.0])
    assert one["anomaly"] is True and one["score"] == 4.0


def test_zscore_learned_online_matches_a_loop(rng):
    stream = np.r_[rng.normal(5, 2, size=200), [30.0], rng.normal(5, 2, size=20)]
    model = zscore_detector(threshold=4.0, warmup=10)
    got_z = np.concatenate([model.predict(chunk)["z"] for chunk in np.array_split(stream, 7)])
    for i, value in enumerate(stream):
        prior = stream[:i]
        if i < 10:
            assert got_z[i] == 0.0
        else:
            expected = (value - prior.mean()) / prior.std(ddof=1)
            assert got_z[i] == pytest.approx(expected, rel=1e-8, abs=1e-8)
    assert np.flatnonzero(np.abs(got_z) > 4.0).tolist() == [200]
    # the learned state survives a snapshot and is part of the sha256
    meta, payload = model.dump()
    again = restore(meta, payload)
    assert again.sha256 == model.sha256
    nxt = np.array([5.0, 40.0])
    np.testing.assert_allclose(again.predict(nxt)["z"], model.predict(nxt)["z"])


def test_zscore_online_vectors(rng):
    model = zscore_detector(dims=3, warmup=2)
    x = rng.normal(size=(50, 3))
    z = model.predict(x)["z"]
    assert z.shape == (50, 3)
    assert z[20] == pytest.approx((x[20] - x[:20].mean(axis=0)) / x[:20].std(axis=0, ddof=1))


@pytest.mark.parametrize("make", [
    lambda r: kmeans(r.normal(size=(3, 4))),
    lambda r: linear_regression(r.normal(size=4), 1.5),
    lambda r: logistic_regression(r.normal(size=(2, 4)), r.normal(size=2)),
    lambda r: dense_network([(r.normal(size=(4, 5)), r.normal(size=5), "relu"), (r.normal(size=(5, 2)), [0, 0], "linear")]),
    lambda r: zscore_detector(r.normal(size=4), r.uniform(1, 2, size=4), 2.5),
])
def test_dump_restore_and_spec_round_trips(make, rng):
    model = make(rng)
    x = rng.normal(size=(5, 4))
    meta, payload = model.dump()
    again = restore(meta, payload)
    assert type(again) is type(model) and again.sha256 == model.sha256
    assert again.dump()[1] == payload  # canonical bytes
    from_json = load_model(json.dumps(model.spec()).encode())
    assert from_json.sha256 == model.sha256

    def same(a, b):
        if isinstance(a, dict):
            return all(np.allclose(a[k], b[k]) for k in a)
        return np.allclose(a, b)

    assert same(again.predict(x), model.predict(x))


def test_damaged_native_payload():
    meta, payload = kmeans([[1, 2]]).dump()
    with pytest.raises(ModelError, match="damaged"):
        restore(meta, payload[:-3])
    with pytest.raises(ModelError, match="damaged"):
        restore(meta, b"junk")

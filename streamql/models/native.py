"""Native numpy models, for devices and cases where TFLite is too much.

Every model keeps the `predict` contract of `base.Model`: one sample → one output, a batch
`(n, *input_shape)` → outputs with a leading n, computed with one vectorized numpy expression
over the batch. Outputs:

| model | one sample | batch of n |
|---|---|---|
| `kmeans(centroids)` | `{"cluster": 1-based int, "distance": float}` | `{"cluster": (n,) int64, "distance": (n,)}` |
| `linear_regression(w (d,), b)` | float | `(n,)` |
| `linear_regression(w (k, d), b (k,))` | `(k,)` | `(n, k)` |
| `logistic_regression(w (d,), b)` | probability of class 1 | `(n,)` |
| `logistic_regression(w (k, d), b (k,))` | softmax probabilities `(k,)` | `(n, k)` |
| `dense_network(layers)` | last layer's vector `(m,)` | `(n, m)` |
| `zscore_detector(...)` | `{"z": …, "score": float, "anomaly": bool}` | the same, each with a leading n |

Serialization is one canonical byte string (a JSON header with the kind, parameters and array
directory, then little-endian arrays), so the same weights always give the same sha256.
"""
from __future__ import annotations

import json
import struct
import threading
from typing import Any, Callable, Iterable

import numpy as np

from streamql.errors import ModelError

from .base import Model, as_batch, sha256_hex, tensor_entry

__all__ = [
    "DenseNetwork", "KMeans", "LinearRegression", "LogisticRegression", "NativeModel",
    "ZScoreDetector", "dense_network", "from_payload", "from_spec", "kmeans", "linear_regression",
    "logistic_regression", "zscore_detector",
]

_MAGIC = b"SQLN"
_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {}


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # split by sign so exp never overflows
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


_ACTIVATIONS.update({
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softmax": _softmax,
})


def _array(value: Any, what: str, ndim: Iterable[int]) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{what} must be numbers, got {type(value).__name__}") from exc
    if arr.ndim not in tuple(ndim):
        raise ModelError(f"{what} must have {' or '.join(str(d) for d in ndim)} dimension(s); got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ModelError(f"{what} must be finite numbers")
    arr.setflags(write=False)
    return arr


class NativeModel(Model):
    """A numpy model defined by named float arrays and JSON-able parameters."""

    kind = "native"

    def __init__(self, name: str, arrays: dict[str, np.ndarray], params: dict):
        super().__init__(name)
        self._arrays = arrays
        self._params = params
        self._payload = _pack(self.kind, params, arrays)
        self._sha = sha256_hex(self._payload)

    # subclasses define: input_shape, output_names, _forward(batch) -> list of arrays,
    # _cost() -> (macs, arena_bytes), output_shapes
    def _forward(self, batch: np.ndarray) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def output_shapes(self) -> list[tuple[int, ...]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _cost(self) -> tuple[int, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _output_dtypes(self) -> list[str]:
        return ["float64"] * len(self.output_names)

    def predict(self, x: Any) -> Any:
        batch, single = as_batch(x, self.input_shape, self.name)
        outs = self._forward(np.asarray(batch, dtype=np.float64))
        if single:
            outs = [_scalar(o[0]) for o in outs]
        if len(outs) == 1:
            return outs[0]
        return dict(zip(self.output_names, outs))

    def info(self) -> dict:
        macs, arena = self._cost()
        return {
            "kind": self.kind,
            "sha256": self._sha,
            "size_bytes": len(self._payload),
            "arena_bytes": int(arena),
            "macs": int(macs),
            "macs_by_op": {},
            "inputs": [tensor_entry("input", self.input_shape, "float64")],
            "outputs": [tensor_entry(n, s, d) for n, s, d in
                        zip(self.output_names, self.output_shapes(), self._output_dtypes())],
            "quantization": "none",
            "ops": [],
            "runtime": "numpy",
            "params": dict(self._params),
        }

    @property
    def sha256(self) -> str:
        return self._sha

    @property
    def size_bytes(self) -> int:
        return len(self._payload)

    def dump(self) -> tuple[dict, bytes]:
        return {"kind": self.kind, "name": self.name, "format": 1}, self._payload

    def spec(self) -> dict:
        """The JSON form (`{"type": kind, …}`) that `from_spec` reads back."""
        out: dict[str, Any] = {"type": self.kind, **self._params}
        out.update({k: v.tolist() for k, v in self._arrays.items()})
        return out


def _scalar(v: Any) -> Any:
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v[()]
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


class KMeans(NativeModel):
    """Nearest centroid (Euclidean): the 1-based cluster number and the distance to it."""

    kind = "kmeans"

    def __init__(self, centroids, name: str = "kmeans"):
        c = _array(centroids, "kmeans centroids", (2,))
        if c.shape[0] == 0 or c.shape[1] == 0:
            raise ModelError("kmeans needs at least one centroid of at least one dimension")
        self.centroids = c
        self._c2 = np.einsum("ij,ij->i", c, c)
        super().__init__(name, {"centroids": c}, {})

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.centroids.shape[1],)

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("cluster", "distance")

    def output_shapes(self):
        return [(), ()]

    def _output_dtypes(self):
        return ["int64", "float64"]

    def _forward(self, x: np.ndarray) -> list[np.ndarray]:
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2 picks the nearest without an (n, k, d) temporary;
        # the distance itself is then computed exactly from the chosen centroid
        d2 = self._c2[None, :] - 2.0 * (x @ self.centroids.T)
        nearest = np.argmin(d2, axis=1)
        dist = np.linalg.norm(x - self.centroids[nearest], axis=1)
        return [nearest.astype(np.int64) + 1, dist]

    def _cost(self):
        k, d = self.centroids.shape
        return k * d, 8 * (k + 2 * d + 2)


class LinearRegression(NativeModel):
    kind = "linear_regression"

    def __init__(self, weights, bias=0.0, name: str = "linear_regression"):
        w = _array(weights, f"{self.kind} weights", (1, 2))
        b = _array(bias, f"{self.kind} bias", (0, 1))
        k = 1 if w.ndim == 1 else w.shape[0]
        if w.ndim == 1 and b.ndim != 0 and b.shape != (1,):
            raise ModelError(f"{self.kind} with a weight vector takes one bias; got {b.shape[0]}")
        if w.ndim == 2 and b.ndim == 1 and b.shape[0] != k:
            raise ModelError(f"{self.kind} has {k} outputs but {b.shape[0]} biases")
        if w.ndim == 1 and b.ndim == 1:
            b = b.reshape(())
        if w.shape[-1] == 0:
            raise ModelError(f"{self.kind} needs at least one weight")
        self.weights, self.bias = w, b
        super().__init__(name, {"weights": w, "bias": b}, {})

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.weights.shape[-1],)

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("output",)

    def output_shapes(self):
        return [() if self.weights.ndim == 1 else (self.weights.shape[0],)]

    def _linear(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weights.T + self.bias

    def _forward(self, x):
        return [self._linear(x)]

    def _cost(self):
        k = 1 if self.weights.ndim == 1 else self.weights.shape[0]
        return k * self.weights.shape[-1], 8 * (self.weights.shape[-1] + k)


class LogisticRegression(LinearRegression):
    """Binary (a weight vector: the probability of class 1) or multinomial (a weight matrix:
    softmax probabilities, one per class)."""

    kind = "logistic_regression"

    def _forward(self, x):
        z = self._linear(x)
        return [_sigmoid(z) if self.weights.ndim == 1 else _softmax(z)]


class DenseNetwork(NativeModel):
    """Layers of `activation(x @ W + b)`, W shaped (inputs, units) as Keras stores it."""

    kind = "dense"

    def __init__(self, layers, name: str = "dense"):
        if not layers:
            raise ModelError("a dense network needs at least one layer")
        arrays: dict[str, np.ndarray] = {}
        acts = []
        self.layers = []
        width = None
        for i, layer in enumerate(layers, start=1):
            if isinstance(layer, dict):
                w, b, act = layer.get("weights"), layer.get("bias"), layer.get("activation", "linear")
            else:
                seq = list(layer)
                if len(seq) == 2:
                    seq.append("linear")
                if len(seq) != 3:
                    raise ModelError(f"layer {i} must be (weights, bias[, activation])")
                w, b, act = seq
            w = _array(w, f"layer {i} weights", (2,))
            b = _array(np.zeros(w.shape[1]) if b is None else b, f"layer {i} bias", (1,))
            act = str(act or "linear").lower()
            if act not in _ACTIVATIONS:
                raise ModelError(f"layer {i} has unknown activation '{act}'"
                                 f" (use one of {', '.join(sorted(_ACTIVATIONS))})")
            if b.shape[0] != w.shape[1]:
                raise ModelError(f"layer {i} has {w.shape[1]} units but {b.shape[0]} biases")
            if width is not None and w.shape[0] != width:
                raise ModelError(f"layer {i} takes {w.shape[0]} inputs but layer {i - 1} gives {width}")
            width = w.shape[1]
            self.layers.append((w, b, act))
            arrays[f"w{i}"], arrays[f"b{i}"] = w, b
            acts.append(act)
        super().__init__(name, arrays, {"activations": acts})

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.layers[0][0].shape[0],)

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("output",)

    def output_shapes(self):
        return [(self.layers[-1][0].shape[1],)]

    def _forward(self, x):
        for w, b, act in self.layers:
            x = _ACTIVATIONS[act](x @ w + b)
        return [x]

    def _cost(self):
        macs = sum(w.shape[0] * w.shape[1] for w, _, _ in self.layers)
        widths = [self.layers[0][0].shape[0]] + [w.shape[1] for w, _, _ in self.layers]
        arena = max(a + b for a, b in zip(widths, widths[1:])) * 8
        return macs, arena

    def spec(self) -> dict:
        return {"type": self.kind, "layers": [
            {"weights": w.tolist(), "bias": b.tolist(), "activation": a} for w, b, a in self.layers]}


class ZScoreDetector(NativeModel):
    """Z-score anomaly detector over samples of shape `()` (scalars) or `(d,)`.

    With `mean` and `std` given it scores against that fixed reference. Without them it learns
    online: each sample is scored against the running mean and sample standard deviation of every
    sample seen *before* it (the batch is processed in order, vectorized with cumulative sums),
    and then joins the statistics. Until `warmup` samples have been seen, scores are 0 and no
    anomaly is flagged. Outputs: `z` (per feature), `score` = max |z| over features and
    `anomaly` = score > threshold. The learned state is part of `dump()` (and of the sha256).
    """

    kind = "zscore"

    def __init__(self, mean=None, std=None, threshold: float = 3.0, *, dims: int | None = None,
                 warmup: int = 10, name: str = "zscore", state: dict | None = None):
        self.threshold = float(threshold)
        if not np.isfinite(self.threshold) or self.threshold <= 0:
            raise ModelError("zscore threshold must be a positive number")
        self.online = mean is None
        self.warmup = int(warmup)
        self._state_lock = threading.Lock()
        if self.online:
            if std is not None:
                raise ModelError("zscore: give both mean and std, or neither to learn them online")
            shape = () if not dims else (int(dims),)
            st = state or {}
            self._count = int(st.get("count", 0))
            self._mean = np.array(st.get("mean", np.zeros(shape)), dtype=np.float64).reshape(shape)
            self._m2 = np.array(st.get("m2", np.zeros(shape)), dtype=np.float64).reshape(shape)
            self._shape = shape
            arrays: dict[str, np.ndarray] = {}
        else:
            m = _array(mean, "zscore mean", (0, 1))
            s = _array(np.ones_like(m) if std is None else std, "zscore std", (0, 1))
            if s.shape != m.shape:
                raise ModelError(f"zscore mean has shape {m.shape} but std has {s.shape}")
            if np.any(s <= 0):
                raise ModelError("zscore std must be positive")
            self._shape = m.shape
            self.mean, self.std = m, s
            arrays = {"mean": m, "std": s}
        self._fixed_arrays = arrays
        params = {"threshold": self.threshold, "online": self.online, "warmup": self.warmup}
        super().__init__(name, self._state_arrays(), params)

    def _state_arrays(self) -> dict[str, np.ndarray]:
        if not self.online:
            return self._fixed_arrays
        return {"count": np.array(float(self._count)), "mean": self._mean.copy(), "m2": self._m2.copy()}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("z", "score", "anomaly")

    def output_shapes(self):
        return [self._shape, (), ()]

    def _output_dtypes(self):
        return ["float64", "float64", "bool"]

    def _forward(self, x: np.ndarray) -> list[np.ndarray]:
        if self.online:
            with self._state_lock:
                z = self._learn(x)
        else:
            z = (x - self.mean) / self.std
        mag = np.abs(z).reshape(z.shape[0], -1)
        score = mag.max(axis=1) if mag.shape[1] else np.zeros(z.shape[0])
        return [z, score, score > self.threshold]

    def _learn(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        c0, m0, m2_0 = self._count, self._mean, self._m2
        dev = x - m0
        s1 = np.cumsum(dev, axis=0)
        s2 = np.cumsum(dev * dev, axis=0)
        zero = np.zeros((1, *self._shape))
        s1_before = np.concatenate([zero, s1[:-1]]) if n else zero[:0]
        s2_before = np.concatenate([zero, s2[:-1]]) if n else zero[:0]
        counts = (c0 + np.arange(n, dtype=np.float64)).reshape((n,) + (1,) * len(self._shape))
        safe = np.maximum(counts, 1.0)
        mean_before = m0 + s1_before / safe
        m2_before = np.maximum(m2_0 + s2_before - s1_before * s1_before / safe, 0.0)
        std_before = np.sqrt(m2_before / np.maximum(counts - 1.0, 1.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(std_before > 0, (x - mean_before) / std_before, 0.0)
        z = np.where(counts >= max(self.warmup, 2), z, 0.0)
        if n:
            total = c0 + n
            self._m2 = np.maximum(m2_0 + s2[-1] - s1[-1] * s1[-1] / total, 0.0)
            self._mean = m0 + s1[-1] / total
            self._count = total
        return z

    def _cost(self):
        d = int(np.prod(self._shape)) if self._shape else 1
        return 2 * d, 8 * 4 * d

    def info(self) -> dict:
        with self._state_lock:
            self._refresh()
            return super().info()

    def dump(self) -> tuple[dict, bytes]:
        with self._state_lock:
            self._refresh()
            return super().dump()

    def _refresh(self) -> None:
        if self.online:
            self._arrays = self._state_arrays()
            self._payload = _pack(self.kind, self._params, self._arrays)
            self._sha = sha256_hex(self._payload)

    def spec(self) -> dict:
        out = {"type": self.kind, "threshold": self.threshold, "warmup": self.warmup}
        if self.online:
            out["dims"] = int(self._shape[0]) if self._shape else None
        else:
            out.update(mean=self.mean.tolist(), std=self.std.tolist())
        return out

    @property
    def sha256(self) -> str:
        return self.info()["sha256"]


# --- constructors ---------------------------------------------------------------------------

def kmeans(centroids, name: str = "kmeans") -> KMeans:
    """Nearest-centroid model: `{"cluster": 1-based index, "distance": Euclidean distance}`."""
    return KMeans(centroids, name=name)


def linear_regression(weights, bias=0.0, name: str = "linear_regression") -> LinearRegression:
    """`x · w + b`: weights (d,) give a number, (k, d) a vector of k."""
    return LinearRegression(weights, bias, name=name)


def logistic_regression(weights, bias=0.0, name: str = "logistic_regression") -> LogisticRegression:
    """Probability of class 1 (weights (d,)) or softmax class probabilities (weights (k, d))."""
    return LogisticRegression(weights, bias, name=name)


def dense_network(layers, name: str = "dense") -> DenseNetwork:
    """Layers given as `(weights (in, units), bias (units,), activation)` or dicts with those keys;
    activation one of linear, relu, sigmoid, tanh, softmax."""
    return DenseNetwork(layers, name=name)


def zscore_detector(mean=None, std=None, threshold: float = 3.0, *, dims: int | None = None,
                    warmup: int = 10, name: str = "zscore") -> ZScoreDetector:
    """Fixed reference (mean, std) or, without them, statistics learned online from the stream."""
    return ZScoreDetector(mean, std, threshold, dims=dims, warmup=warmup, name=name)


_SPEC_TYPES = {
    "kmeans": lambda s, name: kmeans(s["centroids"], name=name),
    "linear_regression": lambda s, name: linear_regression(s["weights"], s.get("bias", 0.0), name=name),
    "logistic_regression": lambda s, name: logistic_regression(s["weights"], s.get("bias", 0.0), name=name),
    "dense": lambda s, name: dense_network(s["layers"], name=name),
    "zscore": lambda s, name: zscore_detector(s.get("mean"), s.get("std"), s.get("threshold", 3.0),
                                              dims=s.get("dims"), warmup=s.get("warmup", 10), name=name),
}
_SPEC_TYPES["dense_network"] = _SPEC_TYPES["dense"]
_SPEC_TYPES["zscore_detector"] = _SPEC_TYPES["zscore"]


def from_spec(spec: dict, name: str = "model") -> NativeModel:
    """A native model from its JSON form: `{"type": "kmeans", "centroids": [[…], …]}` etc."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ModelError("a native model spec is a JSON object with a \"type\" key"
                         f" ({', '.join(sorted(_SPEC_TYPES))})")
    kind = str(spec["type"]).lower()
    if kind not in _SPEC_TYPES:
        raise ModelError(f"unknown native model type '{spec['type']}'"
                         f" (use one of {', '.join(sorted(_SPEC_TYPES))})")
    try:
        return _SPEC_TYPES[kind](spec, name)
    except KeyError as exc:
        raise ModelError(f"native model spec of type '{kind}' lacks \"{exc.args[0]}\"") from None


# --- canonical serialization ----------------------------------------------------------------

def _pack(kind: str, params: dict, arrays: dict[str, np.ndarray]) -> bytes:
    directory = []
    blobs = []
    offset = 0
    for key in sorted(arrays):
        arr = np.asarray(arrays[key], dtype="<f8")  # not ascontiguousarray: it turns 0-d into 1-d
        raw = arr.tobytes(order="C")
        directory.append({"name": key, "shape": list(arr.shape), "offset": offset, "nbytes": len(raw)})
        blobs.append(raw)
        offset += len(raw)
    header = json.dumps({"kind": kind, "params": params, "arrays": directory},
                        sort_keys=True, separators=(",", ":")).encode()
    return _MAGIC + struct.pack("<I", len(header)) + header + b"".join(blobs)


def from_payload(payload: bytes, name: str = "model") -> NativeModel:
    """Rebuild a native model from the bytes `dump()` produced."""
    try:
        if payload[:4] != _MAGIC:
            raise ValueError("bad magic")
        (hlen,) = struct.unpack_from("<I", payload, 4)
        header = json.loads(payload[8:8 + hlen].decode())
        base = 8 + hlen
        arrays = {}
        for entry in header["arrays"]:
            start = base + int(entry["offset"])
            end = start + int(entry["nbytes"])
            if end > len(payload):
                raise ValueError("array past the end")
            arrays[entry["name"]] = np.frombuffer(payload[start:end], dtype="<f8").reshape(entry["shape"]).copy()
        kind, params = header["kind"], header["params"]
    except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as exc:
        raise ModelError(f"model '{name}': the saved native model is damaged ({exc})") from None
    if kind == "kmeans":
        return KMeans(arrays["centroids"], name=name)
    if kind in ("linear_regression", "logistic_regression"):
        cls = LinearRegression if kind == "linear_regression" else LogisticRegression
        return cls(arrays["weights"], arrays["bias"], name=name)
    if kind == "dense":
        acts = params["activations"]
        return DenseNetwork([(arrays[f"w{i}"], arrays[f"b{i}"], a) for i, a in enumerate(acts, 1)], name=name)
    if kind == "zscore":
        if params.get("online"):
            mean = arrays["mean"]
            state = {"count": int(arrays["count"]), "mean": mean, "m2": arrays["m2"]}
            return ZScoreDetector(None, None, params["threshold"], dims=mean.shape[0] if mean.ndim else None,
                                  warmup=params["warmup"], name=name, state=state)
        return ZScoreDetector(arrays["mean"], arrays["std"], params["threshold"],
                              warmup=params["warmup"], name=name)
    raise ModelError(f"model '{name}': unknown native model kind '{kind}'")

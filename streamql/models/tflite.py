"""TFLite models run by LiteRT: one prepared interpreter per model, batched invokes, float I/O.

`load_tflite(data, name)` validates the flatbuffer (see `tflite_format`) before the interpreter
sees it. `predict` takes one sample or a batch; a batch is one invoke, with the input resized once
per distinct batch size (the last size stays allocated, so a steady stream of equal batches never
resizes). Quantized inputs are quantized and quantized outputs dequantized with each tensor's
scale and zero point: callers only see float64.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamql.errors import ModelError

from . import runtime
from .base import Model, as_batch, sha256_hex, shape_text, tensor_entry
from .tflite_analysis import arena_bytes, macs, quantization
from .tflite_format import TensorSpec, TFLiteGraph, read_tflite

__all__ = ["TFLiteModel", "describe_tflite", "load_tflite"]


@dataclass(frozen=True, slots=True)
class _Port:
    """One model input or output as the interpreter sees it."""

    index: int
    name: str
    sample_shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int
    batched: bool  # the tensor's first dimension is the batch dimension

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and self.dtype.kind in "iu"

    def encode(self, x: np.ndarray) -> np.ndarray:
        if self.quantized:
            q = np.asarray(x, dtype=np.float64) / self.scale
            q = np.sign(q) * np.floor(np.abs(q) + 0.5) + self.zero_point  # half away from zero, as TFLite
            info = np.iinfo(self.dtype)
            return np.clip(q, info.min, info.max).astype(self.dtype)
        return np.ascontiguousarray(x, dtype=self.dtype)

    def decode(self, y: np.ndarray) -> np.ndarray:
        if self.quantized:
            return (y.astype(np.float64) - self.zero_point) * self.scale
        return y.astype(np.float64)


def _is_batch_dim(spec: TensorSpec) -> bool:
    if spec.shape_signature and spec.shape_signature[0] == -1:
        return True
    return len(spec.shape) >= 2 and spec.shape[0] == 1


def describe_tflite(graph: TFLiteGraph, data: bytes) -> dict:
    """model info computed from the flatbuffer alone (no interpreter needed)."""
    sg = graph.main
    total, by_op = macs(graph)

    def entries(indices) -> list[dict]:
        out = []
        for k in indices:
            spec = sg.tensors[k]
            shape = spec.shape[1:] if _is_batch_dim(spec) else spec.shape
            quant = spec.quantized and len(spec.scale) == 1
            out.append(tensor_entry(spec.name, shape, spec.dtype,
                                    spec.scale[0] if quant else None,
                                    spec.zero_point[0] if quant and spec.zero_point else 0))
        return out

    return {
        "kind": "tflite",
        "sha256": sha256_hex(data),
        "size_bytes": len(data),
        "arena_bytes": arena_bytes(graph),
        "macs": total,
        "macs_by_op": by_op,
        "inputs": entries(sg.inputs),
        "outputs": entries(sg.outputs),
        "quantization": quantization(graph),
        "ops": graph.op_names,
        "runtime": "tflite",
        "description": graph.description,
    }


class TFLiteModel(Model):
    kind = "tflite"

    def __init__(self, data: bytes, name: str = "model", num_threads: int = 1):
        super().__init__(name)
        self.graph = read_tflite(data, name)  # checks the type, too
        self._data = bytes(data)
        self._info = describe_tflite(self.graph, self._data)
        self._interpreter = runtime.make_interpreter(self._data, num_threads=num_threads)
        self._lock = threading.Lock()
        sg = self.graph.main
        try:
            self._inputs = self._ports(self._interpreter.get_input_details(), sg, sg.inputs)
            self._outputs = self._ports(self._interpreter.get_output_details(), sg, sg.outputs)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise ModelError(f"model '{name}': the TFLite runtime cannot describe its inputs and"
                             f" outputs ({runtime.first_line(exc)})") from None
        self._output_names = _unique_names([p.name for p in self._outputs])
        self._batchable = all(p.batched for p in self._inputs)
        self._one_to_one = len(self._inputs) == 1 == len(self._outputs)
        self._allocated = 1 if self._batchable else None

    @staticmethod
    def _ports(details: list[dict], sg, indices) -> tuple[_Port, ...]:
        ports = []
        by_index = {d["index"]: d for d in details}
        for pos, k in enumerate(indices):
            d = by_index.get(k, details[pos] if pos < len(details) else None)
            if d is None:
                raise ModelError("the TFLite runtime does not expose the model's declared inputs and outputs")
            spec = sg.tensors[k] if 0 <= k < len(sg.tensors) else None
            shape = tuple(int(s) for s in d["shape"])
            batched = spec is not None and _is_batch_dim(spec) and len(shape) >= 1
            scale, zp = d.get("quantization", (0.0, 0))
            ports.append(_Port(int(d["index"]), d["name"] or f"tensor_{k}",
                               shape[1:] if batched else shape, np.dtype(d["dtype"]),
                               float(scale), int(zp), batched))
        return tuple(ports)

    # --- shapes -----------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._inputs[0].sample_shape

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {p.name: p.sample_shape for p in self._inputs}

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._output_names

    # --- running ----------------------------------------------------------------------------
    def predict(self, x: Any) -> Any:
        if self._one_to_one and self._batchable and isinstance(x, np.ndarray):
            fast = self._predict_one_to_one(x)
            if fast is not None:
                return fast
        batches, single = self._coerce(x)
        n = batches[0].shape[0]
        encoded = [p.encode(b) for p, b in zip(self._inputs, batches)]
        if n == 0:
            raw = [np.zeros((0, *p.sample_shape)) for p in self._outputs]
        else:
            with self._lock:
                try:
                    raw = self._run(encoded, n)
                except (ValueError, RuntimeError) as exc:
                    raise ModelError(f"model '{self.name}' failed to run: {runtime.first_line(exc)}") from None
        outs = [p.decode(r) for p, r in zip(self._outputs, raw)]
        if single:
            outs = [o[0] if o.ndim else o for o in outs]
            outs = [float(o) if o.ndim == 0 else o for o in outs]
        if len(outs) == 1:
            return outs[0]
        return dict(zip(self._output_names, outs))

    def _predict_one_to_one(self, x: np.ndarray) -> Any:
        """The common case (one input, one output, an array of the right shape) without the
        generality of `predict`: a window of a stream arriving alone must cost little more than
        calling the interpreter directly. None when the general path must take over."""
        port, out = self._inputs[0], self._outputs[0]
        shape = port.sample_shape
        if x.shape == shape:
            n = 0  # one sample
        elif x.shape[1:] == shape and x.ndim == len(shape) + 1 and x.shape[0] > 0:
            n = x.shape[0]
        else:
            return None
        if x.dtype.kind not in "fiu":
            return None
        rows = n or 1
        data = port.encode(x.reshape((rows, *shape))) if port.quantized else \
            x.reshape((rows, *shape)).astype(port.dtype, copy=False)
        it = self._interpreter
        with self._lock:
            if self._allocated != rows and not self._resize(rows):
                return None
            try:
                it.set_tensor(port.index, data)
                it.invoke()
                y = it.get_tensor(out.index)
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"model '{self.name}' failed to run: {runtime.first_line(exc)}") from None
        y = out.decode(y) if out.quantized else y.astype(np.float64)
        if n:
            return y
        y = y[0]
        return float(y) if y.ndim == 0 else y

    def _coerce(self, x: Any) -> tuple[list[np.ndarray], bool]:
        if len(self._inputs) == 1:
            if isinstance(x, dict) and len(x) == 1:
                x = next(iter(x.values()))
            batch, single = as_batch(x, self.input_shape, self.name)
            return [batch], single
        if not isinstance(x, dict):
            names = ", ".join(p.name for p in self._inputs)
            raise ModelError(f"model '{self.name}' has {len(self._inputs)} inputs ({names}):"
                             " pass a record with one value per input")
        missing = [p.name for p in self._inputs if p.name not in x]
        if missing:
            raise ModelError(f"model '{self.name}' needs input(s) {', '.join(missing)}")
        pairs = [as_batch(x[p.name], p.sample_shape, self.name, f"input '{p.name}'") for p in self._inputs]
        if len({b.shape[0] for b, _ in pairs}) != 1 or len({s for _, s in pairs}) != 1:
            raise ModelError(f"model '{self.name}': all inputs must hold the same number of samples")
        return [b for b, _ in pairs], pairs[0][1]

    def _run(self, encoded: list[np.ndarray], n: int) -> list[np.ndarray]:
        it = self._interpreter
        if self._batchable and self._resize(n):
            for p, arr in zip(self._inputs, encoded):
                it.set_tensor(p.index, arr)
            it.invoke()
            return [it.get_tensor(p.index) for p in self._outputs]
        # not batchable: one invoke per sample, at the model's own shapes
        results: list[list[np.ndarray]] = [[] for _ in self._outputs]
        for i in range(n):
            for p, arr in zip(self._inputs, encoded):
                it.set_tensor(p.index, arr[i:i + 1] if p.batched else arr[i])
            it.invoke()
            for slot, p in zip(results, self._outputs):
                y = it.get_tensor(p.index)
                slot.append(y[0] if p.batched else y)
        return [np.stack(r) for r in results]

    def _resize(self, n: int) -> bool:
        """Allocate the interpreter for batches of n (a no-op when it already is)."""
        if self._allocated == n:
            return True
        it = self._interpreter
        try:
            for p in self._inputs:
                it.resize_tensor_input(p.index, [n, *p.sample_shape], strict=False)
            it.allocate_tensors()
            shapes_ok = all(int(d["shape"][0]) == n for d in it.get_output_details()
                            if len(d["shape"]) >= 1)
        except (ValueError, RuntimeError):
            shapes_ok = False
        if shapes_ok:
            self._allocated = n
            return True
        # the graph cannot take other batch sizes: fall back to batches of one, for good
        for p in self._inputs:
            it.resize_tensor_input(p.index, [1, *p.sample_shape], strict=False)
        it.allocate_tensors()
        self._allocated = 1
        self._batchable = False
        return False

    # --- describing -------------------------------------------------------------------------
    def info(self) -> dict:
        info = dict(self._info)
        info["macs_by_op"] = dict(info["macs_by_op"])
        info["inputs"] = [dict(e) for e in info["inputs"]]
        info["outputs"] = [dict(e) for e in info["outputs"]]
        info["ops"] = list(info["ops"])
        return info

    @property
    def sha256(self) -> str:
        return self._info["sha256"]

    @property
    def size_bytes(self) -> int:
        return len(self._data)

    @property
    def data(self) -> bytes:
        return self._data

    def dump(self) -> tuple[dict, bytes]:
        return {"kind": "tflite", "name": self.name, "format": 1}, self._data

    def __repr__(self) -> str:
        return (f"<TFLiteModel {self.name!r} input={shape_text(self.input_shape)}"
                f" outputs={list(self._output_names)} {self._info['quantization']}>")


def _unique_names(names: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for i, name in enumerate(names):
        candidate = name or f"output_{i + 1}"
        if candidate in out:
            candidate = f"{candidate}_{i + 1}"
        out.append(candidate)
    return tuple(out)


def load_tflite(data: bytes, name: str = "model", num_threads: int = 1) -> TFLiteModel:
    """Validate and prepare a TFLite model from the bytes of a `.tflite` file."""
    return TFLiteModel(data, name=name, num_threads=num_threads)

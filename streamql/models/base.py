"""The contract every model in the store keeps: shapes, `predict`, `info` and serialization.

`predict(x)` takes one sample (an array whose shape is the model's per-sample `input_shape`) and
returns one output, or a batch with a leading dimension, `(n, *input_shape)`, and returns the
outputs stacked the same way. A model with several outputs returns a dict name → value (the engine
shows it as a record). Callers only ever see floats (or, for labels such as a cluster number,
integers): quantization stays inside the model.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from streamql.errors import ModelError

__all__ = ["Model", "as_batch", "sha256_hex", "shape_text", "tensor_entry"]


def shape_text(shape) -> str:
    """`(256,)` → '(256)', `(n, 256)` written as given: for messages in plain words."""
    return "(" + ", ".join(str(d) for d in shape) + ")"


def tensor_entry(name: str, shape, dtype: str, scale=None, zero_point=None) -> dict:
    """One entry of `info()['inputs']` / `['outputs']`: plain Python values only."""
    quant = None
    if scale is not None:
        quant = {"scale": float(scale), "zero_point": int(zero_point or 0)}
    return {"name": name, "shape": [int(d) for d in shape], "dtype": dtype, "quantization": quant}


def as_batch(x: Any, sample_shape: tuple, model_name: str, what: str = "input") -> tuple[np.ndarray, bool]:
    """Coerce `x` to a float64 batch `(n, *sample_shape)`; the flag says it was a single sample.

    Raises ModelError, saying what was expected and what came, when neither shape fits.
    """
    if isinstance(x, np.ndarray) and x.dtype.kind in "fiub":
        arr = x
    else:
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ModelError(
                f"model '{model_name}' needs a numeric {what} of shape {shape_text(sample_shape)}"
                f" or a batch (n, {', '.join(str(d) for d in sample_shape)}); got {_describe(x)}"
            ) from exc
        if arr.dtype.kind not in "fiub":
            raise ModelError(f"model '{model_name}' needs a numeric {what}; got {_describe(x)}")
    if arr.shape == tuple(sample_shape):
        return arr.reshape((1, *sample_shape)), True
    if arr.ndim == len(sample_shape) + 1 and arr.shape[1:] == tuple(sample_shape):
        return arr, False
    batch_form = "(n" + "".join(f", {d}" for d in sample_shape) + ")"
    raise ModelError(
        f"model '{model_name}' expects {what} of shape {shape_text(sample_shape)} for one sample"
        f" or {batch_form} for a batch; got shape {shape_text(arr.shape)}"
    )


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"an array of {x.dtype} with shape {shape_text(x.shape)}"
    return f"a value of type {type(x).__name__}"


class Model(ABC):
    """A model held in the store. Subclasses are immutable once built, except for the explicitly
    stateful online detector, whose state changes under its own lock."""

    kind: str = "model"

    def __init__(self, name: str = "model"):
        self.name = name

    # --- shapes ---------------------------------------------------------------------------
    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample (without a batch dimension)."""

    @property
    @abstractmethod
    def output_names(self) -> tuple[str, ...]:
        """Names of the outputs; more than one means `predict` returns a dict."""

    # --- running --------------------------------------------------------------------------
    @abstractmethod
    def predict(self, x: Any) -> Any:
        """One sample → one output; a batch `(n, *input_shape)` → outputs with a leading n."""

    # --- describing -----------------------------------------------------------------------
    @abstractmethod
    def info(self) -> dict:
        """kind, sha256, size_bytes, arena_bytes, macs, inputs, outputs, quantization, ops."""

    @abstractmethod
    def dump(self) -> tuple[dict, bytes]:
        """(meta, payload) from which `streamql.models.restore` rebuilds an equal model."""

    @property
    def sha256(self) -> str:
        return self.info()["sha256"]

    @property
    def size_bytes(self) -> int:
        return self.info()["size_bytes"]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} kind={self.kind} input={shape_text(self.input_shape)}>"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

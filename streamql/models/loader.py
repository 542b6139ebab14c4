"""From bytes to a model: `.tflite` files, native JSON specs and the engine's snapshots."""
from __future__ import annotations

import json
import os

from streamql.errors import ModelError

from .base import Model
from .native import from_payload, from_spec
from .tflite import describe_tflite, load_tflite
from .tflite_format import read_tflite

__all__ = ["describe_artifact", "load_model", "load_model_file", "load_variant", "restore", "variant_kind"]


def load_model(data: bytes, name: str = "model") -> Model:
    """A model from the bytes of a `.tflite` file or of a native model's JSON spec."""
    if isinstance(data, str):
        data = data.encode()
    data = bytes(data)
    if data[4:8] == b"TFL3" or not data.lstrip()[:1] == b"{":
        return load_tflite(data, name=name)
    try:
        spec = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model '{name}': the JSON model spec cannot be read ({exc})") from None
    return from_spec(spec, name=name)


def load_model_file(path: str | os.PathLike, name: str | None = None) -> Model:
    """`create model NAME from 'file'`: read the file and load it; missing files are ModelErrors."""
    name = name or os.path.splitext(os.path.basename(os.fspath(path)))[0]
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ModelError(f"model '{name}': no such file '{os.fspath(path)}'") from None
    except OSError as exc:
        raise ModelError(f"model '{name}': cannot read '{os.fspath(path)}' ({exc.strerror})") from None
    return load_model(data, name=name)


def restore(meta: dict, payload: bytes) -> Model:
    """Rebuild a model from `model.dump()`'s (meta, payload)."""
    if not isinstance(meta, dict) or "kind" not in meta:
        raise ModelError("a saved model's description lacks its kind")
    name = str(meta.get("name") or "model")
    if meta["kind"] == "tflite":
        return load_tflite(payload, name=name)
    return from_payload(payload, name=name)


def variant_kind(variant: dict) -> str:
    """'tflite' or 'native' for a bundle variant (from `kind`, else from the artifact's suffix)."""
    kind = str(variant.get("kind") or "").lower()
    if kind in ("tflite", "native"):
        return kind
    if kind:
        raise ModelError(f"unknown model kind '{variant.get('kind')}' (use 'tflite' or 'native')")
    artifact = str(variant.get("artifact") or "")
    return "tflite" if artifact.endswith(".tflite") else "native"


def describe_artifact(variant: dict, data: bytes | None, name: str = "model") -> dict:
    """model info of a bundle variant without preparing an interpreter (for inspect and deploy)."""
    if variant_kind(variant) == "tflite":
        if data is None:
            raise ModelError(f"model '{name}': the variant has no artifact")
        return describe_tflite(read_tflite(data, name), bytes(data))
    spec = variant.get("spec")
    if spec is None:
        if data is None:
            raise ModelError(f"model '{name}': a native variant needs a \"spec\" or a JSON artifact")
        return load_model(data, name).info()
    return from_spec(spec, name).info()


def load_variant(variant: dict, data: bytes | None, name: str = "model") -> Model:
    """The runnable model of a bundle variant."""
    if variant_kind(variant) == "tflite":
        if data is None:
            raise ModelError(f"model '{name}': the variant has no artifact")
        return load_tflite(data, name=name)
    if variant.get("spec") is not None:
        return from_spec(variant["spec"], name=name)
    if data is None:
        raise ModelError(f"model '{name}': a native variant needs a \"spec\" or a JSON artifact")
    return load_model(data, name=name)

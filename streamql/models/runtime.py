"""Finding a TFLite interpreter: LiteRT (`ai_edge_litert`) first, `tflite_runtime` as a fallback.

Both expose the same `Interpreter` API. When neither imports, the error names both packages and
how to install the supported one.
"""
from __future__ import annotations

import importlib
import threading

from streamql.errors import ModelError

__all__ = ["interpreter_class", "make_interpreter", "runtime_name", "runtime_version", "schema_module"]

_CANDIDATES = (("ai_edge_litert", "ai_edge_litert.interpreter"), ("tflite_runtime", "tflite_runtime.interpreter"))
_found: tuple[str, type] | None = None
_lock = threading.Lock()


def find_interpreter() -> tuple[str, type]:
    """(package name, Interpreter class) of the first runtime that imports; uncached."""
    for package, module_name in _CANDIDATES:
        try:
            module = importlib.import_module(module_name)
            return package, module.Interpreter
        except ImportError:  # also covers a module set to None in sys.modules
            continue
    raise ModelError(
        "running TFLite models needs a TFLite runtime, but neither 'ai_edge_litert' nor"
        " 'tflite_runtime' could be imported; install LiteRT with: pip install ai-edge-litert"
    )


def _cached() -> tuple[str, type]:
    global _found
    with _lock:
        if _found is None:
            _found = find_interpreter()
        return _found


def interpreter_class() -> type:
    return _cached()[1]


def runtime_name() -> str:
    return _cached()[0]


def runtime_version() -> str | None:
    """Version of the runtime package in use ('2.3.0'), or None when it does not say."""
    try:
        module = importlib.import_module(_cached()[0])
    except (ImportError, ModelError):
        return None
    return getattr(module, "__version__", None)


def reset() -> None:
    """Forget the runtime found (tests that hide packages call this)."""
    global _found
    with _lock:
        _found = None


def make_interpreter(data: bytes, num_threads: int = 1):
    """A prepared interpreter (tensors allocated) over the model bytes."""
    cls = interpreter_class()
    try:
        interpreter = cls(model_content=bytes(data), num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"the TFLite runtime refused the model: {first_line(exc)}") from exc
    return interpreter


def schema_module():
    """The TFLite flatbuffer schema (`ai_edge_litert.schema_py_generated`)."""
    try:
        return importlib.import_module("ai_edge_litert.schema_py_generated")
    except ImportError as exc:
        raise ModelError(
            "reading .tflite files needs the TFLite schema module shipped with LiteRT, which could"
            " not be imported; install it with: pip install ai-edge-litert"
        ) from exc


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

"""The library of built-in functions, by topic, in one registry."""
from __future__ import annotations

from functools import lru_cache

from .registry import AGGREGATE, SCALAR, SOURCE, STREAM, Library, Overload, Param


@lru_cache(maxsize=1)
def default_library() -> Library:
    """The built-in functions (shared; engines extend copies of it)."""
    from . import aggregates, io, math, operators, streams, time, vector
    lib = Library()
    for module in (operators, math, vector, aggregates, time, streams, io):
        module.register(lib)
    try:
        from . import models
    except ImportError:  # pragma: no cover - the models package is optional at import time
        models = None
    if models is not None:
        models.register(lib)
    return lib


__all__ = ["AGGREGATE", "SCALAR", "SOURCE", "STREAM", "Library", "Overload", "Param", "default_library"]

"""The library of built-in functions: their implementations by topic, registered into one
registry (its declarations are `streamql.registry`, which sits low, beside the types)."""
from __future__ import annotations

from functools import lru_cache

from ..registry import AGGREGATE, SCALAR, SOURCE, STREAM, Library, Overload, Param
from . import aggregates, binary, foreign, io, math, models, operators, osql, procedures, sources, streams, time, vector


@lru_cache(maxsize=1)
def default_library() -> Library:
    """The built-in functions (shared; engines extend copies of it)."""
    lib = Library()
    for module in (operators, math, vector, aggregates, time, sources, streams, io, models, osql, procedures,
                   foreign, binary):
        module.register(lib)
    return lib


__all__ = ["AGGREGATE", "SCALAR", "SOURCE", "STREAM", "Library", "Overload", "Param", "default_library"]

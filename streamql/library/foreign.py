"""Python foreign functions: `create function f(Number x) -> Number as foreign 'py:pkg.mod.fn';`.

Trust: the callable is the operator's choice, never a client's. A `py:` target resolves only when
the engine's allow-list names it (`Engine(foreign=['pkg.mod.fn', 'pkg.*'])`, fnmatch patterns;
empty by default, so an engine that runs other people's statements — an edge, a federation —
resolves none unless its operator says so), or when the embedding program registered a callable
under that name (`engine.register_foreign('name', fn)`). A call passes numeric vectors as numpy
arrays, checks the result against the declared type, and reports a Python exception's message at
the call's position."""
from __future__ import annotations

import fnmatch
import importlib

import numpy as np

from ..catalog import ForeignFunction
from ..errors import QueryRuntimeError, QueryTypeError
from ..registry import Library
from ..types import OBJECT, value_fits
from ..values import Bag, brief_value, make_vector


def resolve_foreign(target: str, allowed: list[str], registered: dict):
    """The callable a target names, when this engine's operator allows it; else QueryRuntimeError."""
    if not target.startswith("py:"):
        raise QueryRuntimeError(f"a foreign function here is Python: 'py:package.module.function', not {target!r}")
    name = target[3:]
    if name in registered:
        return registered[name]
    if not any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed):
        raise QueryRuntimeError(f"{name} is not on this engine's foreign-function allow-list: its operator names "
                                "the Python functions statements may use (Engine(foreign=[…]), an edge's or a "
                                "federation's configuration)")
    module_name, _, attribute = name.rpartition(".")
    if not module_name:
        raise QueryRuntimeError(f"{target} names no module: 'py:package.module.function'")
    try:
        module = importlib.import_module(module_name)
        function = getattr(module, attribute)
    except Exception as exc:   # noqa: BLE001 - an import error of the operator's module, reported
        raise QueryRuntimeError(f"{target} cannot be loaded: {type(exc).__name__}: {exc}") from None
    if not callable(function):
        raise QueryRuntimeError(f"{target} is not a function")
    return function


def _argument(value):
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in value):
        return np.asarray(value, dtype=np.float64)
    if isinstance(value, Bag):
        return list(value.items)
    return value


def _result(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if isinstance(value, (list, tuple)) and not isinstance(value, str):
        return make_vector(list(value))
    return value


def call_foreign(ctx, function: ForeignFunction, *args):
    if not isinstance(function, ForeignFunction):
        raise QueryRuntimeError("call_foreign calls a foreign function: call it by its name")
    if function.callable is None:
        # defined in a store reopened under an allow-list that no longer names it: resolved now, so
        # a target allowed (or registered) again works, and one still refused says why
        try:
            function.callable = resolve_foreign(function.target, ctx.engine.foreign_allowed,
                                                ctx.engine.foreign_registered)
        except QueryRuntimeError as exc:
            raise QueryRuntimeError(f"{function.name} cannot be called: {exc.message}") from None
    try:
        value = function.callable(*[_argument(a) for a in args])
    except Exception as exc:   # noqa: BLE001 - the Python function's own failure, with its message
        raise QueryRuntimeError(f"{function.name} ({function.target}) failed: {type(exc).__name__}: {exc}") from None
    value = _result(value)
    declared = function.result
    if value is not None and declared != OBJECT and not value_fits(value, declared) \
            and not (declared.name == "Real" and isinstance(value, int) and not isinstance(value, bool)):
        raise QueryTypeError(f"{function.name} is declared to return {declared}, but {function.target} gave "
                             f"{brief_value(value)}")
    return value


def register(lib: Library) -> None:
    lib.define("call_foreign(Object function, Object args...) -> Object", scalar=call_foreign, needs_context=True,
               volatile=True, null_propagating=False, topic="osql",
               doc="Call a foreign (Python) function (what a call of one binds to)")

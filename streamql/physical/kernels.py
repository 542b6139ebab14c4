"""Fused elementwise kernels: the code for a `TKernel` (made by elementwise_fusion).

The kernel is generated Python source compiled once per query: for a batch, one numpy
expression over the input columns; for a single reading, one plain-Python expression (no numpy
per reading). It falls back to the unfused expression when an input is not a plain numeric
column or holds null. Both forms compute with `streamql.arithmetic`, as the unfused operators do.
"""
from __future__ import annotations

import math

import numpy as np

from ..arithmetic import np_real_div, np_real_pow, real_div, real_mod, real_pow
from ..bound import TAnd, TCall, TConst, TExpr, TKernel, TNot, TOr, TVar
from .compiled import Compiled

BINARY_TEMPLATES = {  # operator → (numpy template, Python template)
    "+": ("({a} + {b})", "({a} + {b})"),
    "-": ("({a} - {b})", "({a} - {b})"),
    "*": ("({a} * {b})", "({a} * {b})"),
    "/": ("_np_div({a}, {b})", "_div({a}, {b})"),
    "%": ("_np.fmod({a}, {b})", "_mod({a}, {b})"),
    "^": ("_np_pow({a}, {b})", "_pow({a}, {b})"),
    "<": ("({a} < {b})", "({a} < {b})"),
    "<=": ("({a} <= {b})", "({a} <= {b})"),
    ">": ("({a} > {b})", "({a} > {b})"),
    ">=": ("({a} >= {b})", "({a} >= {b})"),
    "=": ("({a} == {b})", "({a} == {b})"),
    "!=": ("({a} != {b})", "({a} != {b})"),
}
UNARY_TEMPLATES = {
    "neg": ("(-{a})", "(-{a})"),
    "sqrt": ("_np.sqrt({a})", "_sqrt({a})"),
    "exp": ("_np.exp({a})", "_exp({a})"),
    "log": ("_np.log({a})", "_log({a})"),
    "sin": ("_np.sin({a})", "_math.sin({a})"),
    "cos": ("_np.cos({a})", "_math.cos({a})"),
    "tan": ("_np.tan({a})", "_math.tan({a})"),
    "abs": ("_np.abs({a})", "abs({a})"),
}


def _safe(fn):
    def run(x):
        try:
            return fn(x)
        except ValueError:
            return math.nan
        except OverflowError:
            return math.inf
    return run


def _log(x):
    if x == 0:
        return -math.inf
    if x < 0 or x != x:
        return math.nan
    return math.log(x)


_NAMESPACE = {"_np": np, "_math": math, "_np_div": np_real_div, "_np_pow": np_real_pow,
              "_div": lambda a, b: real_div(float(a), b), "_mod": real_mod, "_pow": real_pow,
              "_sqrt": _safe(math.sqrt), "_exp": _safe(math.exp), "_log": _log}


def compile_kernel(kernel: TKernel, fallback: Compiled) -> Compiled:
    """The kernel's batch and row forms; `fallback` (the unfused expression) where they cannot run."""
    inputs: list[str] = []
    numpy_source = _source(kernel.expr, inputs, numpy=True)
    python_source = _source(kernel.expr, [], numpy=False)
    args = ", ".join(f"v{i}" for i in range(len(inputs)))
    code = (f"def batch_kernel({args}):\n    return {numpy_source}\n"
            f"def row_kernel({args}):\n    return {python_source}\n")
    namespace = dict(_NAMESPACE)
    exec(compile(code, "<streamql kernel>", "exec"), namespace)  # noqa: S102 - our own generated code
    batch_kernel, row_kernel = namespace["batch_kernel"], namespace["row_kernel"]
    fallback_batch, fallback_row = fallback.batch, fallback.row
    names = list(inputs)

    if len(names) == 1:
        only = names[0]

        def row(env):
            try:
                return row_kernel(env[only])
            except TypeError:  # a null among the inputs: the unfused path knows what to do
                return fallback_row(env)
    else:
        def row(env):
            try:
                return row_kernel(*[env[n] for n in names])
            except TypeError:
                return fallback_row(env)

    def batch(chunk):
        columns = [chunk[n] for n in names]
        for column in columns:
            if not (isinstance(column, np.ndarray) and column.dtype.kind in "iufb" and column.ndim == 1):
                return fallback_batch(chunk)
        with np.errstate(all="ignore"):
            return batch_kernel(*columns)

    return Compiled(batch, row, kernel.type)


def _source(expr: TExpr, inputs: list[str], numpy: bool) -> str:
    if isinstance(expr, TVar):
        if expr.name not in inputs:
            inputs.append(expr.name)
        return f"v{inputs.index(expr.name)}"
    if isinstance(expr, TConst):
        return repr(expr.value) if not isinstance(expr.value, float) or math.isfinite(expr.value) else (
            "_math.inf" if expr.value > 0 else "-_math.inf" if expr.value < 0 else "_math.nan")
    if isinstance(expr, TCall):
        parts = [_source(a, inputs, numpy) for a in expr.args]
        if expr.fn.name in BINARY_TEMPLATES:
            template = BINARY_TEMPLATES[expr.fn.name][0 if numpy else 1]
            return template.format(a=parts[0], b=parts[1])
        template = UNARY_TEMPLATES[expr.fn.name][0 if numpy else 1]
        return template.format(a=parts[0])
    if isinstance(expr, (TAnd, TOr)):
        parts = [_source(t, inputs, numpy) for t in expr.terms]
        joiner = (" & " if isinstance(expr, TAnd) else " | ") if numpy else (" and " if isinstance(expr, TAnd) else " or ")
        return "(" + joiner.join(parts) + ")"
    if isinstance(expr, TNot):
        inner = _source(expr.operand, inputs, numpy)
        return f"(~{inner})" if numpy else f"(not {inner})"
    raise TypeError(f"cannot fuse {type(expr).__name__}")

"""Elementwise fusion: a chain of arithmetic, comparisons and math on numbers becomes one kernel.

    select stream of sqrt(abs(x * 2.5 + 1)) from Real x where x in signal_stream('s') and x / 2 > 0.1
    ─▶ kernel[sqrt(abs(((x * 2.5) + 1)))] and kernel[((x / 2) > 0.1)]

The kernel is generated Python source compiled once: for a batch one numpy expression over the
input columns, for a single reading one plain-Python expression (no numpy per reading). It falls
back to the unfused closures when an input is not a plain numeric column or holds null.
Integer arithmetic is left alone (it checks for overflow); volatile calls are never fused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import logical as L
from ..bound import TAnd, TCall, TConst, TExpr, TNot, TOr, TVar
from ..library.operators import _pow, _real_div, _real_mod
from ..physical.expressions import Compiled
from ..types import BOOLEAN, INTEGER, NUMBER, REAL
from .tree import map_expressions, nodes_of, size

NAME = "elementwise_fusion"

_BINARY = {  # operator → (numpy template, Python template)
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
_UNARY = {
    "neg": ("(-{a})", "(-{a})"),
    "sqrt": ("_np.sqrt({a})", "_sqrt({a})"),
    "exp": ("_np.exp({a})", "_exp({a})"),
    "log": ("_np.log({a})", "_log({a})"),
    "sin": ("_np.sin({a})", "_math.sin({a})"),
    "cos": ("_np.cos({a})", "_math.cos({a})"),
    "tan": ("_np.tan({a})", "_math.tan({a})"),
    "abs": ("_np.abs({a})", "abs({a})"),
}


def _np_div(a, b):
    return np.true_divide(a, b)


def _np_pow(a, b):
    return np.power(np.asarray(a, dtype=np.float64), b)


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


_NAMESPACE = {"_np": np, "_math": math, "_np_div": _np_div, "_np_pow": _np_pow, "_div": lambda a, b: _real_div(float(a), b),
              "_mod": _real_mod, "_pow": _pow, "_sqrt": _safe(math.sqrt), "_exp": _safe(math.exp), "_log": _log}
_NUMERIC = (REAL, NUMBER, INTEGER)


def _fusable(expr: TExpr) -> bool:
    """Whether a node can be part of a kernel (its children are checked separately)."""
    if isinstance(expr, TCall):
        fn = expr.fn
        if fn.volatile or expr.lift is not None or expr.options:
            return False
        if fn.name in _BINARY and len(expr.args) == 2:
            if not all(a.type in _NUMERIC for a in expr.args):
                return False
            if fn.name in ("+", "-", "*", "%") and expr.type == INTEGER:
                return False  # integer arithmetic checks for overflow
            return expr.type in (REAL, BOOLEAN, NUMBER)
        if fn.name in _UNARY and len(expr.args) == 1:
            return expr.args[0].type in _NUMERIC and expr.type in (REAL, NUMBER) and not (
                fn.name in ("neg", "abs") and expr.type == INTEGER)
        return False
    if isinstance(expr, (TAnd, TOr)):
        return True
    if isinstance(expr, TNot):
        return True
    return False


def _leaf(expr: TExpr) -> bool:
    if isinstance(expr, TVar):
        return expr.type in _NUMERIC or expr.type == BOOLEAN
    if isinstance(expr, TConst):
        return isinstance(expr.value, (int, float)) and not isinstance(expr.value, bool) or isinstance(expr.value, bool)
    return False


def _kernel_size(expr: TExpr) -> int | None:
    """Operations in a fully fusable tree, or None when some part is not fusable."""
    if _leaf(expr):
        return 0
    if not _fusable(expr):
        return None
    total = 1
    for child in expr.children():
        part = _kernel_size(child)
        if part is None:
            return None
        total += part
    return total


@dataclass(frozen=True, eq=False)
class TKernel(TExpr):
    """A fused elementwise expression (`expr` is what it computes, kept for fallback and EXPLAIN)."""

    expr: TExpr = None

    def children(self):
        return (self.expr,)

    def describe(self) -> str:
        from ..explain import expr_text
        return f"kernel[{expr_text(self.expr)}]"

    def compile(self, compiler) -> Compiled:
        fallback = compiler.compile(self.expr)
        inputs: list[str] = []
        numpy_source = _source(self.expr, inputs, numpy=True)
        python_source = _source(self.expr, [], numpy=False)
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

        return Compiled(batch, row, self.type)


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
        if expr.fn.name in _BINARY:
            template = _BINARY[expr.fn.name][0 if numpy else 1]
            return template.format(a=parts[0], b=parts[1])
        template = _UNARY[expr.fn.name][0 if numpy else 1]
        return template.format(a=parts[0])
    if isinstance(expr, (TAnd, TOr)):
        parts = [_source(t, inputs, numpy) for t in expr.terms]
        joiner = (" & " if isinstance(expr, TAnd) else " | ") if numpy else (" and " if isinstance(expr, TAnd) else " or ")
        return "(" + joiner.join(parts) + ")"
    if isinstance(expr, TNot):
        inner = _source(expr.operand, inputs, numpy)
        return f"(~{inner})" if numpy else f"(not {inner})"
    raise TypeError(f"cannot fuse {type(expr).__name__}")


def _fuse(expr: TExpr, fired: list) -> TExpr:
    """Replace maximal fusable trees of two or more operations by kernels."""
    sizes: dict[int, int | None] = {}
    _measure(expr, sizes)
    if not any(ops is not None and ops >= 2 for ops in sizes.values()):
        return expr
    return _replace(expr, sizes, fired)


def _measure(expr: TExpr, sizes: dict) -> int | None:
    """Operations in each fully fusable subtree (None where something is not fusable), in one pass."""
    if isinstance(expr, TKernel):
        sizes[id(expr)] = None
        return None
    child_sizes = [_measure(child, sizes) for child in expr.children()]
    if _leaf(expr):
        result = 0
    elif _fusable(expr) and all(c is not None for c in child_sizes):
        result = 1 + sum(child_sizes)
    else:
        result = None
    sizes[id(expr)] = result
    return result


def _replace(expr: TExpr, sizes: dict, fired: list) -> TExpr:
    ops = sizes.get(id(expr))
    if ops is not None and ops >= 2:
        fired.append(expr)
        return TKernel(expr.type, expr, span=expr.span)
    from ..binder import replace_children
    return replace_children(expr, lambda child: _replace(child, sizes, fired))


def rule(plan: L.LogicalPlan, ctx) -> L.LogicalPlan:
    fired: list = []
    for node in nodes_of(plan):
        if isinstance(node, L.Generate) and node.mode == "each":
            continue  # sources are streams and bags, not elementwise numbers
        map_expressions(node, lambda e: _fuse(e, fired))
    from ..explain import expr_text
    for expr in fired:
        ctx.fire(NAME, f"kernel for {expr_text(expr)}")
    return plan

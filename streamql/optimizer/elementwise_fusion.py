"""Elementwise fusion: a chain of arithmetic, comparisons and math on numbers becomes one kernel.

    select stream of sqrt(abs(x * 2.5 + 1)) from Real x where x in signal_stream('s') and x / 2 > 0.1
    ─▶ kernel[sqrt(abs(((x * 2.5) + 1)))] and kernel[((x / 2) > 0.1)]

The rule only marks the trees (a `TKernel` holding each); physical/kernels.py generates the code:
for a batch one numpy expression over the input columns, for a single reading one plain-Python
expression, falling back to the unfused expression when an input is not a plain numeric column
or holds null. Integer arithmetic is left alone (it checks for overflow); volatile calls are
never fused.
"""
from __future__ import annotations

from .. import logical as L
from ..bound import (KERNEL_BINARY, KERNEL_UNARY, TAnd, TCall, TConst, TExpr, TKernel, TNot, TOr, TVar,
                     replace_children)
from ..explain import expr_text
from ..types import BOOLEAN, INTEGER, NUMBER, REAL
from .tree import nodes_of

NAME = "elementwise_fusion"
_NUMERIC = (REAL, NUMBER, INTEGER)


def _fusable(expr: TExpr) -> bool:
    """Whether a node can be part of a kernel (its children are checked separately)."""
    if isinstance(expr, TCall):
        fn = expr.fn
        if fn.volatile or expr.lift is not None or expr.options:
            return False
        if fn.name in KERNEL_BINARY and len(expr.args) == 2:
            if not all(a.type in _NUMERIC for a in expr.args):
                return False
            if fn.name in ("+", "-", "*", "%") and expr.type == INTEGER:
                return False  # integer arithmetic checks for overflow
            return expr.type in (REAL, BOOLEAN, NUMBER)
        if fn.name in KERNEL_UNARY and len(expr.args) == 1:
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
    return replace_children(expr, lambda child: _replace(child, sizes, fired))


def rule(plan: L.LogicalPlan, ctx) -> L.LogicalPlan:
    fired: list = []
    for node in nodes_of(plan):
        if isinstance(node, L.Window) or isinstance(node, L.Generate) and node.mode == "each":
            continue  # sources are streams and bags, not elementwise numbers
        node.map_expressions(lambda e: _fuse(e, fired))
    for expr in fired:
        ctx.fire(NAME, f"kernel for {expr_text(expr)}")
    return plan

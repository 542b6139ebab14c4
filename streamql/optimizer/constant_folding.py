"""Constant folding: compute at compile time what does not depend on any row.

    select x * (2 + 3) from Integer x where x in iota(1, 3) and 1 < 2
    ─▶ Filter (1 < 2) disappears; the item becomes (x * 5)

Deterministic calls whose arguments are all constants become constants; `and`/`or`/`not`/`case`
over constants simplify; a filter that is always true goes away; one that is always false leaves a
plan that yields nothing at once (even over an endless stream). Volatile calls and sources are
never folded, and a call that fails (1 % 0) is left to fail when it runs. A call that builds a
value of a size its arguments choose (`zeros(3)`, `[1, 2]`) is folded only when the value is
small (FOLD_MEMORY_MB): `zeros(50000000)` is left to run under the statement's own memory limit.
"""
from __future__ import annotations

from dataclasses import replace

from .. import logical as L
from ..bound import TAnd, TCall, TCase, TConst, TExpr, TNarrow, TNot, TOr
from ..errors import QueryError
from ..registry import SCALAR
from ..streams import FOLD_BYTES, ExecContext, LazyBag, Limits, StreamValue
from ..types import BOOLEAN, value_fits
from .tree import nodes_of, relink, rewrite, walk_all

NAME = "constant_folding"
FOLD_MEMORY_MB = FOLD_BYTES / 1e6   # the largest value folding builds; larger ones are built when the statement runs


def fold(expr: TExpr) -> TExpr:
    if not any(_may_fold(node) for node in walk_all(expr)):
        return expr   # the usual case, seen without rebuilding the tree
    return rewrite(expr, _fold_node)


def _may_fold(node: TExpr) -> bool:
    """Whether `_fold_node` might change this node given its children as they are (folding
    only starts where some node has constant children)."""
    if isinstance(node, TCall):
        return all(isinstance(a, TConst) for a in node.args)
    if isinstance(node, (TAnd, TOr)):
        return any(isinstance(t, TConst) for t in node.terms)
    if isinstance(node, (TNot, TNarrow)):
        return isinstance(node.operand, TConst)
    if isinstance(node, TCase):
        return any(isinstance(c, TConst) for c, _ in node.whens)
    return False


def _fold_node(node: TExpr) -> TExpr | None:
    if isinstance(node, TCall):
        fn = node.fn
        if (fn.volatile or fn.kind != SCALAR or node.lift is not None or (fn.needs_context and not fn.sized)
                or fn.scalar is None or not all(isinstance(a, TConst) for a in node.args)):
            return None
        values = [a.value for a in node.args]
        if fn.null_propagating and any(v is None for v in values):
            return TConst(node.type, None, span=node.span)
        if fn.sized:   # a budget of its own: refused here means built later, under the statement's limits
            values.insert(0, ExecContext(None, limits=Limits(memory_mb=FOLD_MEMORY_MB)))
        try:
            value = fn.scalar(*values, options=node.options) if node.options else fn.scalar(*values)
        except (QueryError, ArithmeticError, ValueError, TypeError, IndexError, KeyError):
            return None
        if isinstance(value, (StreamValue, LazyBag)):  # recipes, not values
            return None
        return TConst(node.type, value, span=node.span)
    if isinstance(node, TAnd):
        terms = []
        for term in node.terms:
            if isinstance(term, TConst):
                if not term.value:
                    return TConst(BOOLEAN, False, span=node.span)
                continue
            terms.append(term)
        if not terms:
            return TConst(BOOLEAN, True, span=node.span)
        return terms[0] if len(terms) == 1 else (replace(node, terms=tuple(terms)) if len(terms) != len(node.terms) else None)
    if isinstance(node, TOr):
        terms = []
        for term in node.terms:
            if isinstance(term, TConst):
                if term.value:
                    return TConst(BOOLEAN, True, span=node.span)
                continue
            terms.append(term)
        if not terms:
            return TConst(BOOLEAN, False, span=node.span)
        return terms[0] if len(terms) == 1 else (replace(node, terms=tuple(terms)) if len(terms) != len(node.terms) else None)
    if isinstance(node, TNot) and isinstance(node.operand, TConst):
        return TConst(BOOLEAN, not bool(node.operand.value), span=node.span)
    if isinstance(node, TCase):
        whens = []
        for condition, value in node.whens:
            if isinstance(condition, TConst):
                if condition.value:
                    if not whens:
                        return value
                    whens.append((condition, value))
                    return replace(node, whens=tuple(whens), otherwise=None)
                continue
            whens.append((condition, value))
        if not whens:
            return node.otherwise if node.otherwise is not None else TConst(node.type, None, span=node.span)
        if len(whens) != len(node.whens):
            return replace(node, whens=tuple(whens))
        return None
    if isinstance(node, TNarrow) and isinstance(node.operand, TConst):
        if node.operand.value is None or value_fits(node.operand.value, node.type):
            return replace(node.operand, type=node.type)
    return None


def rule(plan: L.LogicalPlan, ctx) -> L.LogicalPlan:
    nodes = nodes_of(plan)
    changed = []

    def fold_counting(expr: TExpr) -> TExpr:
        folded = fold(expr)
        if folded != expr or type(folded) is not type(expr):
            changed.append(1)
        return folded

    for node in nodes:
        node.map_expressions(fold_counting)
    if changed:
        ctx.fire(NAME, f"folded {len(changed)} expression{'s' if len(changed) > 1 else ''}")
    kept = []
    for node in nodes:
        if isinstance(node, L.Filter) and isinstance(node.predicate, TConst):
            if node.predicate.value:
                ctx.fire(NAME, "dropped a filter that is always true")
                continue
            # Never true: nothing below it can contribute a row, so nothing below need run.
            ctx.fire(NAME, "a filter is always false: the query yields nothing")
            kept = [L.Unit(), node]
            continue
        kept.append(node)
    return relink(plan, kept)

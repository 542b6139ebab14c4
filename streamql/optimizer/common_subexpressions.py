"""Common subexpressions: an expression needed twice is computed once.

    select stream of mean(w) from Vector of Real w where w in winagg(s, 100, 100) and mean(w) > 0.1
    (without window fusion) ─▶ Let $x1 = mean(w); Filter ($x1 > 0.1); Project $x1

Only deterministic expressions worth the bookkeeping are shared (a call of a library function
other than a plain operator, or an expression of several parts); the computed column is placed
just before its first use, so a condition that guards it (dim(v) >= 3 before v[3]) still runs
first. Volatile expressions (frand(), now(), signal_value(…)) are never shared.
"""
from __future__ import annotations

from collections import Counter

from .. import logical as L
from ..bound import TAggregate, TCall, TConst, TExpr, TField, TNarrow, TQuery, TStored, TVar
from .tree import expressions, map_expressions, nodes_of, relink, size, substitute, walk_all

NAME = "common_subexpressions"
MAX_ROUNDS = 16


def _candidate(expr: TExpr) -> bool:
    if isinstance(expr, (TVar, TConst, TNarrow, TQuery, TAggregate)):
        return False
    if expr.volatile or expr.type.is_stream or expr.type.is_bag:
        return False
    if any(isinstance(sub, (TQuery, TAggregate)) for sub in walk_all(expr)):
        return False
    if not expr.free_variables():
        return False  # constants are folded, not shared
    if isinstance(expr, (TStored, TField)):
        return True
    worth = any(isinstance(sub, TCall) and sub.fn.topic != "operator" for sub in walk_all(expr))
    return worth or size(expr) >= 5


def rule(plan: L.LogicalPlan, ctx) -> L.LogicalPlan:
    nodes = nodes_of(plan)
    for _ in range(MAX_ROUNDS):
        counts: Counter = Counter()
        first_use: dict[TExpr, int] = {}
        for index, node in enumerate(nodes):
            if isinstance(node, L.Generate) and node.mode == "each":
                continue  # a generator's source is evaluated once per input row already
            for expr in expressions(node):
                for sub in walk_all(expr):
                    if _candidate(sub):
                        counts[sub] += 1
                        first_use.setdefault(sub, index)
        shared = [e for e, n in counts.items() if n >= 2]
        if not shared:
            break
        chosen = max(shared, key=size)
        name = ctx.name("x")
        position = first_use[chosen]
        replacement = TVar(chosen.type, name, span=chosen.span)
        for node in nodes[position:]:
            map_expressions(node, lambda e: substitute(e, {chosen: replacement}))
        nodes.insert(position, L.Let(None, name, chosen, required=False))
        from ..explain import expr_text
        ctx.fire(NAME, f"{expr_text(chosen)} computed once as {name} ({counts[chosen]} uses)")
    return relink(plan, nodes)

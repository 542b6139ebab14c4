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
from ..bound import TAggregate, TConst, TExpr, TField, TNarrow, TQuery, TStored, TVar
from ..explain import expr_text
from .tree import expressions, nodes_of, relink, substitute, walk_all

NAME = "common_subexpressions"


def _candidate(expr: TExpr) -> bool:
    if isinstance(expr, (TVar, TConst, TNarrow, TQuery, TAggregate)):
        return False
    size, costly, opaque = expr.facts
    if opaque or expr.volatile or expr.type.is_stream or expr.type.is_bag:
        return False
    if not expr.free_variables():
        return False  # constants are folded, not shared
    if isinstance(expr, (TStored, TField)):
        return True
    return costly or size >= 5


def rule(plan: L.LogicalPlan, ctx) -> L.LogicalPlan:
    nodes = nodes_of(plan)
    counts: Counter = Counter()
    first_use: dict[TExpr, int] = {}
    holders: dict[TExpr, set] = {}      # candidate → the plan nodes it occurs in
    for index, node in enumerate(nodes):
        if isinstance(node, L.Window) or isinstance(node, L.Generate) and node.mode == "each":
            continue  # a generator's source is evaluated once per input row already
        for expr in expressions(node):
            for sub in walk_all(expr):
                if _candidate(sub):
                    counts[sub] += 1
                    first_use.setdefault(sub, index)
                    holders.setdefault(sub, set()).add(index)
    shared = sorted((e for e, n in counts.items() if n >= 2), key=lambda e: -e.facts[0])
    picked: list[tuple[TExpr, Counter]] = []   # (expression, how often each part occurs in it)
    for candidate in shared:
        # uses left once the chosen (larger) expressions are computed once each
        inside = [(c, parts[candidate]) for c, parts in picked if candidate in parts]
        covered = sum(counts[c] * times for c, times in inside)
        if counts[candidate] - covered + len(inside) >= 2:
            picked.append((candidate, Counter(walk_all(candidate))))
    chosen = [c for c, _ in picked]
    if not chosen:
        return plan
    names = {expr: ctx.name("x") for expr in chosen}
    mapping = {expr: TVar(expr.type, names[expr], span=expr.span) for expr in chosen}
    for index in sorted(set().union(*(holders[expr] for expr in chosen))):
        nodes[index].map_expressions(lambda e: substitute(e, mapping))
    # each Let just before its first use; an inner expression's Let before the one using it
    order = sorted(chosen, key=lambda e: (first_use[e], e.facts[0]))
    for expr in reversed(order):
        inner = {k: v for k, v in mapping.items() if k is not expr}
        nodes.insert(first_use[expr], L.Let(None, names[expr], substitute(expr, inner), required=False))
    for expr in order:
        ctx.fire(NAME, f"{expr_text(expr)} computed once as {names[expr]} ({counts[expr]} uses)")
    return relink(plan, nodes)

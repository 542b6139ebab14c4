"""Predicate pushdown: a filter on one generated variable moves to where its values come from.

    select y from Integer y where y in (select x * 2 from Integer x where x in iota(1, 100)) and y > 150
    ─▶ the subquery gets `x * 2 > 150` among its own conditions; the outer filter goes away

    select stream of x from Real x where x in signal_stream('s') and x > 0
    ─▶ Generate x in signal_stream('s') where (x > 0): readings are dropped inside the stream,
       batch by batch, before rows are made of them

Filters also move up past later generators (window generators included) to the first point
where everything they mention is bound, so rows are dropped before they are multiplied.
Volatile filters stay where they are.
"""
from __future__ import annotations

from dataclasses import replace

from .. import logical as L
from ..bound import Conjunct, TAnd, TCall, TExpr, TQuery, TSourceFilter, TVar
from ..types import BOOLEAN
from .tree import expressions, is_barrier, nodes_of, produces, relink, substitute, walk_all

NAME = "predicate_pushdown"


def rule(plan: L.LogicalPlan, ctx) -> L.LogicalPlan:
    nodes = nodes_of(plan)
    nodes = _hoist_filters(nodes, ctx)
    barrier = next((i for i, n in enumerate(nodes) if is_barrier(n)), len(nodes))
    i = 0
    while i < barrier:
        node = nodes[i]
        if isinstance(node, L.Generate) and node.mode == "each" and len(node.targets) == 1:
            target = node.targets[0]
            movable = [n for n in nodes[i + 1:barrier] if isinstance(n, L.Filter)
                       and n.predicate.free_variables() == {target} and not n.predicate.volatile]
            narrow = node.narrow[0] if node.narrow else None
            if movable:
                if isinstance(node.source, TQuery) and narrow is None and _accepts_conditions(node.source.query):
                    node.source = _push_into_query(node.source, target, [f.predicate for f in movable])
                    ctx.fire(NAME, f"{len(movable)} condition(s) on {target} moved into its subquery")
                elif _filterable_source(node) and not _shares_work(movable, nodes[i + 1:]):
                    predicate = _conjoin([f.predicate for f in movable])
                    node.source = TSourceFilter(node.source.type, node.source, target, predicate, narrow,
                                                span=node.source.span)
                    ctx.fire(NAME, f"{len(movable)} condition(s) on {target} moved into its source")
                else:
                    movable = []
                for f in movable:
                    nodes.remove(f)
                    barrier -= 1
        i += 1
    return relink(plan, nodes)


def _hoist_filters(nodes: list[L.PlanNode], ctx) -> list[L.PlanNode]:
    """Move each non-volatile filter up to just after the node binding the last thing it needs."""
    out: list[L.PlanNode] = []
    barrier_seen = False
    for node in nodes:
        if isinstance(node, L.Filter) and not barrier_seen and not node.predicate.volatile:
            needed = node.predicate.free_variables()
            position = len(out)
            while position > 1 and not (produces(out[position - 1]) & needed) \
                    and not isinstance(out[position - 1], (L.Filter, L.Unit)) \
                    and not _required_let(out[position - 1]):
                position -= 1
            if position < len(out):
                moved_past = [type(n).__name__ for n in out[position:]]
                ctx.fire(NAME, f"a filter moved up past {', '.join(moved_past)}")
            out.insert(position, node)
            continue
        if is_barrier(node):
            barrier_seen = True
        out.append(node)
    return out


def _required_let(node) -> bool:
    # Moving a filter above a dropping Let would be fine, but keep rows' order of checks stable.
    return isinstance(node, L.Let) and node.required


def _shares_work(filters: list, later: list) -> bool:
    """Whether a condition computes something later steps need too (mean(w) in where and select):
    then it stays a filter, so that common_subexpressions computes it once."""
    costly = {sub for f in filters for sub in walk_all(f.predicate)
              if isinstance(sub, TCall) and sub.fn.topic != "operator"}
    if not costly:
        return False
    for node in later:
        if node in filters:
            continue
        for expr in expressions(node):
            if any(sub in costly for sub in walk_all(expr)):
                return True
    return False


def _filterable_source(node: L.Generate) -> bool:
    t = node.source.type
    if not (t.is_stream or t.is_bag):
        return False
    if t.element.name == "Timeval":
        return False
    return not isinstance(node.source, TSourceFilter)


def _accepts_conditions(query) -> bool:
    return (len(query.items) == 1 and query.limit is None and not query.aggregate_query
            and not query.items[0][1].volatile)


def _push_into_query(source: TQuery, target: str, predicates: list[TExpr]) -> TQuery:
    """The subquery with the conditions added, its result expression put for the variable."""
    query = source.query
    item = query.items[0][1]
    conditions = []
    for predicate in predicates:
        references = {n for n in predicate.walk() if isinstance(n, TVar) and n.name == target}
        conditions.append(Conjunct(substitute(predicate, {ref: item for ref in references}), predicate.span))
    return TQuery(source.type, query=replace(query, conjuncts=list(query.conjuncts) + conditions), span=source.span)


def _conjoin(predicates: list[TExpr]) -> TExpr:
    if len(predicates) == 1:
        return predicates[0]
    return TAnd(BOOLEAN, tuple(predicates))

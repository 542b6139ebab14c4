"""Aggregate split: aggregates over many rows per edge are computed in parts on the edges and
merged at the federation, so each edge sends a row per group instead of all its rows.

    select region(e), avg(x), stdev(x) from Edge e, Real x where x in readings()@e group by region(e)
    ─▶ Remote over Edge e
         fragment: select sum(x), count(x), count(x), avg(x), m2(x) from Real x where x in readings();
       MergeAggregate by region(e): avg(parts $p1, $p2), stdev(parts $p3, $p4, $p5)

Each aggregate's split comes from the library's one definition of it (avg → sum and count; stdev
and var → n, mean, M2; count, sum, min, max → themselves). Group keys that are the edge's registry
values (`region(e)`) are the same for all of one edge's rows, so the federation computes them;
keys over the edge's values group in the fragment too. It applies only when every aggregate has a
split (median and distinct counts need the values themselves, so the rows travel) and the edges
bind variables (with one row per edge there is nothing to save).
"""
from __future__ import annotations

from dataclasses import replace

from .. import logical as L
from ..bound import TExpr, TVar, replace_children
from ..fleet import is_per_edge_call
from ..types import INTEGER, OBJECT
from .remote_fragments import build_fragment
from .tree import nodes_of

NAME = "aggregate_split"


def rule(plan: L.LogicalPlan, ctx) -> L.LogicalPlan:
    nodes = nodes_of(plan)
    for index, node in enumerate(nodes[:-1]):
        following = nodes[index + 1]
        if not (isinstance(node, L.Remote) and node.fragment is not None and node.binds
                and isinstance(following, L.Aggregate)):
            continue
        merge = _split(node, following, plan.query.source, plan.kind)
        if merge is None:
            continue
        merge.input = node
        if index + 2 < len(nodes):
            nodes[index + 2].input = merge
        else:
            plan.root = merge
        names = ", ".join(a.fn.name for a in following.aggregates)
        ctx.fire(NAME, f"{names} computed in parts on each edge and merged here; fragment: {node.fragment.text}")
    return plan


def _split(remote: L.Remote, aggregate: L.Aggregate, source, kind) -> L.MergeAggregate | None:
    columns = dict(remote.outputs)
    edge = remote.edge

    def edge_side(expr: TExpr) -> TExpr | None:
        """expr written over the edge's own values (None when it needs the federation's)."""
        if isinstance(expr, TVar):
            if expr.name == edge:
                return None
            if expr.name in columns:
                return columns[expr.name]
            return None
        failed = []

        def visit(node: TExpr) -> TExpr:
            if isinstance(node, TVar):
                if node.name in columns:
                    return columns[node.name]
                failed.append(node)
                return node
            return replace_children(node, visit)
        rewritten = visit(expr)
        return None if failed else rewritten

    central_keys, edge_keys = [], []
    for key in aggregate.keys:
        if is_per_edge_call(key, edge) or not key.free_variables():
            central_keys.append(key)
            continue
        side = edge_side(key)
        if side is None:
            return None
        edge_keys.append((key, side))
    plans = []
    for agg in aggregate.aggregates:
        split = agg.fn.split
        if split is None or not split.edge_aggregates or agg.distinct:
            return None   # median and distinct counts need the values themselves
        if agg.arg is None or (isinstance(agg.arg, TVar) and agg.arg.name == edge):
            if agg.fn.name != "count":
                return None
            plans.append((agg, None))   # count(*), count(e): the rows of each edge
            continue
        side = edge_side(agg.arg)
        if side is None:
            return None
        plans.append((agg, side))

    remote.outputs = []
    remote.group_by = [side for _, side in edge_keys]
    key_names = {}
    for position, (key, side) in enumerate(edge_keys):
        column = f"$k{position + 1}"
        remote.outputs.append((column, side))
        key_names[id(key)] = TVar(key.type, column, span=key.span)
    merged_keys = [key_names.get(id(k), k) for k in aggregate.keys]
    remote.partials = []
    parts: list[list[str]] = []
    computed: dict = {}   # (edge aggregate, argument) → its column: avg(x) and count(x) share count(x)
    for agg, side in plans:
        names = []
        for fn_name in agg.fn.split.edge_aggregates:
            key = (fn_name, side)
            if key not in computed:
                computed[key] = f"$p{len(computed) + 1}"
                type_ = INTEGER if fn_name == "count" else OBJECT
                remote.partials.append((computed[key], fn_name, side, type_, agg.span))
            names.append(computed[key])
        parts.append(names)
    remote.fragment = build_fragment(remote, source, kind)
    aggregates = [replace(a, arg=None) if side is None else a for a, side in plans]
    return L.MergeAggregate(None, merged_keys, aggregates, parts)


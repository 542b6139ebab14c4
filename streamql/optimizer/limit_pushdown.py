"""Limit pushdown: `limit n` over a plain scan of one stream or bag becomes `first_n` at the
source, so a file or sensor stops being read after n elements instead of when the consumer closes.

    select stream of x from Real x where x in csv:file_stream('big.csv') limit 5
    ─▶ Generate x in first_n(csv:file_stream('big.csv'), 5)

It applies only when nothing between the source and the limit can drop or multiply rows (no
filters, other generators, distinct, order by or aggregation).
"""
from __future__ import annotations

from .. import logical as L
from ..bound import TConst, TTake
from .tree import nodes_of

NAME = "limit_pushdown"


def rule(plan: L.LogicalPlan, ctx) -> L.LogicalPlan:
    nodes = nodes_of(plan)
    if len(nodes) < 4 or not isinstance(nodes[-1], L.Limit) or not isinstance(nodes[-1].count, TConst):
        return plan
    count = nodes[-1].count.value
    if not isinstance(count, int) or count < 0:
        return plan
    middle = nodes[1:-1]
    generators = [n for n in middle if isinstance(n, (L.Generate, L.Scan, L.Window))]
    if len(generators) != 1 or not isinstance(generators[0], L.Generate):
        return plan
    generate = generators[0]
    if generate.mode != "each" or not (generate.source.type.is_stream or generate.source.type.is_bag):
        return plan
    for node in middle:
        if node is generate or isinstance(node, (L.Project, L.Keep)):
            continue
        if isinstance(node, L.Let) and not node.required:
            continue
        return plan  # something in between could drop or multiply rows
    if isinstance(generate.source, TTake):
        return plan
    generate.source = TTake(generate.source.type, generate.source, count, span=generate.source.span)
    ctx.fire(NAME, f"the source of {generate.targets[0]} stops after {count} elements")
    return plan

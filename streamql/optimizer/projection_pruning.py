"""Projection pruning: columns no later step needs are dropped from batches.

    select stream of x from Real x, Vector of Real w
     where w in winagg(signal_stream('s'), 64, 64) and x = max(w) and x > 2
    ─▶ … Generate x = max(w); Keep x; Filter (x > 2) …: the windows are not copied by the filter

A Keep goes in only where it spares copying: before a filter, a generator that multiplies
rows, or a blocking step (aggregate, sort). Single rows are dicts and are left alone.
"""
from __future__ import annotations

from .. import logical as L
from .tree import nodes_of, produces, relink, uses

NAME = "projection_pruning"


def rule(plan: L.LogicalPlan, ctx) -> L.LogicalPlan:
    nodes = nodes_of(plan)
    outer = set(plan.query.outer_references)
    # what each position must still carry: everything later nodes read
    needed_after = [set() for _ in nodes]
    needed: set[str] = set()
    for index in range(len(nodes) - 1, -1, -1):
        needed_after[index] = set(needed)
        node = nodes[index]
        if isinstance(node, (L.Project, L.Aggregate)):
            needed = set()
        needed = (needed - produces(node)) | uses(node)
    out: list[L.PlanNode] = []
    available: set[str] = set(outer)
    for index, node in enumerate(nodes):
        if isinstance(node, (L.Project, L.Aggregate)):
            available = set()
        out.append(node)
        available |= produces(node)
        if index + 1 >= len(nodes):
            continue
        following = nodes[index + 1]
        if not isinstance(following, (L.Filter, L.Generate, L.Scan, L.Aggregate, L.Sort)):
            continue
        if isinstance(following, L.Generate) and following.mode != "each":
            continue
        keep = needed_after[index] & available
        dropped = available - keep
        if dropped and not isinstance(node, (L.Project, L.Aggregate, L.Unit, L.Keep)):
            out.append(L.Keep(None, tuple(sorted(keep))))
            available = set(keep)
            ctx.fire(NAME, f"dropped {', '.join(sorted(dropped))} before {type(following).__name__}")
    return relink(plan, out)

"""Projection pruning: columns no later step needs are dropped from batches.

    select stream of x from Real x, Vector of Real w
     where w in winagg(signal_stream('s'), 64, 64) and x = max(w) and x > 2
    ─▶ … Generate x = max(w); Keep x; Filter (x > 2) …: the windows are not copied by the filter

A Keep goes in only where it spares copying: before a filter, a generator that multiplies
rows, or a blocking step (aggregate, sort), and only to drop a heavy column (a vector such as a
window, a record, strings, objects) — dropping a plain number costs more than copying it.
Single rows are dicts and are left alone.
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
    types = _column_types(plan, nodes)
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
        if dropped and any(_heavy(types.get(name)) for name in dropped) \
                and not isinstance(node, (L.Project, L.Aggregate, L.Unit, L.Keep)):
            out.append(L.Keep(None, tuple(sorted(keep))))
            available = set(keep)
            ctx.fire(NAME, f"dropped {', '.join(sorted(dropped))} before {type(following).__name__}")
    return relink(plan, out)


def _column_types(plan: L.LogicalPlan, nodes) -> dict:
    types = {name: v.type for name, v in plan.query.variables.items()}
    for node in nodes:
        if isinstance(node, L.Generate):
            types.update(zip(node.targets, node.types))
        elif isinstance(node, L.Let):
            types[node.name] = node.value.type
    return types


def _heavy(type_) -> bool:
    return type_ is None or not (type_.is_numeric or type_.name == "Boolean")

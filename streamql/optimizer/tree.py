"""Helpers the rules share: plans as lists of nodes, and rewriting typed expressions."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from .. import logical as L
from ..bound import TAggregate, TExpr, replace_children


def nodes_of(plan: L.LogicalPlan) -> list[L.PlanNode]:
    """The plan's nodes, first (Unit) to last."""
    return plan.root.chain()


def relink(plan: L.LogicalPlan, nodes: list[L.PlanNode]) -> L.LogicalPlan:
    """Chain nodes in list order and make the last one the plan's root."""
    previous = None
    for node in nodes:
        node.input = previous
        previous = node
    plan.root = nodes[-1]
    return plan


def rewrite(expr: TExpr, fn: Callable[[TExpr], TExpr | None]) -> TExpr:
    """Bottom-up rewrite: children first, then `fn` on the node (None keeps it)."""
    rebuilt = replace_children(expr, lambda child: rewrite(child, fn))
    result = fn(rebuilt)
    return rebuilt if result is None else result


def substitute(expr: TExpr, mapping: dict[TExpr, TExpr]) -> TExpr:
    """Replace whole subexpressions equal to a key by its value (outermost first)."""
    if not mapping:
        return expr

    def visit(node: TExpr) -> TExpr:
        if node in mapping:
            return mapping[node]
        if isinstance(node, TAggregate) and node.arg is not None:
            return replace(node, arg=visit(node.arg))
        return replace_children(node, visit)
    return visit(expr)


def expressions(node: L.PlanNode) -> list[TExpr]:
    return [e for e in node.expressions() if e is not None]


def walk_all(expr: TExpr) -> tuple[TExpr, ...]:
    """Every subexpression, aggregates' arguments included, depth first. Typed trees are
    immutable, so each node keeps its walk (rules walk every subtree of a plan several times)."""
    cached = expr.__dict__.get("_walk")
    if cached is not None:
        return cached
    out = [expr]
    if isinstance(expr, TAggregate):
        if expr.arg is not None:
            out.extend(walk_all(expr.arg))
    else:
        for child in expr.children():
            out.extend(walk_all(child))
    cached = tuple(out)
    object.__setattr__(expr, "_walk", cached)
    return cached


def uses(node: L.PlanNode) -> set[str]:
    """Variables a node reads."""
    out: set[str] = set()
    for expr in expressions(node):
        out |= expr.free_variables()
    if isinstance(node, L.Distinct):
        out |= set(node.columns)
    if isinstance(node, L.Sort):
        out |= {name for name, _ in node.keys}
    if isinstance(node, L.Keep):
        out |= set(node.columns)
    if isinstance(node, L.MergeAggregate):
        out |= node.part_columns
    return out


def produces(node: L.PlanNode) -> set[str]:
    """Variables a node adds to each row."""
    if isinstance(node, L.Generate):
        return set(node.targets)
    if isinstance(node, L.Scan):
        return {node.variable}
    if isinstance(node, L.Let):
        return {node.name}
    if isinstance(node, L.Window):
        return set(node.outputs)
    if isinstance(node, L.Remote):
        return node.outputs_bound
    return set()


def is_barrier(node: L.PlanNode) -> bool:
    """Nodes that end the row-binding part of a plan (rows change meaning past them)."""
    return isinstance(node, (L.Aggregate, L.MergeAggregate, L.Project, L.Distinct, L.Sort, L.Limit))

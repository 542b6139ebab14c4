"""EXPLAIN: a plan as readable text, first step at the top, with the rules that shaped it."""
from __future__ import annotations

from . import logical as L
from .bound import (TAggregate, TAnd, TAt, TCall, TCase, TConst, TExpr, TField, TKernel, TLet, TNarrow, TNot,
                    TOr, TQuery, TSourceFilter, TStored, TTake, TVar)
from .selection import All
from .values import format_value

_INFIX = {"+", "-", "*", "/", "%", "^", ".*", "./", ".^", "=", "!=", "<", "<=", ">", ">="}


def expr_text(expr: TExpr) -> str:
    """A typed expression written back as (close to) source."""
    if isinstance(expr, TConst):
        value = expr.value
        if hasattr(value, "__len__") and not isinstance(value, str) and len(value) > 8:
            return f"<{expr.type}, {len(value)} elements>"
        return format_value(value)
    if isinstance(expr, TVar):
        return expr.name
    if isinstance(expr, TCall):
        name = expr.fn.name
        args = [expr_text(a) for a in expr.args]
        if name in _INFIX and len(args) == 2:
            return f"({args[0]} {name} {args[1]})"
        if name == "neg":
            return f"-{args[0]}"
        if name == "in_list":
            return f"{args[0]} in ({', '.join(args[1:])})"
        if name == "is_null":
            return f"{args[0]} is null"
        if name == "index":
            return f"{args[0]}[{args[1]}]"
        if name == "cast":
            return f"cast({args[0]} as {expr.options[0]})"
        text = f"{name}({', '.join(args)})"
        return text + "↑" if expr.lift == "stream" else text
    if isinstance(expr, TStored):
        return f"{expr.function.name}({', '.join(expr_text(a) for a in expr.args)})"
    if isinstance(expr, TField):
        return f"{expr_text(expr.target)}.{expr.column}"
    if isinstance(expr, TAnd):
        return "(" + " and ".join(expr_text(t) for t in expr.terms) + ")"
    if isinstance(expr, TOr):
        return "(" + " or ".join(expr_text(t) for t in expr.terms) + ")"
    if isinstance(expr, TNot):
        return f"not {expr_text(expr.operand)}"
    if isinstance(expr, TCase):
        parts = " ".join(f"when {expr_text(c)} then {expr_text(v)}" for c, v in expr.whens)
        other = f" else {expr_text(expr.otherwise)}" if expr.otherwise is not None else ""
        return f"case {parts}{other} end"
    if isinstance(expr, TNarrow):
        return f"{expr_text(expr.operand)}::{expr.type}"
    if isinstance(expr, TLet):
        return f"let {expr.name} = {expr_text(expr.value)} in {expr_text(expr.body)}"
    if isinstance(expr, TQuery):
        return f"(subquery {expr.query.kind})"
    if isinstance(expr, TAggregate):
        distinct = "distinct " if expr.distinct else ""
        return f"{expr.fn.name}({distinct}{'*' if expr.arg is None else expr_text(expr.arg)})"
    if isinstance(expr, TAt):
        return f"({expr_text(expr.expr)})@{expr_text(expr.edge)}"
    if isinstance(expr, TKernel):
        return f"kernel[{expr_text(expr.expr)}]"
    if isinstance(expr, TSourceFilter):
        return f"{expr_text(expr.source)} where {expr_text(expr.predicate)}"
    if isinstance(expr, TTake):
        return f"first_n({expr_text(expr.source)}, {expr.count})"
    # nodes a catalog adds (a federation's edge-only expressions) describe themselves
    describe = getattr(expr, "describe", None)
    if describe is not None:
        return describe()
    return type(expr).__name__


def _selected_now(node: L.Remote, fleet) -> str:
    ids = list(fleet.select(node.index if node.index is not None else All()))
    devices = fleet.devices(ids)
    online = sum(1 for d in devices.values() if d.online)
    shown = ", ".join(ids[:8]) + (" …" if len(ids) > 8 else "")
    more = " (before the per-device conditions)" if node.residual or node.candidates is not None else ""
    return (f"→ the index selects {len(ids)} device{'s' if len(ids) != 1 else ''}{more}: {online} online, "
            f"{len(ids) - online} offline" + (f" ({shown})" if ids else ""))


def describe_node(node: L.PlanNode, columns: list[str] | None = None) -> str:
    if isinstance(node, L.Unit):
        return "Unit"
    if isinstance(node, L.Generate):
        targets = ", ".join(node.targets)
        how = {"each": "in", "whole": "=", "destructure": "= […] of"}[node.mode]
        return f"Generate {targets} {how} {expr_text(node.source)}"
    if isinstance(node, L.Window):
        variable = node.target.split("~")[0]
        bound = ", ".join(f"{a.output} = {a.function}({variable})" for a in node.aggregates) or node.target
        return f"Window {bound} over {expr_text(node.source)} size {node.size} stride {node.stride}"
    if isinstance(node, L.Scan):
        return f"Scan {node.variable} over {node.type}"
    if isinstance(node, L.Let):
        return f"Let {node.name} = {expr_text(node.value)}" + (" (drops rows without a value)" if node.required else "")
    if isinstance(node, L.Filter):
        return f"Filter {expr_text(node.predicate)}"
    if isinstance(node, L.Keep):
        return f"Keep {', '.join(node.columns) or '(nothing)'}"
    if isinstance(node, L.Aggregate):
        keys = ", ".join(expr_text(k) for k in node.keys) or "()"
        aggs = ", ".join(f"$a{i} = {expr_text(a)}" for i, a in enumerate(node.aggregates))
        return f"Aggregate by {keys}: {aggs}"
    if isinstance(node, L.Project):
        names = columns or [name for name, _ in node.items]
        items = ", ".join(f"{expr_text(e)} as {n}" for n, (_, e) in zip(names, node.items))
        return f"Project {items}"
    if isinstance(node, L.Distinct):
        return "Distinct"
    if isinstance(node, L.Sort):
        return "Sort by " + ", ".join(f"{name}{' desc' if desc else ''}" for name, desc in node.keys)
    if isinstance(node, L.Limit):
        return f"Limit {expr_text(node.count)}"
    if isinstance(node, L.Remote):
        return _describe_remote(node)
    if isinstance(node, L.MergeAggregate):
        keys = ", ".join(expr_text(k) for k in node.keys) or "()"
        aggs = ", ".join(f"$a{i} = {a.fn.name}(parts {', '.join(p)})" for i, (a, p) in
                         enumerate(zip(node.aggregates, node.parts)))
        return f"MergeAggregate by {keys}: {aggs}  (partial aggregates from the edges, merged here)"
    return type(node).__name__


def _describe_remote(node: L.Remote) -> str:
    lines = [f"Remote over Edge {node.edge_written}"]
    if node.candidates is not None:
        lines.append(f"     candidates: {expr_text(node.candidates)}")
    lines.append(f"     selection (registry index): {node.index if node.index is not None else 'all edges'}")
    for condition in node.residual:
        lines.append(f"     per device at the federation: {expr_text(condition)}")
    if node.fragment is None:
        lines.append("     no fragment: answered from the registry, no device contacted")
    else:
        fragment = node.fragment
        lines.append(f"     fragment ({fragment.kind}) on each selected edge: {fragment.text}")
        for param in fragment.params:
            lines.append(f"       :{param.name} = {expr_text(param.value)} of each edge")
        lines.append(f"     columns back: {', '.join(fragment.columns)}"
                     + (f"; at most {node.limit} rows in all (the rest cancelled)" if node.limit is not None else ""))
    return "\n".join(lines)


def describe_plan(plan: L.LogicalPlan, fleet=None) -> str:
    """The plan as text; with a fleet (a federation's FleetAccess), what each Remote's selection
    picks there now."""
    lines = [f"{plan.kind} query → columns: {', '.join(plan.columns)}"]
    for depth, node in enumerate(plan.root.chain()):
        lines.append(f"{'  ' * min(depth, 1)}{depth}. {describe_node(node, plan.columns)}")
        if fleet is not None and isinstance(node, L.Remote):
            lines.append("     " + _selected_now(node, fleet))
    if plan.rules:
        lines.append("rules fired: " + ", ".join(plan.rules))
        lines.extend(f"  - {step}" for step in plan.trace)
    else:
        lines.append("rules fired: none")
    return "\n".join(lines)

"""Window–aggregate fusion: when a window variable is only ever reduced by mean, avg, sum, min,
max or rms, the Window computes those per window instead of making windows.

    select stream of mean(w) from Vector of Real w
     where w in winagg(signal_stream('s'), 100, 100) and mean(w) > 0.1
    ─▶ Window $w1 = mean(w) over signal_stream('s') size 100 stride 100
       Filter ($w1 > 0.1); Project $w1

The rule only says what to compute; physical/windows.py computes it from each batch (a reshape
for tumbling windows, running sums and a strided view for sliding ones), windows still arriving
as soon as they are complete and a reading arriving alone taking the scalar path.
"""
from __future__ import annotations

from .. import logical as L
from ..bound import TCall, TExpr, TVar
from ..types import INTEGER, REAL, Type, vector_of
from .tree import nodes_of, substitute, walk_all

NAME = "window_fusion"
FUSABLE = ("mean", "avg", "sum", "min", "max", "rms")


def rule(plan: L.LogicalPlan, ctx) -> L.LogicalPlan:
    nodes = nodes_of(plan)
    for index, node in enumerate(nodes):
        if not (isinstance(node, L.Window) and not node.aggregates and _numeric_windows(node)):
            continue
        calls, other_uses = _uses_of(nodes[index + 1:], node.target)
        if other_uses or not calls:
            continue
        names = []
        for call in calls:
            name = _function(call)
            if name not in names:
                names.append(name)
        element = node.type.element if node.type is not None else REAL
        outputs = {name: ctx.name("w") for name in names}
        node.aggregates = tuple(L.WindowAggregate(outputs[name], name, _result_type(name, element)) for name in names)
        replacements = {call: TVar(call.type, outputs[_function(call)], span=call.span) for call in calls}

        def swap(expr: TExpr) -> TExpr:
            return substitute(expr, replacements)

        for later in nodes[index + 1:]:
            later.map_expressions(swap)
        ctx.fire(NAME, f"{', '.join(names)} of {node.target} computed per window without making windows "
                       f"(size {node.size}, stride {node.stride})")
    return plan


def _function(call: TCall) -> str:
    return "mean" if call.fn.name == "avg" else call.fn.name


def _numeric_windows(node: L.Window) -> bool:
    declared = node.type if node.type is not None else vector_of(node.source.type.element)
    element = declared.element if declared.is_vector else None
    # Integer windows keep their exact integer sums and extremes unfused.
    return element is not None and element.name in ("Real", "Number", "Object")


def _uses_of(nodes, target: str):
    """The fusable calls f(target) and whether target is used in any other way."""
    calls = []
    other = False
    for node in nodes:
        for expr in node.expressions():
            if expr is None:
                continue
            parents = {}
            for sub in walk_all(expr):
                for child in sub.children():
                    parents.setdefault(id(child), sub)
            for sub in walk_all(expr):
                if isinstance(sub, TVar) and sub.name == target:
                    parent = parents.get(id(sub))
                    if (isinstance(parent, TCall) and parent.fn.name in FUSABLE and len(parent.args) == 1
                            and parent.fn.kind == "scalar" and parent.lift is None):
                        calls.append(parent)
                    else:
                        other = True
    return calls, other


def _result_type(name: str, element: Type) -> Type:
    if name in ("sum", "min", "max") and element == INTEGER:
        return INTEGER
    return REAL

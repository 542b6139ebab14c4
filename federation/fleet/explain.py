"""EXPLAIN for fleet statements: the device set and each fragment, before anything runs."""
from __future__ import annotations

from streamql import ast as A
from streamql.explain import expr_text

from .execute import substituter


def explain_fleet(plan, catalog, candidates: list[str], hub, statement=None) -> str:
    online = [d for d in candidates if hub is not None and hub.is_online(d)]
    lines = [f"fleet {plan.kind} query over Edge {plan.edge_written}"]
    lines.append(f"  selection (registry index): {plan.selection_text}")
    lines.append(f"    → {len(candidates)} device{'s' if len(candidates) != 1 else ''} "
                 f"({len(online)} online, {len(candidates) - len(online)} offline)"
                 + (f": {', '.join(candidates[:8])}{' …' if len(candidates) > 8 else ''}" if candidates else ""))
    for condition in plan.prefilters:
        lines.append(f"  per device at the federation: {expr_text(condition)}")
    if plan.local:
        lines.append("  no fragment: answered from the registry")
        lines.append("  columns: " + ", ".join(plan.columns))
        return "\n".join(lines)
    fragment = plan.fragment
    lines.append(f"  fragment on each edge ({fragment.kind}):")
    lines.append(f"    {fragment.template()}")
    if candidates:
        example = candidates[0]
        source = fragment.source_for(example, substituter(catalog, plan.edge_written))
        if source != fragment.template():
            lines.append(f"    as sent to {example}: {source}")
    for condition in plan.post_filters:
        lines.append(f"  central filter: {expr_text(condition)}")
    if plan.query.aggregate_query:
        how = "partial aggregates merged" if any(a.partial for a in plan.aggregates) else "raw rows aggregated"
        lines.append(f"  central merge: {how} "
                     f"({', '.join(a.fn.name + ('(parts ' + ', '.join(a.fn.split.parts) + ')' if a.partial else '') for a in plan.aggregates)})")
    lines.append("  central: " + ", ".join(f"{expr_text(e)} as {n}" for n, e in plan.items))
    if plan.order_by:
        lines.append("  order by: " + ", ".join(expr_text(e) + (" desc" if d else "") for e, d in plan.order_by))
    if plan.limit is not None:
        lines.append(f"  limit: {expr_text(plan.limit)}")
    return "\n".join(lines)

"""The optimizer: named rewrite rules, one per file, applied in order by one pipeline.

Each rule takes the logical plan and a context and returns the plan; when it changes something
it says so through `ctx.fire(rule, what)`, which EXPLAIN shows. Rules only rewrite plan nodes and
typed expressions: how a rewritten node runs is the physical layer's choice (this package
imports neither numpy nor `physical`, a contract the tests check). Rules never fold, hoist or
share volatile expressions (`now`, `frand`, `signal_value`, sources).

    remote_fragments        on a federation: what depends on one edge's values runs on that edge
                            (a Remote node: the registry's selection, the fragment each edge runs)
    aggregate_split         aggregates over the edges' rows computed in parts there, merged here
    constant_folding        1 + 2 → 3; `and true` dropped; a filter that is always false empties the plan
    predicate_pushdown      filters into subqueries and into the streams their variable comes from
    limit_pushdown          `limit n` on a plain scan becomes first_n at the source, which then stops
    window_fusion           mean/sum/min/max/rms of a Window's windows computed per window, without
                            making the windows
    common_subexpressions   an expression used twice (mean(w) in select and where) computed once
    elementwise_fusion      chains of arithmetic and math on numbers marked to run as one kernel
    projection_pruning      columns dropped from batches after their last use
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

from ..logical import LogicalPlan
from . import (aggregate_split, common_subexpressions, constant_folding, elementwise_fusion, limit_pushdown,
               predicate_pushdown, projection_pruning, remote_fragments, window_fusion)

RULES = (
    remote_fragments.rule,
    aggregate_split.rule,
    constant_folding.rule,
    predicate_pushdown.rule,
    limit_pushdown.rule,
    window_fusion.rule,
    common_subexpressions.rule,
    elementwise_fusion.rule,
    projection_pruning.rule,
)


@dataclass
class OptimizerContext:
    rules: tuple = RULES
    fired: list[str] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)
    _names: count = field(default_factory=lambda: count(1))

    def fire(self, rule: str, what: str) -> None:
        if rule not in self.fired:
            self.fired.append(rule)
        self.trace.append(f"{rule}: {what}")

    def name(self, prefix: str) -> str:
        """A fresh hidden variable name (`$w1`, `$x2`, …) that no planner name can clash with."""
        return f"${prefix}{next(self._names)}"


def optimize(plan: LogicalPlan, rules: tuple | None = None) -> LogicalPlan:
    """Apply the rules in order, recording which fired and what each did."""
    ctx = OptimizerContext(rules=rules or RULES)
    for rule in ctx.rules:
        plan = rule(plan, ctx)
    plan.rules = list(ctx.fired)
    plan.trace = list(ctx.trace)
    return plan


def rule_names() -> list[str]:
    return [rule.__module__.rsplit(".", 1)[-1] for rule in RULES]

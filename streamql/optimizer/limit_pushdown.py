"""Limit pushdown: `limit n` over a plain scan of one stream or bag becomes `first_n` at the
source, so a file or sensor stops being read after n elements instead of when the consumer closes.

    select stream of x from Real x where x in csv:file_stream('big.csv') limit 5
    ─▶ Generate x in first_n(csv:file_stream('big.csv'), 5)

It applies only when nothing between the source and the limit can drop or multiply rows (no
filters, other generators, distinct, order by or aggregation).
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import logical as L
from ..bound import TConst, TExpr
from ..library.streams import first_n
from ..physical.expressions import Compiled
from ..streams import LazyBag, StreamValue
from .tree import nodes_of

NAME = "limit_pushdown"


@dataclass(frozen=True, eq=False)
class TTake(TExpr):
    """The first n elements of a stream or bag."""

    source: TExpr = None
    count: int = 0

    def children(self):
        return (self.source,)

    def describe(self) -> str:
        from ..explain import expr_text
        return f"first_n({expr_text(self.source)}, {self.count})"

    def compile(self, compiler) -> Compiled:
        source = compiler.compile(self.source)
        n = self.count

        def take(value):
            if isinstance(value, StreamValue):
                return first_n(value, n)
            if isinstance(value, LazyBag):
                limited = first_n(StreamValue(value.open, value.label), n)
                return LazyBag(limited.open, value.label)
            return value

        return Compiled(lambda chunk: [take(v) for v in source.batch(chunk)],
                        lambda env: take(source.row(env)), self.type)


def rule(plan: L.LogicalPlan, ctx) -> L.LogicalPlan:
    nodes = nodes_of(plan)
    if len(nodes) < 4 or not isinstance(nodes[-1], L.Limit) or not isinstance(nodes[-1].count, TConst):
        return plan
    count = nodes[-1].count.value
    if not isinstance(count, int) or count < 0:
        return plan
    middle = nodes[1:-1]
    generators = [n for n in middle if isinstance(n, (L.Generate, L.Scan))]
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

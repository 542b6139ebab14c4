"""From text to a runnable plan: parse → bind and check → plan → optimize → physical.

`compile_statement` does the first four (raising every error before anything runs);
`physical_plan` builds the operators for one run, planning subqueries on the way.
"""
from __future__ import annotations

from . import ast as A
from .binder import Binder
from .bound import BoundQuery
from .logical import LogicalPlan, Planner
from .physical.operators import PhysicalPlan


def bind_query(catalog, statement: A.Statement, source: str | None) -> BoundQuery:
    return Binder(catalog, source).bind_statement_query(statement)


def plan_query(bound: BoundQuery, source: str | None, optimize=None) -> LogicalPlan:
    plan = Planner(source).plan(bound)
    if optimize is not None:
        plan = optimize(plan)
    return plan


def compile_statement(catalog, statement: A.Statement, source: str | None, optimize=None) -> LogicalPlan:
    """A `select` or expression statement, checked and planned."""
    return plan_query(bind_query(catalog, statement, source), source, optimize)


def physical_plan(plan: LogicalPlan, ctx, optimize=None) -> PhysicalPlan:
    """The operators for one run of `plan` in `ctx`; subqueries are planned when first met."""
    source = plan.query.source
    cache: dict[int, PhysicalPlan] = {}

    def compile_subquery(query: BoundQuery):
        key = id(query)
        if key not in cache:
            cache[key] = physical_plan(plan_query(query, source, optimize), ctx, optimize)
        sub = cache[key]
        width = len(query.items)
        return lambda outer: query_values(sub.run(outer), width, ctx)

    return PhysicalPlan(plan, ctx, compile_subquery)


def query_values(items, width: int, ctx=None):
    """A query's output items as stream items of its values (several columns → vectors).

    With a context, cancellation and limits are checked per item: a subquery may be collected
    whole (`x in (select …)`, `count(select …)`) far from any other check."""
    from .batch import IDLE, Batch
    from .physical.chunk import column_values
    from .library.vector import make_vector
    names = [f"$c{i}" for i in range(width)]
    check = ctx.check if ctx is not None else None
    for item in items:
        if check is not None:
            check()
        if item is IDLE:
            yield item
        elif type(item) is dict:
            yield item[names[0]] if width == 1 else make_vector([item[n] for n in names])
        elif width == 1:
            yield Batch(item[names[0]])
        else:
            columns = [column_values(item[n]) for n in names]
            yield Batch([make_vector(list(row)) for row in zip(*columns)])

"""From text to a runnable plan: parse → bind and check → plan → optimize → physical.

`compile_statement` does the first four, raising every error before anything runs; the plan it
returns has every nested query planned and optimized too (`TQuery.plan`). `physical_plan` builds
the operators for one run; `compile_expression` does the same for one typed expression (a
statement's value), its nested queries planned first.
"""
from __future__ import annotations

from typing import Callable

from . import ast as A
from .binder import Binder
from .bound import BoundQuery, TExpr
from .logical import LogicalPlan, Planner, plan_subqueries, planned_once, with_subplans
from .physical.compiled import Compiled
from .physical.operators import PhysicalPlan, expression_compiler, query_values

Optimize = Callable[[LogicalPlan], LogicalPlan]

__all__ = ["bind_query", "plan_query", "compile_statement", "physical_plan", "compile_expression",
           "ExpressionCompiler", "query_values"]


def bind_query(catalog, statement: A.Statement, source: str | None) -> BoundQuery:
    return Binder(catalog, source).bind_statement_query(statement)


def plan_query(bound: BoundQuery, source: str | None, optimize: Optimize | None = None) -> LogicalPlan:
    """The optimized plan of a bound query, its nested queries planned the same way."""
    plan = Planner(source).plan(bound)
    if optimize is not None:
        plan = optimize(plan)
    return plan_subqueries(plan, lambda query: plan_query(query, source, optimize))


def compile_statement(catalog, statement: A.Statement, source: str | None,
                      optimize: Optimize | None = None) -> LogicalPlan:
    """A `select` or expression statement, checked and planned."""
    return plan_query(bind_query(catalog, statement, source), source, optimize)


def physical_plan(plan: LogicalPlan, ctx, optimize: Optimize | None = None) -> PhysicalPlan:
    """The operators for one run of `plan` in `ctx`. (`optimize` is not needed any more: nested
    queries come planned; it is accepted so that older callers keep working.)"""
    return PhysicalPlan(plan, ctx)


class ExpressionCompiler:
    """Compiles typed expressions for one context, planning their nested queries first."""

    def __init__(self, ctx, source: str | None = None, optimize: Optimize | None = None):
        self._compiler = expression_compiler(ctx)
        self._plan = planned_once(lambda query: plan_query(query, source, optimize))

    def compile(self, expr: TExpr) -> Compiled:
        return self._compiler.compile(with_subplans(expr, self._plan))


def compile_expression(expr: TExpr, ctx, source: str | None = None, optimize: Optimize | None = None) -> Compiled:
    """One typed expression compiled for ctx (nested queries planned and optimized first)."""
    return ExpressionCompiler(ctx, source, optimize).compile(expr)

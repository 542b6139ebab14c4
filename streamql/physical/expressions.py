"""Compile typed expressions, once per query run, into `Compiled` closures (a batch form over
columns and a row form for the scalar path; see compiled.py).

Each kind of node has its method; the nodes optimizer rules make are run here too: a fused kernel
(`TKernel`, kernels.py), a filtered or limited source (`TSourceFilter`, `TTake`, sources.py). A
nested query arrives planned (`TQuery.plan`) and runs through `run_subquery`. Nothing is folded
here: constant folding is the optimizer's (constant_folding), once.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..batch import IDLE, Batch
from ..bound import (TAggregate, TAnd, TAt, TCall, TCase, TConst, TExpr, TField, TKernel, TLet, TNarrow, TNot,
                     TOr, TQuery, TSourceFilter, TStored, TTake, TVar)
from ..errors import QueryRuntimeError
from ..streams import LazyBag, StreamValue, gather
from ..types import BOOLEAN
from ..values import hashable
from .calls import batch_caller, call_scalar, map_batch, row_caller, with_context, with_options
from .chunk import column_values, make_column
from .compiled import Compiled, as_mask, full_column, narrowing_checks
from .kernels import compile_kernel
from .sources import filtered_source, taken_source


class ExprCompiler:
    """Compiles expressions for one run of a query, with its context baked in."""

    def __init__(self, ctx, run_subquery: Callable | None = None):
        self.ctx = ctx
        self.run_subquery = run_subquery  # (LogicalPlan) -> runner(outer env) -> iterator of items

    def compile(self, expr: TExpr) -> Compiled:
        method = getattr(self, "_" + type(expr).__name__, None)
        if method is None:
            raise QueryRuntimeError(f"{type(expr).__name__} cannot run on this engine", expr.span)
        return method(expr)

    # ---------------------------------------------------------------------------- leaves
    def _TConst(self, expr: TConst) -> Compiled:
        return Compiled.constant(expr.value, expr.type)

    def _TVar(self, expr: TVar) -> Compiled:
        name = expr.name
        return Compiled(lambda chunk: chunk[name], lambda env: env[name], expr.type)

    # ----------------------------------------------------------------------------- calls
    def _TCall(self, expr: TCall) -> Compiled:
        fn = expr.fn
        args = [self.compile(a) for a in expr.args]
        if expr.lift == "stream":
            return self._lifted_over_stream(expr, args)
        scalar = fn.scalar
        batch = fn.batch
        ctx = self.ctx
        options = expr.options
        if options:
            scalar = with_options(scalar, options)
            batch = with_options(batch, options) if batch is not None else None
        if fn.needs_context:
            scalar = with_context(scalar, ctx)
        null_propagating = fn.null_propagating
        result_type = expr.type
        row = row_caller(scalar, args, null_propagating, expr)
        batch_fn = batch_caller(fn, scalar, batch, args, null_propagating, expr, ctx, result_type)
        return Compiled(batch_fn, row, result_type)

    def _lifted_over_stream(self, expr: TCall, args: list[Compiled]) -> Compiled:
        fn = expr.fn
        position = next(i for i, a in enumerate(expr.args) if a.type.is_stream)
        scalar = fn.scalar
        batch_impl = fn.batch
        if expr.options:
            scalar = with_options(scalar, expr.options)
            batch_impl = with_options(batch_impl, expr.options) if batch_impl is not None else None
        if fn.needs_context:
            scalar = with_context(scalar, self.ctx)
        null_propagating = fn.null_propagating
        label = fn.name
        element_is_timeval = expr.args[position].type.element.name == "Timeval"
        batch_scalars = fn.batch_scalars
        ctx = self.ctx

        def make(values: list) -> StreamValue:
            stream = values[position]
            others = values

            def open_mapped():
                for item in stream.open():
                    if item is IDLE:
                        yield item
                    elif type(item) is Batch:
                        try:
                            yield map_batch(item, others, position, scalar, batch_impl, null_propagating,
                                             element_is_timeval, fn, ctx, batch_scalars)
                        except QueryRuntimeError as exc:
                            raise exc.located(expr.span)
                        except (ArithmeticError, ValueError, TypeError, IndexError, KeyError) as exc:
                            raise QueryRuntimeError(f"{fn.name}: {exc}", expr.span) from None
                    else:
                        call_args = list(others)
                        call_args[position] = item
                        yield call_scalar(scalar, call_args, null_propagating, expr)
            return StreamValue(open_mapped, f"{label}(…)")

        def row(env):
            return make([a.row(env) for a in args])

        def batch(chunk):
            return [make(list(values)) for values in zip(*[column_values(full_column(a, chunk)) for a in args])]

        return Compiled(batch, row, expr.type)

    # ------------------------------------------------------------------------- booleans
    def _TAnd(self, expr: TAnd) -> Compiled:
        terms = [self.compile(t) for t in expr.terms]
        rows = [t.row for t in terms]

        def row(env):
            for term in rows:
                if not term(env):
                    return False
            return True

        def batch(chunk):
            mask = as_mask(full_column(terms[0], chunk), chunk.n)
            for term in terms[1:]:
                if not mask.any():
                    return mask
                mask = mask & as_mask(full_column(term, chunk), chunk.n)
            return mask

        return Compiled(batch, row, BOOLEAN)

    def _TOr(self, expr: TOr) -> Compiled:
        terms = [self.compile(t) for t in expr.terms]
        rows = [t.row for t in terms]

        def row(env):
            for term in rows:
                if term(env):
                    return True
            return False

        def batch(chunk):
            mask = as_mask(full_column(terms[0], chunk), chunk.n)
            for term in terms[1:]:
                mask = mask | as_mask(full_column(term, chunk), chunk.n)
            return mask

        return Compiled(batch, row, BOOLEAN)

    def _TNot(self, expr: TNot) -> Compiled:
        operand = self.compile(expr.operand)
        inner_row = operand.row
        return Compiled(lambda chunk: ~as_mask(full_column(operand, chunk), chunk.n),
                        lambda env: not inner_row(env), BOOLEAN)

    def _TCase(self, expr: TCase) -> Compiled:
        whens = [(self.compile(c), self.compile(v)) for c, v in expr.whens]
        otherwise = self.compile(expr.otherwise) if expr.otherwise is not None else Compiled.constant(None, expr.type)

        def row(env):
            for condition, value in whens:
                if condition.row(env):
                    return value.row(env)
            return otherwise.row(env)

        def batch(chunk):
            n = chunk.n
            result = None
            remaining = np.ones(n, dtype=bool)
            choices = []
            for condition, value in whens:
                mask = as_mask(full_column(condition, chunk), n) & remaining
                choices.append((mask, value))
                remaining &= ~mask
            choices.append((remaining, otherwise))
            columns = [(mask, full_column(value, chunk)) for mask, value in choices]
            if all(isinstance(c, np.ndarray) and c.dtype != object for _, c in columns) and \
                    len({c.shape[1:] for _, c in columns}) == 1:
                result = np.select([m for m, _ in columns], [c for _, c in columns])
                return result
            out = [None] * n
            for mask, column in columns:
                values = column_values(column)
                for i in np.flatnonzero(mask):
                    out[i] = values[i]
            return make_column(out)

        return Compiled(batch, row, expr.type)

    # ------------------------------------------------------------------------ narrowing
    def _TNarrow(self, expr: TNarrow) -> Compiled:
        operand = self.compile(expr.operand)
        check_value, check_column = narrowing_checks(expr.type, expr.label)
        if operand.const:
            check_value(operand.value)
            return operand
        inner_row, inner_batch = operand.row, operand.batch

        def row(env):
            return check_value(inner_row(env))

        def batch(chunk):
            column = inner_batch(chunk)
            return check_column(column)

        return Compiled(batch, row, expr.type)

    def _TLet(self, expr: TLet) -> Compiled:
        value = self.compile(expr.value)
        body = self.compile(expr.body)
        name = expr.name

        def row(env):
            inner = dict(env)
            inner[name] = value.row(env)
            return body.row(inner)

        def batch(chunk):
            return body.batch(chunk.with_column(name, full_column(value, chunk)))

        return Compiled(batch, row, expr.type)

    # --------------------------------------------------------------------------- store
    def _TStored(self, expr: TStored) -> Compiled:
        args = [self.compile(a) for a in expr.args]
        function = expr.function

        def lookup(values):
            key = tuple(hashable(v) for v in values)
            return function.values.get(key)

        def row(env):
            return lookup([a.row(env) for a in args])

        def batch(chunk):
            columns = [column_values(full_column(a, chunk)) for a in args]
            return make_column([lookup(values) for values in zip(*columns)])

        return Compiled(batch, row, expr.type)

    def _TField(self, expr: TField) -> Compiled:
        target = self.compile(expr.target)
        position = expr.position

        def row(env):
            value = target.row(env)
            return None if value is None else value[position]

        def batch(chunk):
            return make_column([None if r is None else r[position] for r in column_values(target.batch(chunk))])

        return Compiled(batch, row, expr.type)

    # ------------------------------------------------------------------------- queries
    def _TQuery(self, expr: TQuery) -> Compiled:
        query = expr.query
        if expr.plan is None or self.run_subquery is None:
            raise QueryRuntimeError("a nested query must be planned before it runs", expr.span)
        runner = self.run_subquery(expr.plan)
        kind = query.kind
        cacheable = not query.outer_references and not query.volatile
        cache: list = []

        def value_for(env):
            if cacheable and cache:
                return cache[0]
            if kind == "stream":
                value = StreamValue(lambda: runner(env), "subquery")
            elif kind == "vector":
                column = gather(runner(env), self.ctx, "a subquery's vector")
                value = column if isinstance(column, np.ndarray) and column.dtype != object else list(column_values(column))
            else:
                value = LazyBag(lambda: runner(env), "a subquery's bag", ctx=self.ctx)
            if cacheable:
                cache.append(value)
            return value

        def batch(chunk):
            return [value_for(env) for env in chunk.rows()]

        return Compiled(batch, value_for, expr.type)

    # ------------------------------------------------------------ made by optimizer rules
    def _TKernel(self, expr: TKernel) -> Compiled:
        return compile_kernel(expr, self.compile(expr.expr))

    def _TSourceFilter(self, expr: TSourceFilter) -> Compiled:
        return filtered_source(self.compile(expr.source), self.compile(expr.predicate), expr.variable,
                               expr.narrow, self.ctx)

    def _TTake(self, expr: TTake) -> Compiled:
        return taken_source(self.compile(expr.source), expr.count, self.ctx)

    # --------------------------------------------------------------------- not here
    def _TAt(self, expr: TAt) -> Compiled:
        raise QueryRuntimeError("`@ e` can only run on a federation", expr.span)

    def _TAggregate(self, expr: TAggregate) -> Compiled:  # pragma: no cover - planned by Aggregate
        raise QueryRuntimeError("an aggregate outside an aggregation", expr.span)



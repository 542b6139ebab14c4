"""Compile typed expressions, once per query, into closures.

Every expression becomes a `Compiled` with two forms: `batch(chunk)` computes a whole column with
numpy where it can, and `row(env)` computes one value for the scalar fast path (a batch of one
reading takes plain Python, no numpy). Constants are folded into `value` with `const=True`.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..bound import (TAggregate, TAnd, TAt, TCall, TCase, TConst, TExpr, TField, TLet, TNarrow, TNot,
                     TOr, TQuery, TStored, TVar)
from ..errors import QueryRuntimeError
from ..streams import LazyBag, StreamValue, collect_column, iter_elements
from ..batch import IDLE, Batch
from ..types import BOOLEAN, INTEGER, NUMBER, OBJECT, REAL, Type
from .chunk import Chunk, broadcast, column_values, make_column


class Compiled:
    __slots__ = ("batch", "row", "const", "value", "type")

    def __init__(self, batch: Callable, row: Callable, type_: Type, const: bool = False, value: Any = None):
        self.batch = batch
        self.row = row
        self.type = type_
        self.const = const
        self.value = value

    @classmethod
    def constant(cls, value: Any, type_: Type) -> "Compiled":
        return cls(lambda chunk: value, lambda env: value, type_, True, value)


def full_column(compiled: Compiled, chunk: Chunk):
    """The value of an expression as a column of chunk.n values (constants broadcast)."""
    if compiled.const:
        return broadcast(compiled.value, chunk.n)
    return compiled.batch(chunk)


class ExprCompiler:
    """Compiles expressions for one run of a query, with its context baked in."""

    def __init__(self, ctx, plan_subquery: Callable | None = None):
        self.ctx = ctx
        self.plan_subquery = plan_subquery  # (BoundQuery) -> runner(outer_env) -> iterator of items
        self._cache: dict[int, Compiled] = {}

    def compile(self, expr: TExpr) -> Compiled:
        method = getattr(self, "_" + type(expr).__name__, None)
        if method is None:  # nodes made by optimizer rules compile themselves
            return expr.compile(self)
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
            scalar = _with_options(scalar, options)
            batch = _with_options(batch, options) if batch is not None else None
        if fn.needs_context:
            scalar = _with_context(scalar, ctx)
        null_propagating = fn.null_propagating
        result_type = expr.type

        # Constant folding: deterministic calls of constants are computed now.
        if not fn.volatile and all(a.const for a in args) and fn.kind != "source":
            value = _call_scalar(scalar, [a.value for a in args], null_propagating, expr)
            return Compiled.constant(value, result_type)

        row = _row_caller(scalar, args, null_propagating, expr)
        batch_fn = _batch_caller(fn, scalar, batch, args, null_propagating, expr, ctx, result_type)
        return Compiled(batch_fn, row, result_type)

    def _lifted_over_stream(self, expr: TCall, args: list[Compiled]) -> Compiled:
        fn = expr.fn
        position = next(i for i, a in enumerate(expr.args) if a.type.is_stream)
        scalar = fn.scalar
        batch_impl = fn.batch
        if expr.options:
            scalar = _with_options(scalar, expr.options)
            batch_impl = _with_options(batch_impl, expr.options) if batch_impl is not None else None
        if fn.needs_context:
            scalar = _with_context(scalar, self.ctx)
        null_propagating = fn.null_propagating
        label = fn.name
        element_is_timeval = expr.args[position].type.element.name == "Timeval"
        batch_scalars = getattr(fn, "batch_scalars", False)
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
                            yield _map_batch(item, others, position, scalar, batch_impl, null_propagating,
                                             element_is_timeval, fn, ctx, batch_scalars)
                        except QueryRuntimeError as exc:
                            raise exc.located(expr.span)
                        except (ArithmeticError, ValueError, TypeError, IndexError, KeyError) as exc:
                            raise QueryRuntimeError(f"{fn.name}: {exc}", expr.span) from None
                    else:
                        call_args = list(others)
                        call_args[position] = item
                        yield _call_scalar(scalar, call_args, null_propagating, expr)
            return StreamValue(open_mapped, f"{label}(…)")

        def row(env):
            return make([a.row(env) for a in args])

        def batch(chunk):
            return [make(list(values)) for values in zip(*[column_values(full_column(a, chunk)) for a in args])]

        return Compiled(batch, row, expr.type)

    # ------------------------------------------------------------------------- booleans
    def _TAnd(self, expr: TAnd) -> Compiled:
        terms = [self.compile(t) for t in expr.terms]
        if any(t.const and not _truthy(t.value) for t in terms):
            return Compiled.constant(False, BOOLEAN)
        terms = [t for t in terms if not t.const]
        if not terms:
            return Compiled.constant(True, BOOLEAN)
        if len(terms) == 1:
            return terms[0]
        rows = [t.row for t in terms]

        def row(env):
            for term in rows:
                if not term(env):
                    return False
            return True

        def batch(chunk):
            mask = _as_mask(terms[0].batch(chunk), chunk.n)
            for term in terms[1:]:
                if not mask.any():
                    return mask
                mask = mask & _as_mask(term.batch(chunk), chunk.n)
            return mask

        return Compiled(batch, row, BOOLEAN)

    def _TOr(self, expr: TOr) -> Compiled:
        terms = [self.compile(t) for t in expr.terms]
        if any(t.const and _truthy(t.value) for t in terms):
            return Compiled.constant(True, BOOLEAN)
        terms = [t for t in terms if not t.const]
        if not terms:
            return Compiled.constant(False, BOOLEAN)
        rows = [t.row for t in terms]

        def row(env):
            for term in rows:
                if term(env):
                    return True
            return False

        def batch(chunk):
            mask = _as_mask(terms[0].batch(chunk), chunk.n)
            for term in terms[1:]:
                mask = mask | _as_mask(term.batch(chunk), chunk.n)
            return mask

        return Compiled(batch, row, BOOLEAN)

    def _TNot(self, expr: TNot) -> Compiled:
        operand = self.compile(expr.operand)
        if operand.const:
            return Compiled.constant(not _truthy(operand.value), BOOLEAN)
        inner_row, inner_batch = operand.row, operand.batch
        return Compiled(lambda chunk: ~_as_mask(inner_batch(chunk), chunk.n),
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
                mask = _as_mask(full_column(condition, chunk), n) & remaining
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
            value = inner_row(env)
            check_value(value)
            return value

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
        from ..values import hashable

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
        runner = self.plan_subquery(query)
        kind = query.kind
        cacheable = not query.outer_references and not query.volatile
        cache: list = []

        def value_for(env):
            if cacheable and cache:
                return cache[0]
            if kind == "stream":
                value = StreamValue(lambda: runner(env), "subquery")
            elif kind == "vector":
                column = collect_column(runner(env))
                value = column if isinstance(column, np.ndarray) and column.dtype != object else list(column_values(column))
            else:
                value = LazyBag(lambda: runner(env), "subquery")
            if cacheable:
                cache.append(value)
            return value

        def batch(chunk):
            return [value_for(env) for env in chunk.rows()]

        return Compiled(batch, value_for, expr.type)

    def _TAt(self, expr: TAt) -> Compiled:
        raise QueryRuntimeError("`@ e` can only run on a federation", expr.span)

    def _TAggregate(self, expr: TAggregate) -> Compiled:  # pragma: no cover - planned by Aggregate
        raise QueryRuntimeError("an aggregate outside an aggregation", expr.span)


# ------------------------------------------------------------------------------- helpers
def _truthy(value) -> bool:
    return bool(value) if value is not None else False


def _as_mask(column, n: int) -> np.ndarray:
    if isinstance(column, np.ndarray):
        if column.dtype == bool:
            return column
        if column.ndim == 0:
            return np.full(n, bool(column))
        return np.array([bool(v) if v is not None else False for v in column.tolist()], dtype=bool)
    if isinstance(column, (bool, np.bool_)) or column is None:
        return np.full(n, bool(column))
    return np.array([bool(v) if v is not None else False for v in column], dtype=bool)


as_mask = _as_mask


def _with_context(fn, ctx):
    if fn is None:
        return None
    return lambda *args: fn(ctx, *args)


def _with_options(fn, options):
    if fn is None:
        return None
    return lambda *args: fn(*args, options=options)


def _call_scalar(scalar, values, null_propagating, expr):
    if null_propagating:
        for v in values:
            if v is None:
                return None
    try:
        return scalar(*values)
    except QueryRuntimeError as exc:
        raise exc.located(expr.span)
    except (ArithmeticError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise QueryRuntimeError(f"{_name(expr)}: {exc}", expr.span) from None


def _name(expr) -> str:
    fn = getattr(expr, "fn", None)
    return getattr(fn, "name", "expression")


def _row_caller(scalar, args: list[Compiled], null_propagating: bool, expr) -> Callable:
    span = expr.span
    name = _name(expr)

    def fail(exc):
        if isinstance(exc, QueryRuntimeError):
            raise exc.located(span)
        raise QueryRuntimeError(f"{name}: {exc}", span) from None

    if len(args) == 1:
        a0 = args[0].row
        if null_propagating:
            def row(env):
                v = a0(env)
                if v is None:
                    return None
                try:
                    return scalar(v)
                except Exception as exc:  # noqa: BLE001 - turned into a QueryRuntimeError
                    fail(exc)
        else:
            def row(env):
                try:
                    return scalar(a0(env))
                except Exception as exc:  # noqa: BLE001
                    fail(exc)
        return row
    if len(args) == 2:
        a0, a1 = args[0].row, args[1].row
        if null_propagating:
            def row(env):
                v0 = a0(env)
                v1 = a1(env)
                if v0 is None or v1 is None:
                    return None
                try:
                    return scalar(v0, v1)
                except Exception as exc:  # noqa: BLE001
                    fail(exc)
        else:
            def row(env):
                try:
                    return scalar(a0(env), a1(env))
                except Exception as exc:  # noqa: BLE001
                    fail(exc)
        return row
    rows = [a.row for a in args]

    def row(env):
        values = [r(env) for r in rows]
        if null_propagating and any(v is None for v in values):
            return None
        try:
            return scalar(*values)
        except Exception as exc:  # noqa: BLE001
            fail(exc)
    return row


def _is_plain_array(value) -> bool:
    return isinstance(value, np.ndarray) and value.dtype != object


def _batch_caller(fn, scalar, batch, args: list[Compiled], null_propagating: bool, expr, ctx,
                  result_type: Type) -> Callable:
    span = expr.span
    name = fn.name
    batch_scalars = getattr(fn, "batch_scalars", False)
    needs_context = fn.needs_context
    convert = result_type.is_numeric or result_type == BOOLEAN or result_type == OBJECT or result_type.is_vector

    def per_row(chunk, columns):
        n = chunk.n
        lists = []
        for a, column in zip(args, columns):
            if a.const:
                lists.append([a.value] * n)
            else:
                lists.append(column_values(column))
        out = []
        append = out.append
        try:
            if null_propagating:
                for values in zip(*lists) if lists else ([()] * n):
                    if any(v is None for v in values):  # `None in values` would compare arrays with ==
                        append(None)
                    else:
                        append(scalar(*values))
            else:
                for values in zip(*lists) if lists else ([()] * n):
                    append(scalar(*values))
        except QueryRuntimeError as exc:
            raise exc.located(span)
        except (ArithmeticError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise QueryRuntimeError(f"{name}: {exc}", span) from None
        return make_column(out) if convert else out

    def run(chunk):
        columns = [None if a.const else a.batch(chunk) for a in args]
        if batch is not None and all(a.const or _is_plain_array(c) for a, c in zip(args, columns)):
            values = []
            for a, c in zip(args, columns):
                if a.const:
                    if a.value is None and null_propagating:
                        return [None] * chunk.n
                    values.append(a.value if batch_scalars else broadcast(a.value, chunk.n))
                else:
                    values.append(c)
            try:
                if needs_context:
                    return batch(ctx, chunk.n, *values)
                return batch(*values)
            except QueryRuntimeError as exc:
                raise exc.located(span)
            except (ArithmeticError, ValueError, TypeError, IndexError) as exc:
                raise QueryRuntimeError(f"{name}: {exc}", span) from None
        return per_row(chunk, columns)

    return run


def _map_batch(item: Batch, others: list, position: int, scalar, batch_impl, null_propagating,
               element_is_timeval: bool, fn, ctx, batch_scalars: bool) -> Batch:
    """Apply a lifted function to one batch of a stream."""
    values = item.values
    if element_is_timeval and fn.params and fn.params[position].type.name == "Timeval":
        timevals = list(iter_elements([item]))
        out = [None if v is None and null_propagating else scalar(*_with(others, position, v)) for v in timevals]
        return Batch(make_column(out))
    if batch_impl is not None and _is_plain_array(values) and all(
            i == position or not isinstance(o, (list, dict)) for i, o in enumerate(others)):
        n = len(values)
        call_args = []
        for i, other in enumerate(others):
            if i == position:
                call_args.append(values)
            elif batch_scalars or not isinstance(other, (int, float, bool, np.ndarray)):
                call_args.append(other)
            else:
                call_args.append(broadcast(other, n))
        result = batch_impl(ctx, n, *call_args) if fn.needs_context else batch_impl(*call_args)
        if isinstance(result, (np.ndarray, list)) and len(result) == n:
            return Batch(result, item.times)
        # the batch form did not give one value per element: fall back to element by element
    column = column_values(values)
    out = []
    for v in column:
        args = _with(others, position, v)
        out.append(None if null_propagating and any(a is None for a in args) else scalar(*args))
    return Batch(make_column(out), item.times)


def _with(values: list, position: int, replacement) -> list:
    out = list(values)
    out[position] = replacement
    return out


# ------------------------------------------------------------------------- narrowing checks
def narrowing_checks(target: Type, label: str):
    """Run-time checks that values fit `target`: one for a value, one for a column."""

    def fits(value) -> bool:
        return value_fits(value, target)

    def check_value(value):
        if value is not None and not fits(value):
            from ..values import format_value
            raise QueryRuntimeError(f"{label} must be {target}, but got {format_value(value)}")

    def check_column(column):
        if isinstance(column, np.ndarray) and column.dtype != object:
            if column_fits(column, target):
                return column
            raise QueryRuntimeError(f"{label} must be {target}, but got values of type {column.dtype}")
        for value in column_values(column):
            check_value(value)
        return column

    return check_value, check_column


def value_fits(value, target: Type) -> bool:
    name = target.name
    if name == "Object":
        return True
    if name in ("Number", "Real"):
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if name == "Integer":
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if name == "Boolean":
        return isinstance(value, (bool, np.bool_))
    if name == "Charstring":
        return isinstance(value, str)
    if name == "Vector":
        if isinstance(value, np.ndarray):
            return value.dtype == object or column_fits(value, target.element)
        return isinstance(value, list) and all(v is None or value_fits(v, target.element) for v in value)
    if name == "Record":
        return isinstance(value, dict)
    if name == "Time":
        from ..values import Time
        return isinstance(value, Time)
    if name == "Timeval":
        from ..values import Timeval
        return isinstance(value, Timeval)
    if name == "Stream":
        return isinstance(value, StreamValue)
    if name == "Bag":
        from ..values import Bag
        return isinstance(value, (Bag, LazyBag))
    return True


def column_fits(column: np.ndarray, target: Type) -> bool:
    """Whether a plain numpy column (1-D of scalars, 2-D of vectors, …) holds values of target."""
    depth, scalar = 0, target
    while scalar.name == "Vector":
        depth += 1
        scalar = scalar.element
    if scalar.name == "Object":
        return column.ndim >= depth + 1
    if column.ndim != depth + 1:
        return False
    kind = column.dtype.kind
    if scalar.name in ("Number", "Real"):
        return kind in "iuf"
    if scalar.name == "Integer":
        return kind in "iu"
    if scalar.name == "Boolean":
        return kind == "b"
    return False

"""Calls of library functions, compiled: the row form calls the scalar implementation, the batch
form the batch implementation where the arguments are plain arrays (else element by element), and
a function lifted over a stream maps over each batch of it. Failures become QueryRuntimeErrors
located at the call.

A constant vector in every row of a batch (`range(1, 100000) + i`) makes a vector per row: its
room (rows × the vector) is asked of the statement's budget before numpy builds it.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np

from ..batch import Batch
from ..errors import QueryError, QueryRuntimeError
from ..streams import iter_elements, reserve
from ..types import BOOLEAN, OBJECT, Type
from .chunk import broadcast, column_values, make_column
from .compiled import Compiled


def with_context(fn, ctx):
    if fn is None:
        return None
    return partial(fn, ctx)   # (a C-level binding: a call per row costs no extra Python frame)


def with_options(fn, options):
    if fn is None:
        return None
    return lambda *args: fn(*args, options=options)


def call_scalar(scalar, values, null_propagating, expr):
    if null_propagating:
        for v in values:
            if v is None:
                return None
    try:
        return scalar(*values)
    except QueryError as exc:   # a procedure's TypeError stays one
        raise exc.located(expr.span)
    except (ArithmeticError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise QueryRuntimeError(f"{_name(expr)}: {exc}", expr.span) from None


def _name(expr) -> str:
    fn = getattr(expr, "fn", None)
    return getattr(fn, "name", "expression")


def row_caller(scalar, args: list[Compiled], null_propagating: bool, expr) -> Callable:
    span = expr.span
    name = _name(expr)

    def fail(exc):
        if isinstance(exc, QueryError):
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


def batch_caller(fn, scalar, batch, args: list[Compiled], null_propagating: bool, expr, ctx,
                 result_type: Type) -> Callable:
    span = expr.span
    name = fn.name
    # constants may go to the batch form as plain scalars, unless all are: a column must come out
    batch_scalars = fn.batch_scalars and not all(a.const for a in args)
    needs_context = fn.needs_context
    convert = result_type.is_numeric or result_type == BOOLEAN or result_type == OBJECT or result_type.is_vector
    # the widest constant vector: a vector result may repeat it in every row of a batch
    constant_bytes = max((a.value.nbytes for a in args if a.const and isinstance(a.value, np.ndarray)), default=0)
    widens = result_type.is_vector and constant_bytes > 0 and not fn.sized   # sized ones ask for themselves

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
        except QueryError as exc:
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
                if widens:
                    _room_for_rows(ctx, chunk.n, constant_bytes, columns, name)
                if needs_context:
                    return batch(ctx, chunk.n, *values)
                return batch(*values)
            except QueryError as exc:
                raise exc.located(span)
            except (ArithmeticError, ValueError, TypeError, IndexError) as exc:
                raise QueryRuntimeError(f"{name}: {exc}", span) from None
        return per_row(chunk, columns)

    constants = [a.const for a in args]
    if len(args) == 2 and constants.count(True) == 1:
        at = constants.index(True)
        if (batch is not None and batch_scalars and not needs_context and not widens
                and not (null_propagating and args[at].value is None)):
            return _with_one_constant(per_row, batch, args, at, name, span)
    return run


def _with_one_constant(per_row, batch, args: list[Compiled], constant_at: int, name: str, span):
    """`run` for a binary function of a column and a constant (`x > 0.1`, `x * 2`): the
    column goes to the batch form at once (the general `run` costs a few µs per batch)."""
    constant, column_of = args[constant_at].value, args[1 - constant_at].batch

    def run_with_constant(chunk):
        column = column_of(chunk)
        if not _is_plain_array(column):
            return per_row(chunk, [column, None] if constant_at else [None, column])
        try:
            return batch(column, constant) if constant_at else batch(constant, column)
        except QueryError as exc:
            raise exc.located(span)
        except (ArithmeticError, ValueError, TypeError, IndexError) as exc:
            raise QueryRuntimeError(f"{name}: {exc}", span) from None
    return run_with_constant


def _room_for_rows(ctx, n: int, constant_bytes: int, columns, name: str) -> None:
    """Ask for n copies of a constant vector when they would outgrow every column at hand."""
    existing = max((c.nbytes for c in columns if isinstance(c, np.ndarray)), default=0)
    if n * constant_bytes > existing:
        reserve(ctx, n * constant_bytes, f"{name} of a constant vector in each of {n} rows")


def map_batch(item: Batch, others: list, position: int, scalar, batch_impl, null_propagating,
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
        constant_bytes = max((o.nbytes for i, o in enumerate(others) if i != position and isinstance(o, np.ndarray)),
                             default=0)
        if constant_bytes and fn.result.is_vector:
            _room_for_rows(ctx, n, constant_bytes, [values], fn.name)
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

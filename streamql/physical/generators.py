"""The stages that bind variables: Generate (from a stream, bag, vector or value), Window (count
windows over a stream, or the aggregates fused into them) and Scan (the objects of a type).

A stream is read item by item: a batch becomes a chunk of rows, a batch of one and a single
reading take the scalar path (a dict), and `IDLE` ticks pass on; cancellation and time limits are
checked for every item, even when later filters drop every row.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from .. import logical as L
from ..batch import IDLE, Batch
from ..errors import QueryLimitError
from ..streams import LazyBag, StreamValue
from ..values import Bag, Time, Timeval, as_numeric_array
from .chunk import Chunk, broadcast, column_values, make_column, repeat_column
from .compiled import full_column, narrowing_checks
from .windows import WINDOW_VALUES, WindowAggregates, count_windows


def build_generate(node: L.Generate, compiler, ctx):
    source = compiler.compile(node.source)
    targets, mode = node.targets, node.mode
    target = targets[0]
    checks = [narrowing_checks(t, f"variable {name.split('~')[0]}") if t is not None else None
              for t, name in zip(node.narrow or (None,) * len(targets), targets)]
    check_value, check_column = checks[0] if checks[0] else (None, None)
    wants_timeval = bool(node.types) and node.types[0].name == "Timeval"

    def bind_whole(env: dict, value) -> dict | None:
        if mode == "destructure":
            items = column_values(value) if isinstance(value, np.ndarray) else list(value)
            if len(items) != len(targets):
                return None
            row = dict(env)
            for name, item, check in zip(targets, items, checks):
                if check:
                    item = check[0](item)
                row[name] = item
            return row
        if check_value is not None:
            value = check_value(value)
        row = dict(env)
        row[target] = value
        return row

    def expand(env: dict, value) -> Iterator[Any]:
        if value is None:
            return
        if mode != "each":
            row = bind_whole(env, value)
            if row is not None:
                yield row
            return
        if isinstance(value, StreamValue):
            yield from bind_stream(env, value.open(), target, check_value, check_column, wants_timeval, ctx)
            return
        if isinstance(value, LazyBag):
            for item in value.open():
                ctx.check()
                if item is IDLE:
                    continue
                column = item.values if type(item) is Batch else [item]
                if len(column):
                    if check_column is not None:
                        column = check_column(column)
                    yield chunk_with(env, target, column)
            return
        if isinstance(value, Bag):
            column = make_column(value.items)
        elif isinstance(value, (np.ndarray, list, tuple)):
            column = value if isinstance(value, np.ndarray) else make_column(list(value))
        else:  # a single value where a collection was expected: bind it whole
            if check_value is not None:
                value = check_value(value)
            row = dict(env)
            row[target] = value
            yield row
            return
        if len(column):
            if check_column is not None:
                column = check_column(column)
            yield chunk_with(env, target, column)

    source_row = source.row
    vectorized_whole = mode == "whole" and not node.source.type.is_collection

    def generate(upstream, outer):
        for item in upstream:
            if item is IDLE:
                yield item
            elif type(item) is dict:
                yield from expand(item, source_row(item))
            elif vectorized_whole:
                column = full_column(source, item)
                if check_column is not None:
                    column = check_column(column)
                yield item.with_column(target, column)
            else:
                for env in item.rows():
                    yield from expand(env, source_row(env))
    return generate


def build_window(node: L.Window, compiler, ctx):
    source_row = compiler.compile(node.source).row
    size, stride, target = node.size, node.stride, node.target
    if node.aggregates:
        variable = target.split("~")[0] if node.narrow is not None else None
        shape = WindowAggregates(tuple(a.function for a in node.aggregates), variable)
        outputs = node.outputs

        def expand(env: dict, stream: StreamValue) -> Iterator[Any]:
            yield from bind_columns(env, count_windows(stream.open(), size, stride, shape, ctx), outputs, ctx)
    else:
        check_value, check_column = (narrowing_checks(node.narrow, f"variable {target.split('~')[0]}")
                                     if node.narrow is not None else (None, None))

        def expand(env: dict, stream: StreamValue) -> Iterator[Any]:
            windows = count_windows(stream.open(), size, stride, WINDOW_VALUES, ctx)
            yield from bind_stream(env, windows, target, check_value, check_column, False, ctx)

    def window(upstream, outer):
        for item in upstream:
            if item is IDLE:
                yield item
                continue
            for env in ([item] if type(item) is dict else item.rows()):
                stream = source_row(env)
                if stream is not None:
                    try:   # a window too large to hold is refused at the winagg call, before any reading
                        ctx.allocate(8 * size, f"a window of {size} elements")
                    except QueryLimitError as exc:
                        raise exc.located(node.span)
                    yield from expand(env, stream)
    return window


CROSS_ROWS = 1 << 16   # rows of one chunk of a cross product of scans, at most (beyond: row by row)


def build_scan(node: L.Scan, ctx):
    variable, type_ = node.variable, node.type

    def scan(upstream, outer):
        for item in upstream:
            if item is IDLE:
                yield item
                continue
            objects = ctx.store.extent(type_)
            if not objects:
                continue
            column = make_column(list(objects))
            if type(item) is dict:
                yield chunk_with(item, variable, column)
            elif item.n * len(column) > CROSS_ROWS:   # a cross product: an outer row at a time
                for env in item.rows():
                    ctx.check()
                    yield chunk_with(env, variable, column)
            else:
                k = len(column)
                counts = np.full(item.n, k)
                out = {name: repeat_column(col, counts) for name, col in item.items()}
                out[variable] = _tile(column, item.n)
                yield Chunk(out, item.n * k)
    return scan


# ------------------------------------------------------------------------------- binding
def bind_stream(env: dict, items, target: str, check_value, check_column, wants_timeval: bool, ctx):
    """Rows binding `target` to each element of stream items, each also holding env's values."""
    check, check_unpaced = ctx.check, ctx.check_unpaced
    try:
        for item in items:
            if item is IDLE:     # a tick while the stream waits for input: nothing to compute
                check_unpaced()
                yield IDLE
                continue
            check()  # cancellation and time limits, even when later filters drop every row
            if type(item) is Batch:
                column = item.values
                if len(column) <= 1:  # a batch of one takes the scalar path
                    if len(column) == 1:
                        single = _single(item, wants_timeval)
                        if check_value is not None:
                            single = check_value(single)
                        row = dict(env)
                        row[target] = single
                        yield row
                    continue
                if wants_timeval and item.times is not None:
                    column = [Timeval(Time(float(t)), _py(v)) for t, v in zip(item.times, column_values(column))]
                if check_column is not None:
                    column = check_column(column)
                yield chunk_with(env, target, column)
            else:
                if check_value is not None:
                    item = check_value(item)
                row = dict(env)
                row[target] = item
                yield row
    finally:
        close = getattr(items, "close", None)
        if close:
            close()


def bind_columns(env: dict, items, targets: tuple[str, ...], ctx):
    """Rows of several values each (a window's fused aggregates), one value per target."""
    check = ctx.check
    try:
        for item in items:
            check()
            if item is IDLE:
                yield IDLE
            elif type(item) is Batch:
                block = item.values
                if len(block) == 0:
                    continue
                n = len(block)
                columns = {name: broadcast(v, n) for name, v in env.items()}
                for i, name in enumerate(targets):
                    columns[name] = block[:, i]
                yield Chunk(columns, n)
            else:
                row = dict(env)
                for name, v in zip(targets, item):
                    row[name] = _py(v)
                yield row
    finally:
        close = getattr(items, "close", None)
        if close:
            close()


def chunk_with(env: dict, name: str | None, column) -> Chunk:
    """A chunk of the rows of `column` (or one row), each also holding env's values."""
    n = len(column) if name is not None else 1
    columns = {key: broadcast(value, n) if name is not None else _one(value) for key, value in env.items()}
    if name is not None:
        columns[name] = column
    return Chunk(columns, n)


def _one(value):
    converted = as_numeric_array([value])
    return converted if converted is not None else [value]


def _py(value):
    return value.item() if isinstance(value, np.generic) else value


def _single(item: Batch, timeval: bool):
    value = item.values[0]
    value = value.item() if isinstance(value, np.generic) else value
    if timeval and item.times is not None:
        return Timeval(Time(float(item.times[0])), value)
    return value


def _tile(column, times: int):
    if isinstance(column, np.ndarray):
        return np.tile(column, (times,) + (1,) * (column.ndim - 1))
    return list(column) * times

"""Sources shaped by optimizer rules: filtered as they produce (`TSourceFilter`, from
predicate_pushdown) and stopped after n elements (`TTake`, from limit_pushdown).

Both wrap a stream or bag value without reading it; reading starts when the generator over it
opens the value. `take_items` is also the library's `first_n`.
"""
from __future__ import annotations

import numpy as np

from ..batch import IDLE, Batch
from ..streams import LazyBag, StreamValue
from .chunk import Chunk
from .compiled import Compiled, as_mask, narrowing_checks
from .stateful import FirstN, run_logic


def filtered_source(source: Compiled, predicate: Compiled, variable: str, narrow, ctx) -> Compiled:
    """The values of `source` with only the elements (named `variable`) for which `predicate`
    holds; each checked against the declared type `narrow` first. `ctx.check` notices
    cancellation and limits while a condition drops everything."""
    check = ctx.check
    checks = narrowing_checks(narrow, f"variable {variable.split('~')[0]}") if narrow is not None else None

    def filtered(value):
        if value is None:   # a source given null (iota(null, 5)) has no elements to filter
            return None
        if isinstance(value, StreamValue):
            return StreamValue(lambda: filter_items(value.open(), variable, predicate, checks, check), value.label)
        if isinstance(value, LazyBag):
            return LazyBag(lambda: filter_items(value.open(), variable, predicate, checks, check), value.label,
                           ctx=value.ctx)
        items = value.items if hasattr(value, "items") and not isinstance(value, (dict, list, np.ndarray)) else value
        return LazyBag(lambda: filter_items(iter([Batch(items)]), variable, predicate, checks, check), "filtered",
                       ctx=ctx)

    source_row, source_batch = source.row, source.batch
    return Compiled(lambda chunk: [filtered(v) for v in source_batch(chunk)],
                    lambda env: filtered(source_row(env)), source.type)


def filter_items(items, name: str, predicate: Compiled, checks=None, stop=None):
    test_row, test_batch = predicate.row, predicate.batch
    check_value, check_column = checks if checks is not None else (None, None)
    try:
        for item in items:
            if stop is not None:
                stop()  # a condition that drops everything must not hide cancellation or limits
            if item is IDLE:
                yield item
            elif type(item) is Batch:
                if check_column is not None:
                    check_column(item.values)
                chunk = Chunk({name: item.values}, len(item.values))
                mask = as_mask(test_batch(chunk), chunk.n)
                if mask.all():
                    yield item
                elif mask.any():
                    yield item.take(mask)
            else:
                if check_value is not None:
                    check_value(item)
                if test_row({name: item}):
                    yield item
    finally:
        close = getattr(items, "close", None)
        if close:
            close()


def taken_source(source: Compiled, count: int, ctx=None) -> Compiled:
    """The values of `source`, a stream or bag stopping after `count` elements."""
    def take(value):
        if isinstance(value, StreamValue):
            return StreamValue(lambda: take_items(value.open, count, ctx), f"first_n({value.label}, {count})")
        if isinstance(value, LazyBag):
            size = None if value.size is None else min(value.size, count)
            return LazyBag(lambda: take_items(value.open, count, ctx), value.label, size=size, ctx=value.ctx)
        return value

    source_row, source_batch = source.row, source.batch
    return Compiled(lambda chunk: [take(v) for v in source_batch(chunk)],
                    lambda env: take(source_row(env)), source.type)


def take_items(open_items, n: int, ctx=None):
    """The first n elements of the stream items `open_items()` gives (`FirstN`; not opened at
    all for none); the source is closed once they are out."""
    if n == 0:
        return
    yield from run_logic(open_items(), FirstN(n), ctx)

"""What an expression compiles to, and the column helpers every operator shares.

A `Compiled` has two forms: `batch(chunk)` computes a whole column (with numpy where it can) and
`row(env)` one value for the scalar fast path (a batch of one reading takes plain Python). A
constant carries its value with `const=True`. Columns become boolean masks with `as_mask`, and
values known only at run time are checked against a declared type with `narrowing_checks`.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import QueryRuntimeError
from ..types import Type, column_fits, value_fits
from ..values import Time, brief_value
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


def as_mask(column, n: int) -> np.ndarray:
    """A condition's column as a boolean mask of n rows (null counts as false)."""
    if isinstance(column, np.ndarray):
        if column.dtype == bool:
            return column
        if column.ndim == 0:
            return np.full(n, bool(column))
        return np.array([bool(v) if v is not None else False for v in column.tolist()], dtype=bool)
    if isinstance(column, (bool, np.bool_)) or column is None:
        return np.full(n, bool(column))
    return np.array([bool(v) if v is not None else False for v in column], dtype=bool)


def narrowing_checks(target: Type, label: str):
    """Run-time checks that values fit `target`: one for a value, one for a column."""

    seconds = target.name in ("Real", "Number")   # OSQL: a Time bound to a Real gives its epoch seconds

    def check_value(value):
        """The value, checked (a Time where a Real is wanted: its epoch seconds)."""
        if value is not None and not value_fits(value, target):
            if seconds and isinstance(value, Time):
                return value.seconds
            raise QueryRuntimeError(f"{label} must be {target}, but got {brief_value(value)}")
        return value

    def check_column(column):
        if isinstance(column, np.ndarray) and column.dtype != object:
            if column_fits(column, target):
                return column
            raise QueryRuntimeError(f"{label} must be {target}, but got values of type {column.dtype}")
        values = column_values(column)
        checked = [check_value(value) for value in values]
        if seconds and any(a is not b for a, b in zip(checked, values)):
            return make_column(checked)
        return column

    return check_value, check_column

"""Chunks: the rows of a query in flight, column by column.

A `Chunk` maps each bound variable to a column of `n` values: a numpy array (1-D for numbers, 2-D
for equal-length numeric vectors) or a list. A single row on the scalar fast path is a plain
dict of values instead.
"""
from __future__ import annotations

import numpy as np

from ..values import as_numeric_array


class Chunk(dict):
    __slots__ = ("n",)

    def __init__(self, columns: dict, n: int):
        super().__init__(columns)
        self.n = n

    def take(self, selector, kept: int | None = None) -> "Chunk":
        """The rows picked by a boolean mask (of `kept` true values, when the caller counted
        them) or an index array."""
        if isinstance(selector, np.ndarray) and selector.dtype == bool:
            n = int(np.count_nonzero(selector)) if kept is None else int(kept)
            index = None
        else:
            index = np.asarray(selector, dtype=np.intp)
            n = len(index)
        out = {}
        for name, column in self.items():
            if isinstance(column, np.ndarray):
                out[name] = column[selector]
            else:
                if index is None:
                    index = np.flatnonzero(selector)
                out[name] = [column[i] for i in index]
        return Chunk(out, n)

    def rows(self) -> list[dict]:
        """The chunk as one dict per row (for the per-row paths)."""
        names = list(self.keys())
        columns = [column_values(self[name]) for name in names]
        return [dict(zip(names, values)) for values in zip(*columns)] if names else [{} for _ in range(self.n)]

    def with_column(self, name: str, column) -> "Chunk":
        out = Chunk(self, self.n)
        out[name] = column
        return out


def column_values(column) -> list:
    """A column as a list of Python values (numpy scalars unwrapped; vector rows stay arrays)."""
    if isinstance(column, np.ndarray):
        return column.tolist() if column.ndim == 1 else list(column)
    return column


def make_column(values: list):
    """A list of values as the best column: numeric → numpy array, else the list itself."""
    converted = as_numeric_array(values)
    return converted if converted is not None else values


def repeat_column(column, counts: np.ndarray):
    if isinstance(column, np.ndarray):
        return np.repeat(column, counts, axis=0)
    out = []
    for value, count in zip(column, counts.tolist()):
        out.extend([value] * count)
    return out




def broadcast(value, n: int):
    """A constant as a column of n values."""
    if isinstance(value, (bool, np.bool_)):
        return np.full(n, bool(value))
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if -2 ** 63 <= value < 2 ** 63:
            return np.full(n, value, dtype=np.int64)
        return np.full(n, float(value))   # past 64 bits only as a Real (compared with a Real column)
    if isinstance(value, (float, np.floating)):
        return np.full(n, value, dtype=np.float64)
    if isinstance(value, np.ndarray) and value.dtype != object:
        return np.broadcast_to(value, (n,) + value.shape)
    return [value] * n


def concat_chunks(chunks: list[Chunk]) -> Chunk:
    if not chunks:
        return Chunk({}, 0)
    if len(chunks) == 1:
        return chunks[0]
    names = list(chunks[0].keys())
    out = {}
    for name in names:
        parts = [c[name] for c in chunks]
        if all(isinstance(p, np.ndarray) for p in parts) and len({p.shape[1:] for p in parts}) == 1:
            out[name] = np.concatenate(parts)
        else:
            merged: list = []
            for p in parts:
                merged.extend(column_values(p))
            out[name] = merged
    return Chunk(out, sum(c.n for c in chunks))

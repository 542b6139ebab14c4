"""What flows through a stream: batches of values, single values, and idle ticks.

A stream yields *items*. An item is either a `Batch` (many values at once: a numpy array, 2-D
for fixed-length vectors, or a list) or a single value taken on the scalar fast path. A live
source that has nothing to deliver yields `IDLE` now and then so that timeouts and cancellation
are noticed even when no data arrives.
"""
from __future__ import annotations

from typing import Any

import numpy as np


class Batch:
    """Values of one stream, in order; `times` (seconds, float64) when the stream is timestamped."""

    __slots__ = ("values", "times")

    def __init__(self, values: Any, times: np.ndarray | None = None):
        self.values = values
        self.times = times

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"Batch({self.values!r}, times={self.times!r})"

    def slice(self, start: int, stop: int | None = None) -> "Batch":
        times = None if self.times is None else self.times[start:stop]
        return Batch(self.values[start:stop], times)

    def take(self, mask_or_index) -> "Batch":
        values = self.values
        if isinstance(values, np.ndarray):
            picked = values[mask_or_index]
        else:
            index = np.flatnonzero(mask_or_index) if _is_mask(mask_or_index) else mask_or_index
            picked = [values[i] for i in index]
        times = None if self.times is None else self.times[mask_or_index]
        return Batch(picked, times)


def _is_mask(selector) -> bool:
    return isinstance(selector, np.ndarray) and selector.dtype == bool


class _Idle:
    __slots__ = ()

    def __repr__(self) -> str:
        return "IDLE"


IDLE = _Idle()
"""Yielded by live sources when nothing arrived for a while; operators pass it along."""

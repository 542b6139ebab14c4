"""Operators whose state runs along the stream: the running maximum (`rmax`) and a time limit
on a stream (`timeout`). Both are `StatefulLogic`s (physical/stateful.py), so a checkpointed
query resumes them: rmax with the largest element so far, timeout with the time it had left."""
from __future__ import annotations

import numpy as np

from ..batch import Batch
from ..errors import QueryRuntimeError
from ..streams import iter_elements
from ..values import brief_value
from .stateful import StatefulLogic


class RunningMax(StatefulLogic):
    """Each element, the largest so far."""

    kind = "rmax"

    def __init__(self):
        self.best = None

    def on_batch(self, item: Batch):
        return self.on_value(item)

    def on_value(self, item):
        out = []
        best = self.best
        for element in iter_elements([item]):
            if not isinstance(element, (int, float, np.number)) or isinstance(element, bool):
                raise QueryRuntimeError(f"rmax needs numbers, not {brief_value(element)}")
            best = element if best is None or element > best else best
            out.append(best)
        self.best = best
        return out

    def snapshot(self) -> dict:
        best = self.best
        return {"best": best.item() if isinstance(best, np.generic) else best}

    def restore(self, state: dict) -> None:
        self.best = state["best"]


class Timeout(StatefulLogic):
    """The stream until `seconds` (of the query's clock) have passed since it started; restored,
    it has the time it had left at the checkpoint (the downtime does not count)."""

    kind = "timeout"
    stops = True

    def __init__(self, seconds: float, clock):
        self.seconds, self.clock = seconds, clock
        self.deadline = clock.monotonic() + seconds

    def _passed(self) -> bool:
        if self.clock.monotonic() >= self.deadline:
            self.finished = True
        return self.finished

    def on_batch(self, item: Batch):
        return () if self._passed() else (item,)

    def on_value(self, item):
        return () if self._passed() else (item,)

    def on_timer(self):
        self._passed()
        return ()

    def snapshot(self) -> dict:
        return {"elapsed": self.seconds - (self.deadline - self.clock.monotonic())}

    def restore(self, state: dict) -> None:
        self.deadline = self.clock.monotonic() + self.seconds - float(state["elapsed"])

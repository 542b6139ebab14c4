"""publish(s, 'flow'): a stream passed through while its elements go to a named flow.

The elements a checkpointed query publishes are numbered (its `Publish` state: the numbering's
epoch, made when it first ran, and how many it has published). On restore it declares the
numbering to the flow before publishing again (`LiveSignal.declare_sequence`), so a checkpointed
subscriber (`subscribe('flow')`, a `SourcePosition` with the flow's sequence) skips the
elements published again after the publisher's checkpoint that it had read already, and goes on
after its own last one (docs/checkpoints.md).
"""
from __future__ import annotations

import os

from ..batch import Batch
from ..values import Timeval
from .stateful import StatefulLogic


class Publish(StatefulLogic):
    """Pushes every element into `hub` (a flow's LiveSignal) and passes it on."""

    kind = "publish"

    def __init__(self, hub):
        self.hub = hub
        self.epoch: str | None = None
        self.sequence = 0         # elements published in this epoch
        self.declared = False

    def _declare(self) -> None:
        if self.epoch is None:
            self.epoch = os.urandom(8).hex()
        self.hub.declare_sequence(self.epoch, self.sequence)
        self.declared = True

    def on_batch(self, item: Batch):
        if not self.declared:
            self._declare()
        self.hub.push_batch(item.values, item.times)
        self.sequence += len(item)
        return (item,)

    def on_value(self, item):
        if not self.declared:
            self._declare()
        if isinstance(item, Timeval):
            self.hub.push(item.value, item.time.seconds)
        else:
            self.hub.push(item, None)
        self.sequence += 1
        return (item,)

    def snapshot(self) -> dict:
        if self.epoch is None:   # nothing published yet: the numbering starts with the first
            self.epoch = os.urandom(8).hex()
        return {"epoch": self.epoch, "sequence": self.sequence}

    def restore(self, state: dict) -> None:
        self.epoch, self.sequence = str(state["epoch"]), int(state["sequence"])

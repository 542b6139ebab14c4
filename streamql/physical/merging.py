"""merge and pivot: several streams read at once, each in its own thread, as stateful operators.

`Feeder` reads each input stream in a thread of its own into one queue, in arrival order; the
query's thread takes from it. `Merge` passes the elements on; `Pivot` keeps the latest element of
each input and gives the vector of them on every arrival once each input has given one.

**Checkpoints across threads.** A query's snapshot needs a cut where every operator is between
inputs (streamql.checkpoint). The query's thread has one each time it is about to take from the
queue; an input thread has one each time its source is about to read. When a snapshot is due,
the query's thread asks the input threads to pause at their next cut (`QueryState.pause_inputs`),
waits until each has paused, is blocked handing over an element, or has ended, and then takes the
snapshot: every operator's state (an input's operators are keyed under the merge's key and the
input's index, so each finds its own state again whatever the threads' order) plus, as the
merge's or pivot's own state, the elements read but not yet taken (the queue and the ones being
handed over) and which inputs have ended. A restored merge gives those elements first, then
starts the inputs that had not ended, whose sources resume after what they had read.
"""
from __future__ import annotations

import queue
import threading
from typing import Any

from ..batch import IDLE, Batch
from ..streams import close_items, iter_elements
from ..values import make_vector
from .stateful import StatefulLogic, closed, opened

_DONE = object()
_NOTHING = object()


class Feeder:
    """Reads several streams at once, each in its own thread, into one queue (arrival order).
    Iterating gives (index, item) pairs: `replay` first (elements restored from a checkpoint),
    then what the threads read, and (None, IDLE) while none has anything."""

    def __init__(self, streams: list, states=None, key: str | None = None, capacity: int = 64,
                 done: frozenset = frozenset()):
        self.streams = streams
        self.done = set(done)   # inputs that ended (their elements all read): not read again
        self.states = states if key is not None else None
        self.key = key
        self.queue: queue.Queue = queue.Queue(maxsize=capacity)
        self.stop = threading.Event()
        self.replay: list = []
        self.handing: dict[int, Any] = {}   # index → the element its thread waits to put
        self.threads = [threading.Thread(target=self._pump, args=(i, s), daemon=True, name=f"streamql-merge-{i}")
                        for i, s in enumerate(streams) if i not in self.done]

    def _pump(self, index: int, stream) -> None:
        states = self.states
        if states is not None:
            states.enter_input(f"{self.key}/{index}/")
        items = stream.open()
        try:
            for item in items:
                if self.stop.is_set():
                    return
                if item is IDLE:
                    continue
                self.handing[index] = item
                while not self.stop.is_set():
                    try:
                        self.queue.put((index, item), timeout=0.1)
                        break
                    except queue.Full:
                        if states is not None:
                            states.cut()   # handing an element over: between inputs, it counts as read
                self.handing.pop(index, None)
        except BaseException as exc:  # noqa: BLE001 - delivered to the reader
            self.queue.put((index, exc))
        finally:
            close_items(items)
            self.done.add(index)
            if states is not None:
                states.leave_input()
            self.queue.put((index, _DONE))

    def pending(self) -> list:
        """The elements read and not yet taken, in order (call only while the inputs are paused)."""
        queued = [(i, item) for i, item in list(self.queue.queue)
                  if item is not _DONE and not isinstance(item, BaseException)]
        return list(self.replay) + queued + sorted(self.handing.items(), key=lambda pair: pair[0])

    def __iter__(self):
        while self.replay:
            yield self.replay.pop(0)
        states = self.states
        if states is not None:
            for thread in self.threads:
                states.add_input(thread)
        for thread in self.threads:
            thread.start()
        running = len(self.threads)
        try:
            while running:
                if states is not None:
                    states.cut()
                try:
                    index, item = self.queue.get(timeout=0.1)
                except queue.Empty:
                    yield None, IDLE
                    continue
                if item is _DONE:
                    running -= 1
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield index, item
        finally:
            self.stop.set()
            if states is not None:
                for thread in self.threads:
                    states.remove_input(thread)


def _encoded(item) -> dict:
    if type(item) is Batch:
        return {"values": item.values, "times": item.times}
    return {"value": item}


def _decoded(state: dict):
    if "values" in state:
        values = state["values"]
        return Batch(list(values) if isinstance(values, tuple) else values, state["times"])
    return state["value"]


class _Merging(StatefulLogic):
    """What merge and pivot share: a Feeder, and the elements not yet taken as state."""

    def __init__(self, streams: list):
        self.streams = streams
        self.feeder: Feeder | None = None
        self.restored: list = []
        self.restored_done: frozenset = frozenset()

    def run(self, ctx):
        key = opened(self, ctx)
        states = getattr(ctx, "states", None) if key is not None else None
        self.feeder = Feeder(self.streams, states, key, done=self.restored_done)
        self.feeder.replay = self.restored
        try:
            for index, item in self.feeder:
                if item is IDLE:
                    yield item
                else:
                    yield from self.on_input(index, item)
        finally:
            self.feeder.stop.set()
            closed(self, ctx, key, ())

    def on_value(self, item):   # (index, element): as the Feeder gives them
        index, element = item
        return tuple(self.on_input(index, element))

    def on_input(self, index: int, item):
        raise NotImplementedError

    def snapshot(self) -> dict:
        pending = self.feeder.pending() if self.feeder is not None else self.restored
        done = self.feeder.done if self.feeder is not None else self.restored_done
        return {"pending": [[index, _encoded(item)] for index, item in pending], "done": sorted(done)}

    def restore(self, state: dict) -> None:
        self.restored = [(int(index), _decoded(item)) for index, item in state["pending"]]
        self.restored_done = frozenset(int(i) for i in state["done"])


class Merge(_Merging):
    """The elements of several streams as they arrive."""

    kind = "merge"

    def on_input(self, index: int, item):
        yield item


class Pivot(_Merging):
    """On every arrival once each stream has given one element, the vector of the latest of each."""

    kind = "pivot"

    def __init__(self, streams: list):
        super().__init__(streams)
        self.latest: list = [_NOTHING] * len(streams)
        self.missing = len(streams)

    def on_input(self, index: int, item):
        latest = self.latest
        for element in iter_elements([item]):
            if latest[index] is _NOTHING:
                self.missing -= 1
            latest[index] = element
            if self.missing == 0:
                yield make_vector(list(latest))

    def snapshot(self) -> dict:
        state = super().snapshot()
        state["latest"] = [None if v is _NOTHING else {"value": v} for v in self.latest]
        return state

    def restore(self, state: dict) -> None:
        super().restore(state)
        self.latest = [_NOTHING if v is None else v["value"] for v in state["latest"]]
        self.missing = sum(1 for v in self.latest if v is _NOTHING)

"""What held the federation's event loop, in its log: long garbage collections and stalls.

    pauses = GcPauses().install()        # logs a collection longer than SLOW_GC_S
    spawn(watch_stalls())                 # logs a loop that came back STALL_S or more late

An edge gives up on a federation that sent nothing for three heartbeats (15 s by default); a node
with 10,000 edges whose loop stalls says so here, with the cause when it was the collector.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger("streamql.federation")

SLOW_GC_S = 0.25   # a collection at least this long is logged
STALL_S = 2.0      # a loop that wakes at least this late is logged
TICK_S = 0.5


class GcPauses:
    """A `gc.callbacks` hook: counts collections and their time, logs the long ones."""

    def __init__(self, slow_s: float = SLOW_GC_S):
        self.slow_s = slow_s
        self.collections = 0
        self.total_s = 0.0
        self.worst_s = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        took = time.perf_counter() - self._began
        self.collections += 1
        self.total_s += took
        self.worst_s = max(self.worst_s, took)
        if took >= self.slow_s:
            log.warning("a garbage collection (generation %d, %d collected) held the event loop %.2f s",
                        info.get("generation", -1), info.get("collected", 0), took)

    def install(self) -> "GcPauses":
        gc.callbacks.append(self)
        return self

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


async def watch_stalls(stall_s: float = STALL_S, tick_s: float = TICK_S) -> None:
    """Wake every `tick_s`; a wake-up `stall_s` late means the loop was held that long."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + tick_s
        await asyncio.sleep(tick_s)
        late = loop.time() - due
        if late >= stall_s:
            log.warning("the event loop was held %.1f s (every edge waited that long for its frames)", late)

"""Long garbage collections logged, and kept short: what survived a full collection is moved out of
the collector's sight (`gc.freeze`), so the next full collections walk only what is newer.

    pauses = GcPauses(loop, freeze=True, log=my_logger).install()

A process holding millions of long-lived objects (a federation node with 10,000 edges; a
simulator process with 2,500 edges' engines and links) otherwise runs a full collection each time
its oldest generation grew by a quarter — every few seconds, each walking every object: 0.3 to 5 s
with the event loop (and every thread) held (bench/README.md, scale). Objects frozen and later
dropped are freed by their reference counts as usual; only cycles among them wait, for the
periodic thaw (`thaw_every_s`: everything back in sight for one full collection).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time

SLOW_GC_S = 0.25   # a collection at least this long is logged
THAW_EVERY_S = 600.0   # everything is looked at again (cycles among dropped frozen objects collected) this often


class GcPauses:
    """A `gc.callbacks` hook: counts collections and their time, logs the long ones; with `loop`
    and `freeze`, freezes what survived each full collection (from the loop, not inside the
    collector's callback) and thaws it all every `thaw_every_s`."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, *, freeze: bool = False,
                 slow_s: float = SLOW_GC_S, thaw_every_s: float = THAW_EVERY_S,
                 log: logging.Logger | None = None):
        self.loop, self.freeze = loop, freeze and loop is not None
        self.log = log or logging.getLogger("streamql.federation")
        self.slow_s, self.thaw_every_s = slow_s, thaw_every_s
        self.collections = 0
        self.total_s = 0.0
        self.worst_s = 0.0
        self.frozen = 0         # times the survivors were frozen
        self._began = self._began_cpu = 0.0
        self._freezing = False
        self._thawed_at = time.monotonic()

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            self._began_cpu = time.thread_time()
            return
        took = time.perf_counter() - self._began
        on_cpu = time.thread_time() - self._began_cpu
        self.collections += 1
        self.total_s += took
        self.worst_s = max(self.worst_s, took)
        if took >= self.slow_s:
            self.log.warning("a garbage collection (generation %d, %d collected) held the event loop %.2f s "
                             "(its thread on a CPU %.2f s of it)",
                             info.get("generation", -1), info.get("collected", 0), took, on_cpu)
        if self.freeze and info.get("generation") == 2 and not self._freezing:
            self._freezing = True
            try:
                self.loop.call_soon_threadsafe(self._freeze)
            except RuntimeError:   # the loop is closed: nothing to keep short any more
                self._freezing = False

    def _freeze(self) -> None:
        self._freezing = False
        if time.monotonic() - self._thawed_at >= self.thaw_every_s:
            self._thawed_at = time.monotonic()
            gc.unfreeze()   # the next full collection walks everything once (cycles among old objects)
            return
        gc.freeze()
        self.frozen += 1

    def install(self) -> "GcPauses":
        gc.callbacks.append(self)
        return self

    def remove(self) -> None:
        """Stop watching (what is frozen stays so: thawing would cost a full collection now)."""
        if self in gc.callbacks:
            gc.callbacks.remove(self)

"""What holds the federation's event loop: long garbage collections (logged, and kept short) and
stalls (logged).

    pauses = GcPauses(loop, freeze=True).install()   # logs a collection longer than SLOW_GC_S
    spawn(watch_stalls())                             # logs a loop that came back STALL_S or more late

An edge gives up on a federation that sent nothing for three heartbeats (15 s by default). With
10,000 edges a node holds millions of objects the collector tracks (sockets, requests, health),
and every frame leaves a few more behind in its oldest generation; CPython then runs a full
collection each time that generation grew by a quarter — every few seconds, each walking every
object: 0.3 to 5 s with the event loop held (measured: bench/README.md, scale). With `freeze`,
what survived a full collection is moved out of the collector's sight (`gc.freeze`), so the next
full collections walk only what is newer: milliseconds. Objects frozen and later dropped are
freed by their reference counts as usual; only cycles among them wait, for the periodic thaw
(`thaw_every_s`: everything back in sight for one full collection).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger("streamql.federation")

SLOW_GC_S = 0.25   # a collection at least this long is logged
THAW_EVERY_S = 600.0   # everything is looked at again (cycles among dropped frozen objects collected) this often
STALL_S = 2.0      # a loop that wakes at least this late is logged
TICK_S = 0.5


class GcPauses:
    """A `gc.callbacks` hook: counts collections and their time, logs the long ones; with `loop`
    and `freeze`, freezes what survived each full collection (from the loop, not inside the
    collector's callback) and thaws it all every `thaw_every_s`."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, *, freeze: bool = False,
                 slow_s: float = SLOW_GC_S, thaw_every_s: float = THAW_EVERY_S):
        self.loop, self.freeze = loop, freeze and loop is not None
        self.slow_s, self.thaw_every_s = slow_s, thaw_every_s
        self.collections = 0
        self.total_s = 0.0
        self.worst_s = 0.0
        self.frozen = 0         # times the survivors were frozen
        self._began = 0.0
        self._freezing = False
        self._thawed_at = time.monotonic()

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


async def watch_stalls(stall_s: float = STALL_S, tick_s: float = TICK_S) -> None:
    """Wake every `tick_s`; a wake-up `stall_s` late means the loop was held that long."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + tick_s
        await asyncio.sleep(tick_s)
        late = loop.time() - due
        if late >= stall_s:
            log.warning("the event loop was held %.1f s (every edge waited that long for its frames)", late)

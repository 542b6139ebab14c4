"""What holds the federation's event loop: long garbage collections (logged, and kept short:
streamql.gc_pauses) and stalls (logged).

    pauses = GcPauses(loop, freeze=True).install()   # logs a collection longer than SLOW_GC_S
    spawn(watch_stalls())                             # logs a loop that came back STALL_S or more late

A stall's log line says how much of it the loop's thread spent on the CPU (the rest it waited:
for a core, on this shared box, or for the interpreter's lock a worker held) and where a thread
of its own found the loop's thread while it was late (`StallSampler`): one long call, or many.

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
import collections
import logging
import sys
import threading
import time

log = logging.getLogger("streamql.federation")

STALL_S = 2.0      # a loop that wakes at least this late is logged
TICK_S = 0.5


SAMPLE_S = 0.05   # how often the sampler looks where the loop's thread is while the loop is late
PLACES = 3        # places named in a stall's log line


class StallSampler:
    """A daemon thread that, while the loop is late (no tick for `late_s`), samples where the
    loop's thread is: the innermost frame of the project's code and the innermost frame of all."""

    def __init__(self, thread_id: int | None = None, *, late_s: float = TICK_S, sample_s: float = SAMPLE_S):
        self.thread_id = thread_id if thread_id is not None else threading.get_ident()
        self.late_s, self.sample_s = late_s, sample_s
        self.last_tick = time.monotonic()
        self.samples: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loop-stall-sampler", daemon=True)

    def start(self) -> "StallSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.sample_s):
            if time.monotonic() - self.last_tick < self.late_s:
                continue
            frame = sys._current_frames().get(self.thread_id)
            if frame is not None:
                self.samples[_place(frame)] += 1

    def places(self) -> str:
        """The places sampled since the last call, most seen first (and forgets them)."""
        seen, self.samples = self.samples, collections.Counter()
        total = sum(seen.values())
        if not total:
            return "not sampled"
        return "; ".join(f"{100 * n // total}% {place}" for place, n in seen.most_common(PLACES)) + \
            f" ({total} samples)"


def _place(frame) -> str:
    """`project function (file:line) in innermost function` of a stack."""
    inner = frame
    while frame is not None:
        path = frame.f_code.co_filename
        if any(part in path for part in ("/federation/", "/streamql/", "/edge_engine/")):
            break
        frame = frame.f_back
    where = lambda f: f"{f.f_code.co_name} ({f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno})"  # noqa: E731
    if frame is None or frame is inner:
        return where(inner)
    return f"{where(frame)} in {inner.f_code.co_name}"


async def watch_stalls(stall_s: float = STALL_S, tick_s: float = TICK_S, *, sample: bool = True) -> None:
    """Wake every `tick_s`; a wake-up `stall_s` late means the loop was held that long. The log
    line says the loop thread's CPU time meanwhile and, with `sample`, where it was found."""
    loop = asyncio.get_running_loop()
    sampler = StallSampler(late_s=tick_s + min(stall_s, tick_s)).start() if sample else None
    try:
        while True:
            due = loop.time() + tick_s
            cpu = time.thread_time()
            if sampler is not None:
                sampler.tick()
            await asyncio.sleep(tick_s)
            late = loop.time() - due
            if late >= stall_s:
                ran = time.thread_time() - cpu
                log.warning("the event loop was held %.1f s (every edge waited that long for its frames); its "
                            "thread ran %.1f s of it%s", late, ran,
                            f"; where: {sampler.places()}" if sampler is not None else "")
            elif sampler is not None and sampler.samples:
                sampler.places()   # a short lateness: forget it
    finally:
        if sampler is not None:
            sampler.stop()

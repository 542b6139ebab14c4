"""An edge's CPU shared among its fragments: long computations take turns, short ones never wait.

A device has a CPU or two; a statement that computes for seconds (`count(iota(1, 10^12))@e` until
its time limit) must not starve the short fragments of other users (a fleet aggregate, a signal
value) that need milliseconds. Every fragment's worker calls `pace()` at each of the query's check
points (ExecContext.check: every batch, every chunk a source produces). A fragment is *short* until
its thread has used `LONG_AFTER_S` of CPU; after that it computes only while it holds one of the
process's `turns` (its CPU count less one, at least one), each turn for `SLICE_S`, then gives it
to the next long fragment waiting — round robin among the long ones. A long fragment waiting for
a turn sleeps (no CPU, no GIL); its time limit still runs, and a cancel ends the wait at once. So
short fragments compete with at most `turns` computing long ones, however many are running —
and a long one's thread runs at the lowest CPU priority (nice 19, that thread only): the kernel
gives the CPU to the short fragments, the link and the signals first, and to the long ones
whatever they leave (all of it on an idle device).

One `Pacer` per process (`PACER`): every edge of a simulated fleet in one process shares it, as
they share the interpreter and the CPU. `share` (1 on a device) is the part of the wall time the
long fragments compute at all: a turn's holder rests `slice_s · (1/share − 1)` after each slice,
still holding it. A simulated fleet sets it low (edge_engine/simulate.py): its process stands for
dozens of devices that each have a CPU of their own, and a long computation on every one of them
at once must not take the process's whole share of the machine from their short fragments and
links (a thread at nice 19 that holds the interpreter's lock also holds up every other thread).
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable

from streamql.errors import QueryCancelled

LONG_AFTER_S = 0.5      # CPU seconds of one fragment before it takes turns
SLICE_S = 0.05          # a long fragment's turn
WAIT_TICK_S = 0.1       # how often a waiting fragment looks at its cancel flag


class Pacer:
    def __init__(self, turns: int | None = None, long_after_s: float = LONG_AFTER_S, slice_s: float = SLICE_S,
                 share: float = 1.0):
        self.turns = max(1, turns or (os.cpu_count() or 2) - 1)
        self.long_after_s, self.slice_s = long_after_s, slice_s
        self.share = share
        self._turns = threading.Semaphore(self.turns)
        self._lock = threading.Lock()
        self.waiting = 0          # long fragments waiting for a turn now
        self.long_total = 0       # fragments that became long, since the start

    def pace_for(self, cancelled: threading.Event) -> Callable[[], None]:
        """The `pace` of one fragment's worker thread (call it from that thread only)."""
        state = {"long": False, "holding": False, "until": 0.0, "started": None}

        def pace() -> None:
            if not state["long"]:
                now_cpu = time.thread_time()     # the calling thread's CPU: counted from its first call
                if state["started"] is None:
                    state["started"] = now_cpu
                if now_cpu - state["started"] < self.long_after_s:
                    return
                state["long"] = True
                with self._lock:
                    self.long_total += 1
                _lowest_priority()
            now = time.monotonic()
            if state["holding"]:
                if now < state["until"]:
                    return
                self._rest(cancelled)
                state["holding"] = False
                self._turns.release()      # the next long fragment's turn
                time.sleep(0)              # let a waiter take it
            self._wait(cancelled)
            state["holding"] = True
            state["until"] = time.monotonic() + self.slice_s

        def release() -> None:
            if state["holding"]:
                state["holding"] = False
                self._turns.release()
        pace.release = release             # the worker gives its turn back when the fragment ends
        return pace

    def _rest(self, cancelled: threading.Event) -> None:
        """After a slice, with the turn held: the rest that keeps long fragments to `share`."""
        if self.share >= 1.0:
            return
        if cancelled.wait(self.slice_s * (1.0 / max(self.share, 0.01) - 1.0)):
            raise QueryCancelled("the query was cancelled")

    def _wait(self, cancelled: threading.Event) -> None:
        if self._turns.acquire(blocking=False):
            return
        with self._lock:
            self.waiting += 1
        try:
            while not self._turns.acquire(timeout=WAIT_TICK_S):
                if cancelled.is_set():
                    raise QueryCancelled("the query was cancelled")
        finally:
            with self._lock:
                self.waiting -= 1


FRAGMENT_NICE = 5        # every fragment's thread: a step below the event loop (the link, heartbeats, credit)


def below_the_loop() -> None:
    """A fragment's thread FRAGMENT_NICE steps below the process (that thread only; it ends with
    the fragment)."""
    _nice(FRAGMENT_NICE)


def _lowest_priority() -> None:
    _nice(19)


def _nice(steps: int) -> None:
    """The calling thread `steps` nice steps below where it is, at most 19 (a fragment's thread,
    which ends with it). Lowering a thread's priority needs no privilege; where it cannot be done
    the turns alone still hold."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps))
    except (AttributeError, OSError):
        pass


PACER = Pacer()

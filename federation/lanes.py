"""Where statements run: worker threads in lanes, shared fairly, so that nothing one client (or
many) does keeps `select 1;` waiting.

- **statements** (`workers`, 32): statements that end — queries, definitions, `set`, `validate`,
  a deployment's selection. One principal (a token) holds at most a quarter of them at once
  (`per_principal`); its further statements wait for one of its own to end, so a burst from one
  token never takes every worker.
- **fast** (`FAST_SLOTS`, 8): kept for statements that provably touch no edge and are cheap
  (`is_fast`: `select 1;`, `select sqrt(2) * 3;`, a definition): short text, no `@`, no `Edge`,
  no subquery, and every function called a built-in of the federation's library that neither
  makes a bag or stream (iota, heartbeat, file_stream, subscribe…), nor builds a value of a size
  it is given (zeros, repeat…), nor reaches past its arguments (call, apply, predict, sleep…) —
  no fleet function, no user function (its body may query the fleet). Such a
  statement that finds no free worker among the statements' takes one of these — at most one per
  principal — and runs there under a time limit of `FAST_SECONDS` (10 s): nothing can hold the
  fast lane for long, whoever sends it.
- **streams** (`stream_slots`, 128; 16 per principal, a read token's requests in flight): standing streams (`select stream of …`), on
  threads of their own. A stream holds its slot while it lasts, but a thread only while its next
  batch of rows is computed: rows wait for the client in a bounded channel, and a client that
  does not read leaves its stream with no thread at all (backpressure up to the edges' credit).

A statement that finds no slot within `wait_s` (5 s) is refused `503 Busy` with Retry-After, and
the refusal logs who holds the lanes (at most every `CENSUS_EVERY_S`: the holders by principal and
how long they have held their slots); every `SUMMARY_EVERY_S` the pool logs how long statements
waited for a slot, cheap ones (fast-lane candidates) apart, and how the cheap ones ran — wall time
against their thread's CPU and its time runnable but waiting for a CPU (the kernel's schedstat),
which tells a queue from a thread starved of CPU from one waiting for the interpreter's lock — and
the same two for the event loop's thread over the period.
Every worker thread runs at nice `WORKER_NICE` (its own): the event loop's thread comes first.
Parsing and `explain` have `QUICK_WORKERS` threads of their own; statements longer than
`LONG_TEXT` bytes are parsed on `LONG_WORKERS` others, so they never hold up a short one's parse.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from streamql import ast as A

from federation.errors import Busy

QUICK_WORKERS = 4
LONG_WORKERS = 2            # parsing statements longer than LONG_TEXT
LONG_TEXT = 4096
FAST_SLOTS = 8
FAST_SECONDS = 10.0
STREAM_SLOTS = 128
STREAMS_PER_PRINCIPAL = 16
WANTED_CHECK_S = 0.25       # a statement waiting for a slot checks this often whether its client is still there
CENSUS_EVERY_S = 5.0        # a refusal for want of a slot logs the lanes' holders at most this often
SUMMARY_EVERY_S = 30.0      # waits for slots and cheap statements' run times, summed up this often

log = logging.getLogger("streamql.federation.lanes")


# statement threads' CPU priority below the event loop's (a thread's own nice). +15, not +5: in the
# full soak (200 clients, 100 edges on the same two cores) `select 1;` hung 0 times at +15, 71 at +5,
# fleet queries 41 vs 173 times; the cost, seen at 100 clients: a statement thread preempted while
# it holds the interpreter's lock keeps the loop waiting longer (bench/README.md "Fourth session")
WORKER_NICE = 15


def below_the_loop() -> None:
    """A worker thread's start: its CPU priority a step below the event loop's, so that however
    many statements compute, the kernel runs the loop first when it has work — answering
    /healthz, reading the edges' frames, stopping on SIGTERM (its own nice; no privilege needed)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + WORKER_NICE))
    except (AttributeError, OSError):
        pass



class ClientLeft(Exception):
    """The client of a statement waiting for a slot is gone: nothing is started for it."""

class Lane:
    def __init__(self, name: str, slots: int, per_principal: int):
        self.name, self.slots, self.per_principal = name, slots, per_principal
        self.used = 0
        self.held: Counter = Counter()
        self.since: dict[Any, list[float]] = {}     # who → when each of its slots was taken (census)

    def free_for(self, who: Any) -> bool:
        return self.used < self.slots and self.held[who] < self.per_principal

    def take(self, who: Any) -> None:
        self.used += 1
        self.held[who] += 1
        self.since.setdefault(who, []).append(time.monotonic())

    def give_back(self, who: Any) -> None:
        self.used -= 1
        self.held[who] -= 1
        taken = self.since.get(who)
        if taken:
            taken.pop(0)
        if self.held[who] <= 0:
            del self.held[who]
            self.since.pop(who, None)

    def census(self) -> dict:
        """Who holds the lane's slots: {who: [seconds each has been held]}, the biggest holders first."""
        now = time.monotonic()
        return {str(who): sorted((round(now - t, 1) for t in self.since.get(who, ())), reverse=True)
                for who, _ in self.held.most_common()}


def thread_schedstat() -> tuple[float, float]:
    """The calling thread's (seconds on a CPU, seconds runnable but waiting for one) since it
    started (/proc/thread-self/schedstat; zeros where there is none)."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            on_cpu, waiting = f.read().split()[:2]
        return int(on_cpu) / 1e9, int(waiting) / 1e9
    except (OSError, ValueError):
        return 0.0, 0.0


class LaneWatch:
    """What a pool's statements waited for and how its cheap ones ran (the module docstring)."""

    def __init__(self):
        self.waits: dict[str, list[float]] = {}    # "cheap" / "other" / "stream" → seconds waited
        self.refused: Counter = Counter()
        self.cheap_runs: list[tuple[float, float, float]] = []   # (wall, CPU, waiting for a CPU) each
        self.abandoned = 0    # statements whose client left while they waited for a slot
        self._summary_at = time.monotonic()
        self._census_at = float("-inf")
        self._loop_sched: tuple[float, float] | None = None     # the loop thread's schedstat then

    def waited(self, kind: str, seconds: float) -> None:
        self.waits.setdefault(kind, []).append(seconds)
        if self._loop_sched is None:
            self._loop_sched = thread_schedstat()      # the loop's thread: the first period starts
        self._maybe_summary()

    def timed(self, fn: Callable, *args) -> Any:
        """fn(*args) in a worker thread, a cheap statement: its wall time and its thread's CPU kept."""
        wall, cpu, (_, runnable) = time.monotonic(), time.thread_time(), thread_schedstat()
        try:
            return fn(*args)
        finally:
            self.cheap_runs.append((time.monotonic() - wall, time.thread_time() - cpu,
                                    thread_schedstat()[1] - runnable))

    def busy(self, kind: str, who: Any, lanes: tuple["Lane", ...]) -> None:
        self.refused[kind] += 1
        now = time.monotonic()
        if now - self._census_at >= CENSUS_EVERY_S:
            self._census_at = now
            log.warning("statement lanes full, %s refused (%s) after its wait: %s", who, kind,
                        json.dumps({lane.name: {"used": lane.used, "slots": lane.slots, "holders": lane.census()}
                                    for lane in lanes}))
        self._maybe_summary()

    def _maybe_summary(self) -> None:
        now = time.monotonic()
        if now - self._summary_at < SUMMARY_EVERY_S:
            return
        parts = []
        for kind, waits in sorted(self.waits.items()):
            waits.sort()
            parts.append(f"{kind} {len(waits)} admitted, waited p50 {waits[len(waits) // 2]:.2f} s, p99 "
                         f"{waits[int(len(waits) * 0.99)]:.2f} s, {self.refused[kind]} refused")
        runs = self.cheap_runs
        if runs:
            walls = sorted(w for w, _, _ in runs)
            parts.append(f"cheap statements ran: wall p50 {walls[len(walls) // 2] * 1e3:.0f} ms, p99 "
                         f"{walls[int(len(walls) * 0.99)] * 1e3:.0f} ms, mean {sum(walls) / len(runs) * 1e3:.0f} ms; "
                         f"their threads' CPU {sum(c for _, c, _ in runs) / len(runs) * 1e3:.1f} ms each, waiting "
                         f"for a CPU {sum(r for _, _, r in runs) / len(runs) * 1e3:.0f} ms each")
        if self.abandoned:
            parts.append(f"{self.abandoned} left by their clients while waiting, never started")
        sched = thread_schedstat()     # called on the event loop's thread (acquire)
        if self._loop_sched is not None:
            span = max(1e-9, now - self._summary_at)
            parts.append(f"the event loop's thread on a CPU {(sched[0] - self._loop_sched[0]) / span:.0%} of the "
                         f"time, waiting for one {(sched[1] - self._loop_sched[1]) / span:.0%}")
        log.warning("statement lanes over %.0f s: %s", now - self._summary_at, "; ".join(parts) or "idle")
        self.waits, self.refused, self.cheap_runs, self.abandoned = {}, Counter(), [], 0
        self._summary_at, self._loop_sched = now, sched


@dataclass
class Slot:
    """A lane's slot held by one statement; released once (by whoever ends the statement)."""
    pool: "StatementPool"
    lane: Lane
    who: Any
    released: bool = False

    @property
    def fast(self) -> bool:
        return self.lane is self.pool.fast

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.pool._give_back(self)


def is_stream(statement: A.Statement) -> bool:
    return isinstance(statement, A.Select) and statement.kind == "stream"


FAST_TEXT = 1024            # a statement longer than this is not cheap enough for the fast lane
CHEAP_KINDS = ("scalar", "aggregate")   # registry kinds: not sources (bags, streams) nor stream operators


def is_fast(statement: A.Statement, text: str, builtins: Callable[[str], list]) -> bool:
    """Whether the statement may take the fast lane: provably no edge touched, and cheap (module
    docstring). `builtins(name)` is the federation library's overloads of a name (none for a
    user's function or a fleet function, which the library does not hold)."""
    if len(text) > FAST_TEXT or is_stream(statement):
        return False
    try:
        for node in statement.walk():
            if isinstance(node, (A.AtEdge, A.Subquery)):
                return False
            if isinstance(node, A.Declaration) and node.type.name.lower() == "edge":
                return False
            if isinstance(node, A.Call) and not _cheap_builtin(builtins(node.name.lower())):
                return False
    except RecursionError:
        return False
    return True


def _cheap_builtin(overloads: list) -> bool:
    # needs_context: the function reaches past its arguments (another function by name — call,
    # apply, reduce —, a model, a signal, a procedure, sleep): nothing to prove it cheap
    return bool(overloads) and all(o.kind in CHEAP_KINDS and not o.sized and not o.needs_context
                                   and o.topic != "fleet" for o in overloads)


def is_local(statement: A.Statement) -> bool:
    """No `@e` part and no Edge declaration: the statement runs here, without the fleet."""
    try:
        for node in statement.walk():
            if isinstance(node, A.AtEdge):
                return False
            if isinstance(node, A.Declaration) and node.type.name.lower() == "edge":
                return False
    except RecursionError:
        return False
    return True


class StatementPool:
    """The lanes (module docstring) and their threads. `acquire` a slot, run work with `submit`
    (or `stream_step` for a stream's batches), release the slot when the statement ends."""

    def __init__(self, workers: int = 32, wait_s: float = 5.0, *, stream_slots: int = STREAM_SLOTS,
                 fast_slots: int = FAST_SLOTS):
        self.workers = workers
        self.wait_s = wait_s
        self.statements = Lane("statements", workers, max(1, workers // 4))
        self.fast = Lane("fast", fast_slots, 1)
        self.streams = Lane("streams", stream_slots, STREAMS_PER_PRINCIPAL)
        def pool(n: int, name: str) -> concurrent.futures.ThreadPoolExecutor:
            return concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix=name, initializer=below_the_loop)
        self._executor = pool(workers + fast_slots, "statement")
        self._stream_executor = pool(stream_slots, "stream")
        self._quick = pool(QUICK_WORKERS, "statement-quick")
        self._long = pool(LONG_WORKERS, "statement-long")
        self._waiters: list[asyncio.Future] = []
        self.running: set = set()     # statements whose rows are being produced
        self.watch = LaneWatch()
        self.closing = False          # shutting down: no slot for anyone, waiters told at once

    # ------------------------------------------------------------------------------ slots
    def _try(self, who: Any, stream: bool, local: bool) -> Slot | None:
        lanes = (self.streams,) if stream else (self.statements, self.fast) if local else (self.statements,)
        for lane in lanes:
            if lane.free_for(who):
                lane.take(who)
                return Slot(self, lane, who)
        return None

    async def acquire(self, who: Any = None, *, stream: bool = False, local: bool = False,
                      still_wanted: Callable[[], bool] | None = None) -> Slot:
        """A slot, waiting up to `wait_s` for one (else Busy). `still_wanted`, asked every
        WANTED_CHECK_S while waiting: False (its client left) raises ClientLeft, so no statement
        nobody waits for takes a slot and starts on the edges."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + self.wait_s
        kind = "stream" if stream else "cheap" if local else "other"
        while True:
            if self.closing:
                raise Busy("the federation is shutting down; try again shortly")
            if still_wanted is not None and not still_wanted():
                self.watch.abandoned += 1
                raise ClientLeft("the client left while its statement waited for a worker")
            slot = self._try(who, stream, local)
            if slot is not None:
                self.watch.waited(kind, loop.time() - began)
                return slot
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.watch.busy(kind, who, (self.streams,) if stream else (self.statements, self.fast))
                lane = self.streams if stream else self.statements
                mine = lane.held[who] >= lane.per_principal
                raise Busy(f"this token already runs {lane.per_principal} {lane.name} at once; try again shortly"
                           if mine else f"all {lane.slots} {lane.name} workers are busy; try again shortly")
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(remaining if still_wanted is None else min(remaining, WANTED_CHECK_S)):
                    await waiter
            except TimeoutError:
                pass

            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _give_back(self, slot: Slot) -> None:
        slot.lane.give_back(slot.who)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:      # each checks again; who finds a slot takes it
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------------------------ threads
    def submit(self, fn, *args, stream: bool = False) -> asyncio.Future:
        """fn(*args) in a worker thread (the caller holds a slot)."""
        executor = self._stream_executor if stream else self._executor
        return asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    async def call(self, fn, *args, who: Any = None, local: bool = False):
        """A statement's whole work in a worker, holding a slot for as long as it takes."""
        slot = await self.acquire(who, local=local)
        try:
            return await self.submit(fn, *args)
        finally:
            slot.release()

    async def quick(self, fn, *args):
        """Short work (parsing, a plan) on the threads kept for it."""
        return await asyncio.get_running_loop().run_in_executor(self._quick, fn, *args)

    async def parse(self, fn, text: str):
        """fn(text) — parsing — on the quick threads, or for a long text (past LONG_TEXT bytes: a
        60 KiB `in` list takes a second or more) on threads of its own, so long statements never
        make `select 1;` wait for its parse."""
        executor = self._long if len(text) > LONG_TEXT else self._quick
        return await asyncio.get_running_loop().run_in_executor(executor, fn, text)

    def stop_all(self, reason: str) -> None:
        """Shutting down: every running statement stops, and statements waiting for a slot are
        answered 503 now rather than when their wait ends (a request in flight holds up the
        shutdown until it ends)."""
        self.closing = True
        for result in list(self.running):
            result.stop(reason)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def shutdown(self) -> None:
        for executor in (self._executor, self._stream_executor, self._quick, self._long):
            executor.shutdown(wait=False, cancel_futures=True)

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

**Admission** (`ComputeGate`, every short fragment; the long ones are bounded by their turns and
hold no place, see `pace`): at most `slots` fragment threads
of the process compute at once; the others sleep on an event of their own (no CPU, no interpreter
lock) until one leaves. The line is fair between *principals* (who asked for the fragment): one
line per principal, FIFO within it, and the next place goes to the principal that has held places
the least (start-time fair queueing: each principal is charged the seconds its fragments held a
place; one that comes back starts at the gate's current virtual time, so being away saves nothing
up). A well-behaved client with one fragment waiting is then served after about one turn of each
other principal that is waiting, not after every fragment in line — a client that keeps a hundred
streams computing waits behind its own. A fragment enters at a check point and leaves when it stops
computing — at each row batch it hands over, while it waits for credit or for the loop to send,
when it ends — and a holder gives its place to the next in line after `GATE_SLICE_S` at a check
point. Without it, a simulated process with a thousand runnable fragment threads handed the
interpreter's lock to its event loop once per hundreds of 5 ms switch intervals: the loop (the
links' pongs, credit, the rows frames) waited seconds. A place held `GATE_LEASE_S` without a check
point (a thread blocked inside a source, say) lapses, so a sleeping holder cannot close the gate.
"""
from __future__ import annotations

import collections
import os
import threading
import time
from typing import Callable

from streamql.errors import QueryCancelled

LONG_AFTER_S = 0.5      # CPU seconds of one fragment before it takes turns
SLICE_S = 0.05          # a long fragment's turn
WAIT_TICK_S = 0.1       # how often a waiting fragment looks at its cancel flag
GATE_SLICE_S = 0.02     # a fragment computing this long gives its place to the next in line
GATE_LEASE_S = 0.25     # a place held this long without a check point lapses (its holder is not computing)
GATE_WAIT_TICK_S = 0.5  # a fragment waiting at the gate looks at its cancel flag (a cancel also wakes it)
# ... less often the more are waiting: all waiters' timed wakes together about this many a second.
# A 10,000-edge fan-out left ~1,800 fragments waiting in each simulator process, each waking twice a
# second for the interpreter's lock: the process's event loop ran 20–30 s late
GATE_WAKES_PER_S = 200


class ComputeGate:
    """At most `slots` threads compute at once; the others wait in a line per principal, served
    fairly (see the module doc and `_grant`).

    A thread is identified by its own `Place` (from `place(key)`); all methods but `place` are
    called from that thread, except `interrupt` (any thread: wakes it to look at its cancel flag)."""

    def __init__(self, slots: int, slice_s: float = GATE_SLICE_S, lease_s: float = GATE_LEASE_S,
                 clock: Callable[[], float] = time.monotonic, wake_credit_s: float = 0.0):
        self.slots = max(1, slots)
        self.wake_credit_s = wake_credit_s  # how far behind the others a key that comes back may start
        self.clock = clock        # what places are charged by (a test's own clock makes it exact)
        self.slice_s, self.lease_s = slice_s, lease_s
        self._lock = threading.Lock()
        self._holders: dict[Place, float] = {}      # place → when it last entered or checked in
        self._lines: dict[object, collections.deque[Place]] = {}   # key → its waiting places, FIFO
        self._used: dict[object, float] = {}        # key → seconds of places held (its virtual time)
        self._clock = 0.0         # the virtual time of the last key served: where a key (re)joins
        self._forget_at = USED_KEYS_KEPT    # the table's size that makes it forget idle keys
        self._queued = 0
        self._seq = 0             # arrival order: ties between keys go to the one waiting longest
        self.entered = 0          # admissions since the start
        self.waited = 0           # of them, those that had to wait
        self.lapsed = 0           # places that lapsed (held past lease_s without a check point)

    @property
    def computing(self) -> int:
        return len(self._holders)

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def keys_waiting(self) -> int:
        return len(self._lines)

    def place(self, key: object = None) -> "Place":
        """A thread's place; `key` is who it computes for (the fragment's principal): the unit
        the gate shares its places fairly between."""
        return Place(self, key)

    def _charge(self, place: "Place", now: float) -> None:
        """(lock held) The place stops holding: its key pays for the time it held it."""
        self._holders.pop(place, None)
        place.held = False
        self._used[place.key] = self._used.get(place.key, self._clock) + max(0.0, now - place.since)
        if len(self._used) > self._forget_at:
            self._forget_idle()

    def _enqueue(self, place: "Place") -> None:
        """(lock held)"""
        line = self._lines.get(place.key)
        if line is None:
            line = self._lines[place.key] = collections.deque()
            # a key that (re)joins starts at most `wake_credit_s` behind the virtual time now: what
            # it did not use while away is not saved up beyond that (a burst, like a fleet query's
            # fragments on every edge of a simulator process, goes through at once), and what it
            # used recently (a stream between two batches) still counts
            joins_at = self._clock - self.wake_credit_s
            self._used[place.key] = max(self._used.get(place.key, joins_at), joins_at)
        self._seq += 1
        place.seq = self._seq
        line.append(place)
        self._queued += 1

    def _unqueue(self, place: "Place") -> bool:
        line = self._lines.get(place.key)
        if line is None:
            return False
        try:
            line.remove(place)
        except ValueError:
            return False
        self._queued -= 1
        if not line:
            del self._lines[place.key]
        return True

    def _next(self) -> "Place":
        """(lock held, someone waiting) The head of the line of the key that has held places the
        least (ties: the longest waiting) — start-time fair queueing over keys, FIFO within one."""
        key = min(self._lines, key=lambda k: (self._used[k], self._lines[k][0].seq))
        line = self._lines[key]
        place = line.popleft()
        self._queued -= 1
        if not line:
            del self._lines[key]
        self._clock = max(self._clock, self._used[key])
        return place

    def _grant(self, now: float) -> None:
        """(lock held) Lapse stale places, then admit the fairest waiter while there is room."""
        holders = self._holders
        if len(holders) >= self.slots and self._lines:
            for place, since in list(holders.items()):
                if now - since > self.lease_s:
                    self._charge(place, now)
                    self.lapsed += 1
                    if place.waiting:
                        # granted, and lapsed before its thread woke (a busy process): out of the
                        # line and the places both, it waited for good — back in its line
                        self._enqueue(place)
        while self._lines and len(holders) < self.slots:
            place = self._next()
            holders[place] = now
            place.held = True
            place.since = now
            place.ready.set()
        if len(self._used) > self._forget_at:
            self._forget_idle()

    def _forget_idle(self) -> None:
        """(lock held) Forget the keys neither waiting nor holding, which bounds the table (a
        principal per client). Those at or behind the virtual time would rejoin there anyway; one
        still ahead of it (a stream between two batches, say) is forgiven what it used — once per
        USED_KEYS_KEPT new keys at most, as the next look is that far away."""
        active = set(self._lines) | {place.key for place in self._holders}
        for key in [k for k in self._used if k not in active]:
            del self._used[key]
        self._forget_at = max(USED_KEYS_KEPT, 2 * len(self._used))


USED_KEYS_KEPT = 1024     # keys remembered by a gate before the idle ones are forgotten


class Place:
    """One thread's place at a `ComputeGate`."""

    __slots__ = ("gate", "key", "held", "since", "seq", "ready", "waiting", "waited_s")

    def __init__(self, gate: ComputeGate, key: object = None):
        self.gate = gate
        self.key = key
        self.held = False
        self.since = 0.0
        self.seq = 0
        self.ready = threading.Event()
        self.waiting = False
        self.waited_s = 0.0      # seconds its thread waited in line, in all (a stream's first row: FIRST_ROWS)

    def check_in(self, cancelled: threading.Event) -> None:
        """At a check point: enter (waiting in line) unless already in; past a slice with others
        in line, go to the back of its key's line."""
        gate = self.gate
        now = gate.clock()
        with gate._lock:
            if self.held:
                if now - self.since < gate.slice_s or not gate._lines:
                    gate._holders[self] = now       # still computing: its place does not lapse
                    return
                gate._charge(self, now)             # a slice done and others waiting: their turn
            self.ready.clear()
            gate.entered += 1
            if not gate._lines and len(gate._holders) < gate.slots:
                gate._holders[self] = now
                self.held, self.since = True, now
                return
            gate.waited += 1
            gate._enqueue(self)
            self.waiting = True
            gate._grant(now)
        entered = time.monotonic()
        try:
            while True:
                self.ready.wait(max(GATE_WAIT_TICK_S, gate._queued / GATE_WAKES_PER_S))
                if cancelled.is_set():
                    raise QueryCancelled("the query was cancelled")
                with gate._lock:
                    if self.held:
                        self.waiting = False   # under the lock: a lapse from now on does not queue it again
                        return
                    self.ready.clear()
                    gate._grant(gate.clock())   # a holder that blocked without leaving lapses
        except BaseException:
            self.leave()
            raise
        finally:
            self.waiting = False
            self.waited_s += time.monotonic() - entered

    def leave(self) -> None:
        """Not computing any more (waiting for credit, for the loop, or ended): the next one's turn."""
        if not self.held and not self.waiting:
            # neither holding nor in line (a stream between batches: `idle` at every item): nothing
            # to give back, so no lock — only this thread puts its place in line, and a lapse only
            # clears `held`; the gate's lock was the soak's busiest (30–60 threads waiting for it)
            return
        gate = self.gate
        with gate._lock:
            now = gate.clock()
            if self.held:
                gate._charge(self, now)
            elif self.waiting:
                gate._unqueue(self)
            gate._grant(now)

    def interrupt(self) -> None:
        """(any thread) Wake a waiting thread so it sees its cancel flag at once."""
        if self.waiting:
            self.ready.set()


class Pacer:
    def __init__(self, turns: int | None = None, long_after_s: float = LONG_AFTER_S, slice_s: float = SLICE_S,
                 share: float = 1.0, gate: ComputeGate | None = None):
        self.turns = max(1, turns or (os.cpu_count() or 2) - 1)
        self.long_after_s, self.slice_s = long_after_s, slice_s
        self.share = share
        self.gate = gate          # admission of every fragment's computing (None: no bound)
        self.fair_by_edge = False  # the gate's unit of fairness: (edge, principal), not the principal alone
        self._turns = threading.Semaphore(self.turns)
        self._lock = threading.Lock()
        self.waiting = 0          # long fragments waiting for a turn now
        self.long_total = 0       # fragments that became long, since the start

    @property
    def computing(self) -> int:
        return self.gate.computing if self.gate is not None else -1

    @property
    def queued(self) -> int:
        return self.gate.queued if self.gate is not None else 0

    @property
    def keys_waiting(self) -> int:
        """Principals (the gate's unit of fairness) with fragments waiting at the gate now."""
        return self.gate.keys_waiting if self.gate is not None else 0

    def pace_for(self, cancelled: threading.Event, key: object = None) -> Callable[[], None]:
        """The `pace` of one fragment's worker thread (call it from that thread only); `key` is who
        it computes for (the gate's unit of fairness: the fragment's principal). `pace.idle()`
        says the thread stops computing for a while (gives its place at the gate back);
        `pace.release()` that it ended; `pace.interrupt()` (any thread) wakes it at the gate."""
        state = {"long": False, "holding": False, "until": 0.0, "started": None}
        place = self.gate.place(key) if self.gate is not None else None

        def long_turn() -> None:
            if not state["long"]:
                now_cpu = time.thread_time()     # the calling thread's CPU: counted from its first call
                if state["started"] is None:
                    state["started"] = now_cpu
                if now_cpu - state["started"] < self.long_after_s:
                    return
                state["long"] = True
                with self._lock:
                    self.long_total += 1
                if place is not None:      # before nice 19: a thread the kernel runs last must not
                    place.leave()          # hold the gate's lock; long: its turns bound it, not the gate
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

        def pace() -> None:
            long_turn()
            # a long fragment computes only with one of the `turns` (so they are bounded already)
            # and at nice 19: holding a place at the gate too, it kept it while the kernel ran
            # everyone else first, and the short fragments in line waited for a thread that did
            # not run (measured in the soak: the gate's places held by hostile counts)
            if place is not None and not state["long"]:
                place.check_in(cancelled)

        def idle() -> None:
            if place is not None:
                place.leave()

        def release() -> None:
            if state["holding"]:
                state["holding"] = False
                self._turns.release()
            if place is not None:
                place.leave()

        def interrupt() -> None:
            if place is not None:
                place.interrupt()
        pace.idle = idle
        pace.release = release             # the worker gives its turn back when the fragment ends
        pace.interrupt = interrupt
        pace.place, pace.state = place, state   # read (not changed) by an edge's census of its slots
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


GATE_SLOTS = max(2, os.cpu_count() or 2)   # a device's fragments computing at once: its CPUs

PACER = Pacer(gate=ComputeGate(GATE_SLOTS))

"""Query fragments sent by the federation: run, stream back with credit, stop at limits, cancel.

Each fragment runs in its own worker thread (started when the process has a place for one more:
edge_engine/fragment_starts.py) that pulls the query's batches (`Result.items()`:
numpy columns, no per-row Python) and hands encoded `rows` frames to the event loop. The loop
owns the fragment's life: credit and cancel frames, the time limit, and the one `end` frame.

- **Credit** (rows): the worker takes rows from the fragment's `CreditWindow` before each
  frame and cuts a batch to what the window holds; at 0 it stops pulling from the query (so
  backpressure reaches the sources) and waits, paused, not dropped, until credit arrives.
- **Limits**: `rows` — exactly that many rows are sent, then `end limit` (a finite query that
  ends right there ends `ok`); `seconds` — counted from the query frame's arrival, enforced by
  the loop even when the worker is busy inside an operator (the loop cancels the query's context,
  which the library checks between batches, even inside one function counting a huge bag);
  `memory_mb` — the statement's memory budget (operator state, and every large value checked
  before it is built) and the largest result batch. The edge's configured limits are defaults and
  ceilings at once: a frame may ask for less, never more.
- **Deadline**: a one-shot fragment's optional `deadline_s` is the federation's device timeout:
  past it nobody waits for the answer, so the edge ends the fragment itself then (counted from the
  frame's arrival, like `seconds`), `end cancelled` DeadlineError, even when the federation's
  cancel is late (a busy federation) or lost — a fragment computing for an answer already reported
  timed out gives its CPU and its slot back.
- **Exactly one `end`** per query, sent after its last `rows` frame: `ok`, `limit`, `error` (with
  the error's kind, message, line and column) or `cancelled`. A cancel is answered at once; the
  worker stops at its next batch or idle tick, and anything it still produces is discarded.
- **One frame in flight**: the worker computes the next batch while the loop writes the last
  one, and its own end (ok, a limit it reached, an error) follows its rows without waiting for
  them to be written: a one-shot query's end goes with its row, not after the worker's thread
  is scheduled again (on a busy device, seconds behind a thousand other threads).
- When the connection drops, its fragments are cancelled without an `end` (the socket is gone).
- **CPU**: a fragment's thread runs a step below the event loop (nice 5: the link, heartbeats and
  credit first); one that has computed for more than half a second takes turns with the other
  long ones (the CPU count less one at once) at nice 19; short fragments never wait (pacing.py).
- **Slots**: at most `max_running` fragments at once, and at most `max_per_principal` of one
  principal (the `query` frame's `principal`: who asked), so one reader holding streams it never
  reads cannot take every slot; fragments over either are answered `end error` LimitError.
  Beyond them, `one_shot_reserve` slots take only fragments the federation sent as one-shot
  (`kind` "bag" or "vector": they end on their own, under their time limit), so an edge whose 32
  slots hold other users' streams still answers one-shot queries; a fragment sent as one-shot
  that compiles to a stream is refused.
  When every slot is taken, a newcomer takes the slot of the oldest stream paused — no credit,
  i.e. unread — for `PAUSED_YIELD_S` or more of a principal that holds at least as many slots as
  the newcomer's would then hold (`mine + 1 <= theirs`, the biggest holders first); that stream
  ends `end error` LimitError saying why. Fragments that compute or stream to a reader are never
  taken, so a full edge refuses as before when nothing is paused.
  A statement the process guard quarantined (edge_engine/guard.py) is refused the same way.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
import time
from typing import Any, Awaitable, Callable

from streamql import wire
from streamql.batch import IDLE
from streamql.errors import QueryCancelled, QueryError, QueryLimitError
from streamql.streams import Limits

from .autostart import columns_bytes, item_columns
from .fragment_costs import FIRST_ROWS, FRAGMENT_COSTS, statement_key
from .fragment_starts import STARTS
from .pacing import PACER, Pacer, below_the_loop

__all__ = ["Fragment", "FragmentSet", "DuplicateQuery"]

DEFAULT_BATCH_ROWS = 1024
ONE_SHOT_KINDS = ("bag", "vector")   # a query frame's `kind` for fragments that end on their own
PAUSED_YIELD_S = 2.0    # a stream paused (unread) this long gives its slot to a principal under its share
BUSY_RETRY_S = 0.5      # every slot taken: the wait the refusal suggests before the federation asks again
CREDIT_WAIT_S = 5.0     # a paused fragment sleeps until credit or its end wakes it; this is a safety net
CENSUS_EVERY_S = 5.0    # a full edge logs what fills its slots at most this often
MAX_FRAME_PAYLOAD = 8 << 20     # aim well below wire.MAX_FRAME_BYTES; a frame over it is split again


class DuplicateQuery(Exception):
    pass


class _Stopped(Exception):
    """The loop ended the fragment (cancel, time limit, lost connection): the worker just leaves."""


class Fragment:
    """One query fragment (see the module docstring)."""

    def __init__(self, owner: "FragmentSet", fields: dict, engine: Any):
        self.owner = owner
        self.qid: str = fields["qid"]
        self.source: str = fields["source"]
        # the operator's limits are the ceiling: a client may lower them, never raise them
        ceiling = owner.default_limits
        self.limits = ceiling.given(fields.get("limits") or {}).at_most(ceiling)
        self.params = fields.get("params") or {}
        self.names = fields.get("columns")
        self.batch_rows = fields.get("batch_rows") or DEFAULT_BATCH_ROWS
        self.principal: str | None = fields.get("principal")
        # one-shot as the federation sent it ("bag", "vector": it ends on its own); checked when compiled
        self.one_shot = fields.get("kind") in ONE_SHOT_KINDS
        self.deadline_s: float | None = fields.get("deadline_s")    # nobody waits for it past this
        self.window = wire.CreditWindow(fields["credit"])
        self.engine = engine
        self.received = time.monotonic()
        self.sent_rows = 0          # rows whose frames were written (loop)
        self.taken_rows = 0         # rows granted by the window so far (worker)
        self.seq = 0
        self.outcome: str | None = None     # decided (loop); the end frame follows
        self.ctx = None
        self._stop = threading.Event()   # set when the outcome is decided: wakes the worker wherever it waits
        # this worker's share of the CPU (edge_engine/pacing.py), shared fairly between principals
        # (in a simulator process that stands for many devices, optionally per edge and principal)
        key = (id(owner), self.principal) if owner.pacer.fair_by_edge else self.principal
        self._pace = owner.pacer.pace_for(self._stop, key=key)
        self._cond = threading.Condition()
        self._send_lock = asyncio.Lock()
        self._in_flight = None      # the worker's last rows frame handed to the loop (a concurrent future)
        self._rows_go = False       # the worker decided the end itself: the rows it handed over still go
        self._timer: asyncio.TimerHandle | None = None
        self.thread_id: int | None = None
        self.paused_since: float | None = None   # the worker waits for credit since (monotonic), or None
        self.kind: str | None = None    # the compiled statement's kind ("stream", "bag", …); None before
        self.plan_reused = False        # its plan came from the edge's compiled-statement cache
        self._times: list[float] | None = None   # a stream's first row: thread ran, compiled, first batch (FIRST_ROWS)

    # == the loop's side ========================================================================
    def start(self) -> None:
        seconds, deadline = self.limits.seconds, self.deadline_s
        if deadline is not None and (seconds is None or deadline < seconds):
            self._timer = self.owner.loop.call_later(deadline, self._past_deadline)
        elif seconds is not None:
            self._timer = self.owner.loop.call_later(seconds, self._expire)
        # a bare thread: threading.Thread.start() waits until the new thread runs, and on a busy
        # interpreter (a hundred simulated edges in one process) that held the event loop for
        # milliseconds per fragment; this one starts without waiting and never holds up the exit
        # — when the process has a place for one more starting thread (STARTS)
        STARTS.start(self)

    def add_credit(self, rows: int) -> None:
        with self._cond:
            self.window.add(rows)
            self._cond.notify_all()

    def cancel(self, reason: str = "cancelled") -> None:
        self.finish("cancelled", None)

    def _expire(self) -> None:
        self.finish("limit", {"kind": "LimitError",
                              "message": f"the query ran past its time limit of {self.limits.seconds:g} s"})

    def _past_deadline(self) -> None:
        if self.outcome is None:
            self.owner.past_deadline += 1
        self.finish("cancelled", {"kind": "DeadlineError", "message": (
            f"the federation waits {self.deadline_s:g} s for this device's answer: stopped on the edge")})

    def drop(self) -> None:
        """The connection is gone: stop, no end."""
        self._decide("dropped")

    def _decide(self, outcome: str) -> bool:
        if self.outcome is not None:
            return False
        self.outcome = outcome
        if self._timer is not None:
            self._timer.cancel()
        ctx = self.ctx
        if ctx is not None:
            ctx.cancel.set()
        self._stop.set()
        self._pace.interrupt()      # a worker waiting at the process's compute gate sees it at once
        with self._cond:
            self._cond.notify_all()
        self.owner.forget(self)
        return True

    def finish(self, outcome: str, error: dict | None, *, from_worker: bool = False) -> None:
        """Decide the outcome (once) and send the end frame after the rows already on their way
        (those the worker handed over go first when the worker itself decided the end; after a
        cancel, a time limit or a lost connection they are dropped)."""
        if self._decide(outcome):
            self._rows_go = from_worker
            self.owner.spawn(self._send_end(outcome, error))

    async def _send_rows(self, data: bytes, n: int) -> None:
        async with self._send_lock:   # FIFO: rows in their order, the end after them
            if self.outcome is not None and not self._rows_go:
                raise _Stopped()
            await self.owner.send_bytes(data)
            if not self.sent_rows and self._times is not None and self.kind == "stream":
                FIRST_ROWS.add(self.received, *self._times, time.monotonic())
            self.sent_rows += n

    async def _send_end(self, outcome: str, error: dict | None) -> None:
        async with self._send_lock:
            fields = {"qid": self.qid, "outcome": outcome, "rows": self.sent_rows,
                      "seconds": round(time.monotonic() - self.received, 6)}
            if error is not None:
                fields["error"] = {"kind": str(error.get("kind") or "RuntimeError"),
                                   "message": str(error.get("message") or ""),
                                   "line": error.get("line"), "column": error.get("column")}
                if error.get("retry_s"):
                    fields["error"]["retry_s"] = float(error["retry_s"])
            try:
                await self.owner.send_frame(wire.make("end", **fields))
            except Exception as exc:  # noqa: BLE001 - the connection went away: nobody to tell
                self.owner.log.debug("end of %s not sent: %s", self.qid, exc)

    def state(self) -> str:
        """What the fragment is doing now, for an edge's census of its slots (read from the loop,
        without locks: a snapshot that may be a step behind)."""
        if self.paused_since is not None:
            return "paused"
        if self.kind is None:
            return "starting"       # its thread not yet run, or waiting for the edge's compile lock
        place, pace_state = getattr(self._pace, "place", None), getattr(self._pace, "state", None) or {}
        if pace_state.get("long"):
            return "long"
        if place is not None and place.waiting:
            return "at the gate"
        if place is not None and place.held:
            return "computing"
        in_flight = self._in_flight
        if in_flight is not None and not in_flight.done():
            return "sending"
        return "waiting for input"   # between batches: a stream waiting for its signal's next readings

    # == the worker's side ======================================================================
    def _post(self, outcome: str, error: dict | None) -> None:
        self.owner.loop.call_soon_threadsafe(lambda: self.finish(outcome, error, from_worker=True))

    def _run(self) -> None:
        self.thread_id = threading.get_native_id()   # for /proc (what a fragment's thread costs)
        below_the_loop()
        result = None
        started_cpu, started_wall = time.thread_time(), time.monotonic()
        compiled_cpu = compiled_wall = None
        try:
            try:
                result = self._compile()
            finally:
                STARTS.compiled()
            compiled_cpu, compiled_wall = time.thread_time(), time.monotonic()
            self._times = [started_wall, compiled_wall]
            self._stream(result)
        except _Stopped:
            pass
        except QueryCancelled:
            if self.outcome is None:
                self._post("cancelled", None)
        except QueryLimitError as exc:
            self._post("limit", exc.to_dict())
        except QueryError as exc:
            self._post("error", exc.to_dict())
        except Exception as exc:  # noqa: BLE001 - one fragment's failure ends only that fragment
            if self.outcome is None:
                self.owner.log.exception("fragment %s failed", self.qid)
                self._post("error", {"kind": "RuntimeError", "message": f"internal error: {type(exc).__name__}: {exc}"})
        finally:
            self._pace.release()
            if result is not None:
                try:
                    result.close()
                except Exception:  # noqa: BLE001
                    pass
            self._account(started_cpu, started_wall, compiled_cpu, compiled_wall)

    def _account(self, started_cpu: float, started_wall: float, compiled_cpu: float | None,
                 compiled_wall: float | None) -> None:
        """This fragment's CPU, compiling apart from running, into the process's totals."""
        ended_cpu = time.thread_time()
        if compiled_cpu is None:    # stopped or failed while compiling: all of it was compiling
            compiled_cpu, compiled_wall = ended_cpu, time.monotonic()
        FRAGMENT_COSTS.add(compiled=self.kind is not None, reused=self.plan_reused,
                           compile_cpu_s=compiled_cpu - started_cpu, compile_wall_s=compiled_wall - started_wall,
                           run_cpu_s=ended_cpu - compiled_cpu, principal=self.principal,
                           statement=statement_key(self.source))

    def _compile(self):
        # compiling (a fraction of a millisecond) waits for no place at the compute gate: the compile
        # lock is the edge's, and its holder waiting in the process's line while every other fragment
        # of that edge waited for the lock piled up a thousand threads (measured in the soak)
        engine = self.engine
        if self.outcome is not None:
            raise _Stopped()
        with self.owner.compile_lock:   # session variables are the engine's: set them only while compiling
            if self.outcome is not None:   # ended while it waited for the lock (cancelled, client gone)
                raise _Stopped()
            session = engine.store.session
            saved = {}
            try:
                for name, value in self.params.items():
                    key = name.lower()
                    saved[key] = session.get(key, _MISSING)
                    session[key] = value
                result = engine.query(self.source)
            finally:
                for key, value in saved.items():
                    if value is _MISSING:
                        session.pop(key, None)
                    else:
                        session[key] = value
        self.plan_reused = result.plan_reused
        result.ctx.limits = Limits(None, None, self.limits.memory_mb)   # rows and time: enforced here
        # long computations take turns on the CPU, so they never starve the short fragments
        result.ctx.pace = self._pace
        self.kind = result.kind
        if self.one_shot and result.kind == "stream":   # it may have taken a slot kept for one-shot queries
            result.ctx.cancel.set()
            raise QueryLimitError("this fragment was sent as a one-shot query but is a stream: refused")
        self.ctx = result.ctx
        if self.outcome is not None:
            result.ctx.cancel.set()
            raise _Stopped()
        return result

    def _stream(self, result) -> None:
        names = list(self.names) if self.names and len(self.names) == len(result.columns) else list(result.columns)
        width = len(result.columns)
        ctx = result.ctx
        rows_limit = self.limits.rows
        memory_limit = self.limits.memory_mb
        items = result.items()
        if items is None or result.kind == "vector":
            items = ({"$c0": row} if width == 1 else dict(zip([f"$c{i}" for i in range(width)], row))
                     for row in result)
        pace = self._pace
        for item in items:
            if self.outcome is not None:
                raise _Stopped()
            # an item in hand: cutting, encoding and sending it waits for no turn at the compute
            # gate (the sources' own checks pace the computing); cancel and limits still stop it
            ctx.check_unpaced()
            pace.idle()
            if item is IDLE:
                continue
            n, cols = item_columns(item, width)
            if not n:
                continue
            if memory_limit is not None and columns_bytes(cols) > memory_limit * 1e6:
                raise QueryLimitError(f"a result batch of {columns_bytes(cols) / 1e6:.1f} MB went past the "
                                      f"query's memory limit of {memory_limit:g} MB")
            offset = 0
            while offset < n:
                if rows_limit is not None and self.taken_rows >= rows_limit:
                    raise QueryLimitError(f"the query produced more than its limit of {rows_limit} rows")
                want = min(n - offset, self.batch_rows)
                if rows_limit is not None:
                    want = min(want, rows_limit - self.taken_rows)
                granted = self._take(want, ctx)
                self._send([c[offset:offset + granted] for c in cols], granted, names)
                offset += granted
            if rows_limit is not None and self.taken_rows >= rows_limit and result.kind == "stream":
                # a stream goes on: stop now rather than wait for a row past the limit
                raise QueryLimitError(f"the query reached its limit of {rows_limit} rows")
        if self.outcome is None:
            self._post("ok", None)

    def _take(self, want: int, ctx) -> int:
        """Rows the window grants now, waiting (paused: not pulling from the query) while it is empty."""
        released = False
        with self._cond:
            while True:
                if self.outcome is not None:
                    raise _Stopped()
                granted = self.window.take(want)
                if granted:
                    self.taken_rows += granted
                    self.paused_since = None
                    return granted
                if self.paused_since is None:
                    self.paused_since = time.monotonic()
                if not released:
                    # paused: no CPU turn nor place at the gate held while it waits — given back
                    # without holding _cond, which the loop takes for credit and cancels: the loop
                    # must never wait behind the gate's lock (a soak's sampling saw it blocked
                    # there, the simulator's loop 20–90 s late); then look at the window again
                    self._cond.release()
                    try:
                        self._pace.release()
                    finally:
                        self._cond.acquire()
                    released = True
                    continue
                if ctx.cancel.is_set():       # (not ctx.check: that would wait for a turn, paused)
                    raise QueryCancelled("the query was cancelled")
                # no polling: credit (add_credit) and the fragment's end (_decide) notify, so a
                # stream nobody reads costs no CPU while it waits (thousands of them on a
                # simulated fleet's process woke ten times a second each)
                self._cond.wait(CREDIT_WAIT_S)

    def _send(self, cols: list, n: int, names: list) -> None:
        frame = wire.make("rows", qid=self.qid, seq=self.seq, n=n, cols=cols, names=names, time=time.time())
        try:
            data = wire.encode(frame, max_size=self.owner.max_frame)
        except wire.ProtocolError as exc:
            if exc.code != "too_large" or n < 2:
                raise QueryLimitError(f"a row of the result cannot be sent: {exc.reason}") from None
            half = n // 2
            self._send([c[:half] for c in cols], half, names)
            self._send([c[half:] for c in cols], n - half, names)
            return
        self.seq += 1
        if self.seq == 1 and self._times is not None:
            place = getattr(self._pace, "place", None)
            self._times += [time.monotonic(), place.waited_s if place is not None else 0.0]
        self._wait_in_flight()   # one frame in flight: back-pressure from the socket, memory bounded
        self._in_flight = asyncio.run_coroutine_threadsafe(self._send_rows(data, n), self.owner.loop)

    def _wait_in_flight(self) -> None:
        future, self._in_flight = self._in_flight, None
        if future is None:
            return
        try:
            future.result()
        except _Stopped:
            raise
        except Exception as exc:  # the connection failed under it
            raise _Stopped() from exc


_MISSING = object()


class FragmentSet:
    """The fragments running over one connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, send_frame: Callable[[wire.Frame], Awaitable[None]],
                 send_bytes: Callable[[bytes], Awaitable[None]], engine: Callable[[], Any],
                 default_limits: Limits | None = None, max_running: int = 32, max_per_principal: int = 8,
                 one_shot_reserve: int = 8,
                 compile_lock: threading.Lock | None = None, log: logging.Logger | None = None,
                 max_frame: int | None = None, refuse: Callable[[str], str | None] | None = None,
                 running_log: Any = None, pacer: Pacer | None = None):
        self.loop = loop
        self.pacer = pacer or PACER     # the process's CPU, shared by every edge in it
        self.max_frame = min(MAX_FRAME_PAYLOAD, max_frame or MAX_FRAME_PAYLOAD)   # welcome.max_frame
        self.send_frame = send_frame
        self.send_bytes = send_bytes
        self.engine = engine
        self.default_limits = default_limits or Limits()
        self.max_running = max_running
        self.max_per_principal = max_per_principal   # one principal's share of the slots
        self.one_shot_reserve = one_shot_reserve     # slots beyond max_running for one-shot fragments only
        self.refuse = refuse            # source → why it is refused here (the guard's quarantine), or None
        self.running_log = running_log  # the guard's write-ahead of running fragments (edge_engine/guard.py)
        self.compile_lock = compile_lock or threading.Lock()
        self.log = log or logging.getLogger("streamql.edge.fragments")
        self.running: dict[str, Fragment] = {}
        self._tasks: set[asyncio.Task] = set()
        self.started = 0
        self.yielded = 0                # paused streams stopped to give their slot (_yield_paused_slot)
        self.refused_full = 0           # fragments refused because every slot was taken
        self.refused_one_shot = 0       # of them, fragments sent as one-shot (the reserve full too)
        self.past_deadline = 0          # one-shot fragments the edge stopped itself at their deadline
        self._census_at = float("-inf")

    def spawn(self, coroutine) -> None:
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self, fields: dict) -> Fragment:
        qid = fields["qid"]
        if qid in self.running:
            raise DuplicateQuery(qid)
        fragment = Fragment(self, fields, self.engine())
        refusal = self._refusal(fragment)
        if refusal is not None:
            fragment.finish("error", refusal)
            return fragment
        self.running[qid] = fragment
        self.started += 1
        if self.running_log is not None:  # written ahead: a guard kill names what was running
            self.running_log.started(qid, fragment.source)
        fragment.start()
        return fragment

    def _refusal(self, fragment: Fragment) -> dict | None:
        """Why the fragment may not start (an `end error` body), or None. The principal's share and
        the quarantine first: no paused stream is stopped for a fragment refused anyway."""
        if fragment.principal is not None:
            mine = sum(1 for f in self.running.values() if f.principal == fragment.principal)
            if mine >= self.max_per_principal:
                return {"kind": "LimitError",
                        "message": f"this principal runs at most {self.max_per_principal} queries on this edge"}
        reason = self.refuse(fragment.source) if self.refuse is not None else None
        if reason is not None:
            return {"kind": "LimitError", "message": reason}
        # the first max_running slots take any fragment, the reserve beyond them only one-shot ones:
        # an edge full of streams (other users', read or not) still answers a one-shot query
        room = self.max_running + (self.one_shot_reserve if fragment.one_shot else 0)
        if len(self.running) >= room and not (len(self.running) == room
                                              and self._yield_paused_slot(fragment.principal)):
            self._log_full(fragment)
            # `retry_s`: busy, not wrong — the federation asks again (streamql/physical/remote.py)
            if fragment.one_shot and self.one_shot_reserve:
                return {"kind": "LimitError", "retry_s": BUSY_RETRY_S, "message": (
                    f"this edge runs at most {room} queries at once ({self.one_shot_reserve} of them "
                    f"kept for one-shot queries)")}
            return {"kind": "LimitError", "retry_s": BUSY_RETRY_S,
                    "message": f"this edge runs at most {self.max_running} queries at once"}
        return None

    def _yield_paused_slot(self, principal: str | None) -> bool:
        """Every slot taken: free one for `principal` if a principal holding at least as many as
        `principal` would then hold (`mine + 1 <= theirs`; the biggest holders first) has a stream
        paused for PAUSED_YIELD_S (see the module docstring). True when a slot was freed. With one
        slot per principal (a fleet of many users) a newcomer holding nothing there may take the
        slot of a stream nobody has read for seconds: never of one that is read."""
        held = collections.Counter(f.principal for f in self.running.values())
        mine = held.get(principal, 0)
        now = time.monotonic()
        for holder, count in held.most_common():
            if count < mine + 1:    # the others hold fewer than it would: its share is reached
                return False
            paused = [f for f in self.running.values() if f.principal == holder and f.paused_since is not None
                      and now - f.paused_since >= PAUSED_YIELD_S]
            if paused:
                victim = min(paused, key=lambda f: f.received)
                self.yielded += 1
                victim.finish("error", {"kind": "LimitError", "message": (
                    f"this edge runs at most {self.max_running} queries at once: this stream, unread "
                    f"(no credit) for {now - victim.paused_since:.0f} s, gave its slot to another "
                    f"principal's query (its principal held as many slots here or more)")})
                return True
        return False

    def census(self) -> dict:
        """The running fragments by principal, kind and state, with their ages and how long the
        paused ones have been paused (what fills the slots when a query is refused)."""
        now = time.monotonic()
        fragments = list(self.running.values())
        by_state = collections.Counter(f.state() for f in fragments)
        by_kind = collections.Counter("stream" if f.kind == "stream" else "one-shot" if f.kind or f.one_shot
                                      else "not compiled" for f in fragments)
        ages = sorted(now - f.received for f in fragments)
        return {"running": len(fragments), "principals": len({f.principal for f in fragments}),
                "most_per_principal": max(collections.Counter(f.principal for f in fragments).values(), default=0),
                "kinds": dict(by_kind), "states": dict(by_state),
                "age_s": [round(a, 1) for a in ages[::max(1, len(ages) // 8)]] + ([round(ages[-1], 1)] if ages else []),
                "paused_s": sorted(round(now - f.paused_since, 1) for f in fragments if f.paused_since is not None),
                "fragments": [(f.principal, f.kind or "-", f.state(), round(now - f.received, 1), f.source[:60])
                              for f in sorted(fragments, key=lambda f: f.received)]}

    def _log_full(self, fragment: Fragment) -> None:
        """A refusal for want of slots: the census, at most every CENSUS_EVERY_S per edge."""
        self.refused_full += 1
        self.refused_one_shot += fragment.one_shot
        now = time.monotonic()
        if now - self._census_at < CENSUS_EVERY_S:
            return
        self._census_at = now
        self.log.warning("slots full, %d refused since the start (%d one-shot); refused %s (%s): %s",
                         self.refused_full, self.refused_one_shot,
                         fragment.principal, fragment.source[:60], json.dumps(self.census()))

    def forget(self, fragment: Fragment) -> None:
        if self.running.get(fragment.qid) is fragment:
            del self.running[fragment.qid]
            if self.running_log is not None:
                self.running_log.ended(fragment.qid)

    def credit(self, qid: str, rows: int) -> None:
        fragment = self.running.get(qid)
        if fragment is not None:            # credit for an unknown qid is ignored (protocol §6)
            fragment.add_credit(rows)

    def cancel(self, qid: str, reason: str = "cancelled") -> None:
        fragment = self.running.get(qid)
        if fragment is not None:
            fragment.cancel(reason)

    def drop_all(self) -> None:
        for fragment in list(self.running.values()):
            fragment.drop()

    def qids(self) -> list[str]:
        return sorted(self.running)

    def paused(self) -> int:
        return sum(1 for f in self.running.values() if f.paused_since is not None)

    async def drain(self, timeout: float = 2.0) -> None:
        """Wait for end frames on their way (used when shutting down)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

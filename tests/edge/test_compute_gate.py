"""The process's compute gate (edge_engine/pacing.py `ComputeGate`): at most `slots` fragment
threads compute at once, the others sleep in FIFO order; a paused fragment costs no CPU."""
from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from edge_engine import fragments as fragments_module
from edge_engine.pacing import ComputeGate, Pacer
from streamql.errors import QueryCancelled

from concurrency_probe import InsideCounter, spin


def thread_state(tid: int) -> str:
    """'R' runnable, 'S' sleeping, … ('' once the thread is gone) from /proc."""
    try:
        with open(f"/proc/self/task/{tid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def thread_cpu_s(tid: int) -> float:
    """User + system CPU seconds of one thread of this process, from /proc."""
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_at_most_slots_compute_at_once_and_every_thread_progresses():
    gate = ComputeGate(2, slice_s=0.005)
    pacer = Pacer(long_after_s=1e9, gate=gate)     # no long-fragment turns: the gate alone
    counter = InsideCounter()
    chunks = [0] * 12
    stop = threading.Event()

    def work(i: int) -> None:
        pace = pacer.pace_for(threading.Event())
        try:
            while not stop.is_set():
                pace()                    # a check point: in (or waiting in line)
                with counter.inside():
                    spin(0.001)
                chunks[i] += 1
                if chunks[i] % 5 == 0:
                    pace.idle()           # a batch handed over: out until the next check point
        finally:
            pace.release()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(chunks))]
    for t in threads:
        t.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert counter.most <= 2, counter.most
    assert all(c > 0 for c in chunks), chunks          # FIFO and slices: nobody starves
    assert gate.computing == 0 and gate.queued == 0     # everyone left
    assert gate.waited > 0                               # the bound was reached, so it held something


def test_the_line_is_first_in_first_out():
    gate = ComputeGate(1)
    holder = gate.place()
    holder.check_in(threading.Event())
    order: list[int] = []
    places = [gate.place() for _ in range(4)]

    def wait(i: int) -> None:
        places[i].check_in(threading.Event())
        order.append(i)
        places[i].leave()

    threads = []
    for i in range(4):           # they queue one after the other, in this order
        t = threading.Thread(target=wait, args=(i,))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 5
        while gate.queued < i + 1 and time.monotonic() < deadline:
            time.sleep(0.005)
    assert gate.queued == 4
    holder.leave()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3]


def test_a_cancel_wakes_a_waiter_at_once_and_it_leaves_the_line():
    gate = ComputeGate(1, lease_s=60)
    holder = gate.place()
    holder.check_in(threading.Event())
    cancelled = threading.Event()
    pacer = Pacer(long_after_s=1e9, gate=gate)
    pace = pacer.pace_for(cancelled)
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            pace()
        except QueryCancelled as exc:
            raised.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    deadline = time.monotonic() + 5
    while gate.queued < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    cancelled.set()
    pace.interrupt()
    t.join(5)
    assert not t.is_alive() and len(raised) == 1
    assert gate.queued == 0 and gate.computing == 1     # the holder still holds its place
    holder.leave()
    assert gate.computing == 0


def test_a_holder_blocked_without_check_points_cannot_close_the_gate():
    gate = ComputeGate(1, lease_s=0.05)
    blocked = gate.place()
    blocked.check_in(threading.Event())     # then sleeps inside a source, say, without leaving
    waiter = gate.place()
    done = threading.Event()

    def wait() -> None:
        waiter.check_in(threading.Event())
        done.set()

    t = threading.Thread(target=wait)
    t.start()
    assert done.wait(10)                    # its place lapsed: the next one went in
    t.join(5)
    assert gate.lapsed == 1 and not blocked.held
    waiter.leave()
    blocked.check_in(threading.Event())     # back from its sleep: in line again like anyone
    assert blocked.held
    blocked.leave()


def test_a_long_fragment_takes_turns_and_holds_no_place_at_the_gate():
    gate = ComputeGate(1, lease_s=60)
    pacer = Pacer(turns=1, long_after_s=0.01, slice_s=10.0, gate=gate)
    became_long, stop = threading.Event(), threading.Event()

    def long_work() -> None:
        pace = pacer.pace_for(threading.Event())
        try:
            while not stop.is_set():
                pace()
                if pacer.long_total:
                    became_long.set()
                spin(0.001)
        finally:
            pace.release()

    t = threading.Thread(target=long_work)
    t.start()
    try:
        assert became_long.wait(10)
        # long now (at nice 19, with its turn): its place went back, so a short one goes in at once
        assert gate.computing == 0
        short = pacer.pace_for(threading.Event())
        short()
        assert gate.computing == 1 and gate.queued == 0
        short.release()
    finally:
        stop.set()
        t.join(5)


COUNT = "select count(x) from Integer x where x in iota(1, {n}) and x % 7 = 3;"


@pytest.fixture
def gated(monkeypatch):
    """The edge's fragments behind a gate of 2 places (the process's PACER replaced)."""
    pacer = Pacer(gate=ComputeGate(2))
    monkeypatch.setattr(fragments_module, "PACER", pacer)
    return pacer


async def test_many_computing_fragments_run_two_at_a_time_with_right_answers(fed, edge_config, start_edge,
                                                                             gated):
    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    sizes = {f"c{i}": 1_500_000 + 1000 * i for i in range(30)}
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    runnable: list[int] = []        # fragment threads wanting a CPU, at each sample
    done = asyncio.Event()

    async def watch() -> None:      # the loop's lag and the fragment threads that want a CPU
        while not done.is_set():
            due = loop.time() + 0.02
            await asyncio.sleep(0.02)
            lags.append(loop.time() - due)
            tids = [f.thread_id for f in daemon.fragments.running.values() if f.thread_id]
            runnable.append(sum(1 for tid in tids if thread_state(tid) == "R"))
    watcher = asyncio.ensure_future(watch())
    for qid, n in sizes.items():
        await conn.start_query(COUNT.format(n=n), qid=qid)
    ends = {}
    for qid in sizes:
        ends[qid] = await conn.next("end", qid=qid, start=0, timeout=120)
    done.set()
    await watcher
    for qid, n in sizes.items():        # the oracle: Python's own count
        assert ends[qid]["outcome"] == "ok", ends[qid]
        assert conn.rows_of(qid) == [len(range(3, n + 1, 7))]
    assert gated.gate.waited > 0        # they did queue
    assert gated.gate.computing == 0 and gated.gate.queued == 0
    # 30 fragments computing at once, yet no more than the gate's 2 (and a thread or two between
    # leaving the gate and handing over its row) want the CPU: the rest sleep in line. Not the
    # maximum of all samples: a waiting thread wakes every GATE_WAIT_TICK_S to look at its cancel
    # flag, and on a busy box a few such wakes now and then fall on one sample (6 seen in CI);
    # without the gate all 30 want it at every sample
    runnable.sort()
    assert runnable and runnable[int(len(runnable) * 0.9)] <= 4, runnable[-20:]
    assert max(lags) < 5.0              # liveness: the loop kept turning (not a timing bound)


async def test_a_stream_nobody_reads_costs_no_cpu(fed, edge_config, start_edge, gated):
    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    qid = await conn.start_query("select stream of x from Real x where x in signal_stream('vibration');",
                                 credit=64, batch_rows=32)
    await conn.wait_for(lambda f: f.t == "rows" and sum(r["n"] for r in conn.of_type("rows", qid=qid)) >= 64)
    fragment = daemon.fragments.running[qid]
    deadline = time.monotonic() + 10
    while daemon.fragments.paused() < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)            # now waiting for credit
    before = thread_cpu_s(fragment.thread_id)
    await asyncio.sleep(1.5)
    used = thread_cpu_s(fragment.thread_id) - before
    assert used <= 0.02, used           # asleep until credit or its end: clock ticks, not polling
    assert gated.gate.computing == 0    # and it holds no place at the gate while paused
    await conn.send("credit", qid=qid, add=32)      # it wakes and goes on
    await conn.wait_for(lambda f: f.t == "rows" and sum(r["n"] for r in conn.of_type("rows", qid=qid)) >= 96)
    await conn.send("cancel", qid=qid)
    end = await conn.next("end", qid=qid, start=0)
    assert end["outcome"] == "cancelled"


def test_a_place_granted_and_lapsed_before_its_thread_woke_is_not_lost():
    """A waiter is granted a place, and the place lapses (held past the lease without a check
    point) before the waiter's thread has woken — on a busy simulator process that takes longer
    than the lease. The waiter was then neither in line nor holding, and waited for good (a
    10,000-edge fan-out: 42 fragment threads of one process in `Place.check_in`, nothing
    computing). Here the lock is held while the grant and the lapse happen, so the waiter cannot
    wake in between."""
    import threading
    import time

    from edge_engine.pacing import ComputeGate

    gate = ComputeGate(1, lease_s=0.05)
    holder, waiter, other = gate.place(), gate.place(), gate.place()
    never = threading.Event()
    holder.check_in(never)
    entered = threading.Event()

    def wait_in_line():
        waiter.check_in(never)
        entered.set()

    thread = threading.Thread(target=wait_in_line, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while gate.queued < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    with gate._lock:
        now = gate.clock()
        gate._charge(holder, now)        # the holder leaves: the waiter is granted its place …
        gate._grant(now)
        assert waiter.held
        gate._enqueue(other)             # … which lapses before the waiter's thread woke
        gate._grant(now + 1.0)
        assert gate.lapsed == 1
        if other.held:                   # (the other one goes away at once)
            gate._charge(other, now + 1.0)
        else:
            gate._unqueue(other)
    assert entered.wait(5), "the waiter was lost: out of the line and not holding a place"
    thread.join(5)


async def test_a_paused_fragment_gives_its_place_back_without_holding_what_the_loop_takes(fed, edge_config,
                                                                                          start_edge, gated):
    """A fragment that runs out of credit gives its place at the gate back, which takes the gate's
    lock — on a busy simulator process, behind dozens of threads. It did that holding its own
    condition, which the event loop takes for every credit and cancel frame: the loop waited
    behind the gate's lock (a soak's stack samples: the simulator's loop blocked in
    `Fragment._decide`, 20–90 s late). Here giving the place back blocks until released; the
    loop must still answer a cancel (its `end` frame) meanwhile."""
    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    qid = await conn.start_query("select stream of x from Real x where x in signal_stream('vibration');",
                                 credit=64, batch_rows=32)
    deadline = time.monotonic() + 10
    while qid not in daemon.fragments.running and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    fragment = daemon.fragments.running[qid]
    blocked, unblock = threading.Event(), threading.Event()
    real_release = fragment._pace.release

    def slow_release() -> None:        # the gate's lock, held by others for a long while
        if not blocked.is_set():
            blocked.set()
            unblock.wait(10)
        real_release()

    fragment._pace.release = slow_release
    try:
        await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, blocked.wait, 10), 15)
        assert blocked.is_set()         # paused: inside the (slow) release
        await conn.send("credit", qid=qid, add=32)
        await conn.send("cancel", qid=qid)
        end = await conn.next("end", qid=qid, start=0, timeout=5)
        assert end["outcome"] == "cancelled"
        assert not unblock.is_set()     # answered while the release still waited: the loop did not
    finally:
        unblock.set()


def test_leaving_without_a_place_takes_no_lock():
    """`pace.idle()` runs at every item a stream hands over; with no place held nor in line it has
    nothing to give back and must not queue on the gate's lock (the soak's busiest: 30–60 threads
    waiting for it in each simulator process)."""
    gate = ComputeGate(1)
    place = gate.place("p")
    with gate._lock:                   # someone else holds the gate's lock
        done = threading.Event()
        threading.Thread(target=lambda: (place.leave(), done.set()), daemon=True).start()
        assert done.wait(5)            # it did not wait for the lock
    place.check_in(threading.Event())  # holding a place, leaving does take the lock and frees it
    assert gate.computing == 1
    place.leave()
    assert gate.computing == 0


async def test_a_stream_waiting_for_input_takes_no_place_at_the_gate_at_its_idle_ticks(
        fed, edge_config, start_edge, gated):
    """A stream with no input ticks (IDLE) ten times a second; each tick used to wait in the gate's
    line for a place it gave back at once, and a new stream's first row waited behind hundreds of
    such ticks in a busy simulator process (bench/README.md, issue 12). Cancel still ends it."""
    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    qid = await conn.start_query("select stream of x from Real x where x in subscribe('nobody_publishes');")
    deadline = time.monotonic() + 10
    while (qid not in daemon.fragments.running or daemon.fragments.running[qid].kind is None) \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    entered = gated.gate.entered
    await asyncio.sleep(1.0)            # about ten idle ticks
    assert gated.gate.entered == entered, gated.gate.entered - entered
    await conn.send("cancel", qid=qid)
    end = await conn.next("end", qid=qid, start=0, timeout=10)
    assert end["outcome"] == "cancelled"

"""Timers: a time window over a live signal closes when its time passes, with no reading after it.

Time windows (`twinagg`) close at an idle tick of their live source once the clock has passed
their end by the largest delay a reading has had from its time stamp to its arrival
(`TimeWindow.on_timer`, called by the operators' shared loop for every `IDLE`). The clock is a
`FakeClock` moved by the test, so nothing here depends on the machine's speed.
"""
from __future__ import annotations

import queue
import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamql
from streamql.batch import IDLE, Batch
from streamql.checkpoint import QueryState, decode, encode
from streamql.clock import FakeClock
from streamql.physical import running, windows
from streamql.physical.stateful import run_logic
from streamql.signals import LiveSignal
from streamql.streams import ExecContext, iter_elements
from streamql.values import Timeval

QUERY = ("select stream of w from Timeval of Vector of Real w "
         "where w in twinagg(ts_signal_stream('s'), 1, 1);")


def started(clock: FakeClock):
    engine = streamql.Engine(clock=clock)
    live = LiveSignal("s", clock=clock, idle_tick=0.01)
    engine.add_signal("s", live)
    rows: queue.Queue = queue.Queue()
    handle = engine.start(QUERY, sink=rows.put)
    deadline = time.monotonic() + 5
    while live.reader_count == 0 and time.monotonic() < deadline:   # readings before it opens are not its
        time.sleep(0.005)
    return live, rows, handle


def settle() -> None:
    """Let the query read what was pushed before the clock moves on (a reading's lag is from its
    stamp to the query reading it; a live query reads within milliseconds)."""
    time.sleep(0.1)


def plain(row) -> tuple:
    value = row[0] if isinstance(row, (tuple, list)) else row
    assert isinstance(value, Timeval), row
    return value.time.seconds, np.asarray(value.value).tolist()


def test_a_time_window_closes_when_its_time_passes_with_no_reading_after_it():
    clock = FakeClock(1000.0)
    live, rows, handle = started(clock)
    try:
        live.push(1.0)                 # stamped 1000.0, read at once
        settle()
        clock.advance(0.3)
        live.push(2.0)                 # 1000.3
        settle()
        clock.advance(0.4)             # 1000.7: the window [1000, 1001) is still open
        time.sleep(0.2)                # many idle ticks
        assert rows.empty()
        clock.advance(0.5)             # 1001.2: its time has passed, no reading came
        assert plain(rows.get(timeout=5)) == (1001.0, [1.0, 2.0])
        live.push(3.0)                 # the next window goes on as before
        settle()
        clock.advance(1.0)
        assert plain(rows.get(timeout=5)) == (1002.0, [3.0])
        assert handle.status == "running"
    finally:
        handle.cancel()


def test_a_frozen_clock_closes_nothing_and_readings_ahead_of_it_close_nothing_early():
    clock = FakeClock(1000.0)
    live, rows, handle = started(clock)
    try:
        live.push(1.0, time=1000.2)
        live.push(2.0, time=1000.9)    # stamped ahead of the clock: the lag is negative
        settle()
        assert rows.empty()            # the clock did not move: no window's time has passed
        clock.advance(0.5)             # 1000.5: still before the end of [1000, 1001) + lag
        time.sleep(0.2)
        assert rows.empty()
        live.push(4.0, time=1000.95)   # not late: the window is still open
        settle()
        clock.advance(1.0)             # 1001.5 > 1001 + the lag (-0.7)
        assert plain(rows.get(timeout=5)) == (1001.0, [1.0, 2.0, 4.0])
    finally:
        handle.cancel()


# ------------------------------------------------------------------------------ stop and restore
class _Crash(BaseException):
    pass


def _ticked(clock: FakeClock, steps: list, stop_at: int | None = None, saved: dict | None = None, ctx=None):
    """Stream items of `steps` ((clock time, item) each), the clock set before each is read."""
    for i, (now, item) in enumerate(steps):
        if i == stop_at:
            saved["bytes"] = encode(ctx.states.snapshot())
            raise _Crash
        clock.advance(now - clock.now())
        yield item


def _elements(items, clock: FakeClock | None = None) -> list:
    """The windows of `items`, each with the clock's time when it came out (with `clock`)."""
    out = []
    for item in items:
        if item is IDLE:
            continue
        at = clock.now() if clock is not None else None
        out.extend((at, e.time.seconds, np.asarray(e.value).tolist()) for e in iter_elements([item]))
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_time_window_closed_by_its_timer_is_the_same_stopped_and_restored(data):
    """Readings arrive up to 0.8 s after their time; idle ticks between them close windows as the
    clock passes. Stopped at any step and restored from the snapshot (the lag included), the rest
    gives what the uninterrupted run gave, each window at the same step."""
    steps, now, t = [], 100.0, 100.0
    for _ in range(data.draw(st.integers(0, 30))):
        now += data.draw(st.sampled_from([0.1, 0.3, 0.7, 1.5]))
        if data.draw(st.booleans()):
            count = data.draw(st.integers(1, 4))
            times = np.sort([now - data.draw(st.sampled_from([0.0, 0.0, 0.3, 0.8])) for _ in range(count)])
            values = np.asarray([data.draw(st.integers(-9, 9)) for _ in range(count)], dtype=np.float64)
            steps.append((now, Batch(values, times)))
        else:
            steps.append((now, IDLE))

    def run(steps_, clock, ctx, **stop):
        return run_logic(_ticked(clock, steps_, ctx=ctx, **stop), windows.TimeWindow(1.0, 0.5, ctx), ctx)

    clock = FakeClock(100.0)
    whole = _elements(run(steps, clock, ExecContext(None, clock=clock)), clock)
    cut = data.draw(st.integers(0, len(steps)))
    clock = FakeClock(100.0)
    ctx = ExecContext(None, clock=clock)
    ctx.states = QueryState()
    saved: dict = {}
    before = []
    try:
        for item in run(steps, clock, ctx, stop_at=cut, saved=saved):
            before.extend(_elements([item], clock))
    except _Crash:
        pass
    after = []
    if "bytes" in saved:
        ctx2 = ExecContext(None, clock=clock)
        ctx2.states = QueryState(restore=decode(saved["bytes"]))
        after = _elements(run(steps[cut:], clock, ctx2), clock)
    assert before + after == whole


def test_idle_ticks_close_windows_that_only_the_end_of_the_stream_closed_before():
    clock = FakeClock(10.0)
    ctx = ExecContext(None, clock=clock)
    steps = [(10.0, Batch(np.array([1.0, 2.0]), np.array([9.5, 9.9]))), (10.5, IDLE), (11.2, IDLE)]
    got = []
    for item in run_logic(_ticked(clock, steps), windows.TimeWindow(1.0, 1.0, ctx), ctx):
        got.extend(_elements([item], clock))
    # emitted at the tick of 10.5 (the end 10.0 plus the lag, 10.0 - 9.5, had passed), not at the end
    assert got == [(10.5, 10.0, [1.0, 2.0])]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_timeout_restored_has_the_time_it_had_left(data):
    """timeout(s, 3): elements until 3 s of the query's clock have passed (idle ticks end it too).
    Stopped at any step and restored after a downtime of 100 s (the clock jumps), the rest gives
    what the uninterrupted run gave: the downtime does not count."""
    steps, now = [], 50.0
    for _ in range(data.draw(st.integers(0, 25))):
        # steps of binary fractions: times (and times shifted by the downtime) are exact, so a reading
        # due exactly at the timeout is on the same side of it before and after a restore
        now += data.draw(st.sampled_from([0.125, 0.5, 1.0]))
        steps.append((now, IDLE if data.draw(st.booleans()) else float(data.draw(st.integers(0, 9)))))

    def run(steps_, clock, ctx, **stop):
        return run_logic(_ticked(clock, steps_, ctx=ctx, **stop), running.Timeout(3.0, ctx.clock), ctx)

    clock = FakeClock(50.0)
    whole = [x for x in run(steps, clock, ExecContext(None, clock=clock)) if x is not IDLE]
    cut = data.draw(st.integers(0, len(steps)))
    clock = FakeClock(50.0)
    ctx = ExecContext(None, clock=clock)
    ctx.states = QueryState()
    saved: dict = {}
    before = []
    try:
        for x in run(steps, clock, ctx, stop_at=cut, saved=saved):
            if x is not IDLE:
                before.append(x)
    except _Crash:
        pass
    after = []
    if "bytes" in saved:
        later = FakeClock(clock.now() + 100.0)   # restarted after 100 s down
        ctx2 = ExecContext(None, clock=later)
        ctx2.states = QueryState(restore=decode(saved["bytes"]))
        shifted = [(t + 100.0, item) for t, item in steps[cut:]]
        after = [x for x in run(shifted, later, ctx2) if x is not IDLE]
    assert before + after == whole


def test_a_replay_of_recorded_times_restored_after_a_downtime_closes_no_window_ahead_of_it():
    """Recorded times, replayed at their pace (arriving 1000 s after their stamps), stopped, and
    restored 100 s later: the replay starts again where it was, now 1100 s behind the clock. The
    timer must not close windows the replay has not reached (they would lose their events)."""
    times = [0.2 * i for i in range(40)]   # 8 s of readings

    def steps(start: float, first: int, lag: float):
        out = []
        for i in range(first, len(times)):
            out.append((times[i] + lag, Batch(np.array([float(i)]), np.array([times[i]]))))
            out.append((times[i] + lag + 0.1, IDLE))
        return out

    clock = FakeClock(1000.0)
    ctx = ExecContext(None, clock=clock)
    whole = [e[1:] for e in _elements(run_logic(_ticked(clock, steps(1000.0, 0, 1000.0)),
                                                windows.TimeWindow(1.0, 1.0, ctx), ctx))]
    clock = FakeClock(1000.0)
    ctx = ExecContext(None, clock=clock)
    ctx.states = QueryState()
    saved: dict = {}
    cut = 2 * 17   # at reading 17 (3.4 s)
    before = []
    try:
        for item in run_logic(_ticked(clock, steps(1000.0, 0, 1000.0), stop_at=cut, saved=saved, ctx=ctx),
                              windows.TimeWindow(1.0, 1.0, ctx), ctx):
            before.extend(e[1:] for e in _elements([item]))
    except _Crash:
        pass
    later = FakeClock(clock.now() + 100.0)
    ctx2 = ExecContext(None, clock=later)
    ctx2.states = QueryState(restore=decode(saved["bytes"]))
    resumed = [(later.now() + 0.05, IDLE)] + steps(0, 17, later.now() + 0.1 - times[17])
    after = [e[1:] for e in _elements(run_logic(_ticked(later, resumed), windows.TimeWindow(1.0, 1.0, ctx2), ctx2))]
    assert before + after == whole

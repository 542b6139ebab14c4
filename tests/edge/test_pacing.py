"""Long fragments take turns on an edge's CPU; short ones never wait (edge_engine/pacing.py)."""
from __future__ import annotations

import threading
import time

from edge_engine.pacing import Pacer
from streamql.errors import QueryCancelled

from concurrency_probe import InsideCounter, spin


def test_long_computations_take_turns_and_all_progress():
    pacer = Pacer(turns=1, long_after_s=0.02, slice_s=0.01)
    counter = InsideCounter()
    chunks = [0, 0, 0]
    stop = threading.Event()

    def long_work(i: int) -> None:
        pace = pacer.pace_for(threading.Event())
        try:
            while not stop.is_set():
                pace()
                if pacer.long_total < 3:    # not yet all long: nothing to measure
                    spin(0.002)
                    continue
                with counter.inside():
                    spin(0.002)
                chunks[i] += 1
        finally:
            pace.release()

    threads = [threading.Thread(target=long_work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(5)
    # a turn lasts a slice and is given up only at a check point: at most one inside at once
    assert counter.most == 1, counter.most
    assert all(c > 0 for c in chunks), chunks    # round robin: none starves


def test_a_short_fragment_never_waits_for_the_long_ones():
    pacer = Pacer(turns=1, long_after_s=0.02, slice_s=0.2)
    stop = threading.Event()

    def long_work() -> None:
        pace = pacer.pace_for(threading.Event())
        try:
            while not stop.is_set():
                pace()
                spin(0.001)
        finally:
            pace.release()

    threads = [threading.Thread(target=long_work) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 5
        while pacer.waiting < 2 and time.monotonic() < deadline:   # the long ones queue for the turn
            time.sleep(0.01)
        assert pacer.waiting >= 2
        pace = pacer.pace_for(threading.Event())
        worst = 0.0
        for _ in range(20):       # a short fragment: well under long_after_s of CPU
            started = time.monotonic()
            pace()
            worst = max(worst, time.monotonic() - started)
        assert worst < 0.05, worst    # never queued behind a 0.2 s turn
    finally:
        stop.set()
        for t in threads:
            t.join(5)


def test_a_cancel_ends_the_wait_for_a_turn():
    pacer = Pacer(turns=1, long_after_s=0.0, slice_s=10.0)
    holder = pacer.pace_for(threading.Event())
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:              # holds the only turn for 10 s (in a thread: it is niced)
        holder()
        holding.set()
        done.wait(10)
        holder.release()

    holder_thread = threading.Thread(target=hold)
    holder_thread.start()
    assert holding.wait(5)
    cancelled = threading.Event()
    waiter = pacer.pace_for(cancelled)
    outcome = {}

    def wait() -> None:
        started = time.monotonic()
        try:
            waiter()
        except QueryCancelled:
            outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)
    cancelled.set()
    thread.join(5)
    done.set()
    holder_thread.join(5)
    assert 0.2 < outcome["seconds"] < 1.5, outcome


def test_a_long_fragments_thread_runs_at_the_lowest_priority_and_only_it():
    import os
    pacer = Pacer(turns=1, long_after_s=0.01, slice_s=0.01)
    seen = {}

    def work() -> None:
        pace = pacer.pace_for(threading.Event())
        pace()
        seen["before"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        spin(0.02)
        pace()
        seen["after"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        pace.release()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(5)
    assert seen == {"before": os.getpriority(os.PRIO_PROCESS, 0), "after": 19}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) != 19   # this thread untouched


def test_a_share_keeps_the_long_fragments_to_that_part_of_the_time():
    pacer = Pacer(turns=1, long_after_s=0.0, slice_s=0.02, share=0.25)
    stop = threading.Event()
    used = {}

    def long_work() -> None:
        pace = pacer.pace_for(threading.Event())
        started_cpu, started = time.thread_time(), time.monotonic()
        try:
            while not stop.is_set():
                pace()
                spin(0.002)
        finally:
            pace.release()
            used["cpu"], used["wall"] = time.thread_time() - started_cpu, time.monotonic() - started

    thread = threading.Thread(target=long_work)
    thread.start()
    time.sleep(1.5)
    stop.set()
    thread.join(5)
    # a quarter of the time computing (rests of 3 slices after each); generous bounds on a busy box
    assert used["cpu"] < 0.5 * used["wall"], used
    assert used["cpu"] > 0.02, used


def test_a_cancel_ends_a_rest_at_once():
    pacer = Pacer(turns=1, long_after_s=0.0, slice_s=0.01, share=0.001)   # rests of about a second
    cancelled = threading.Event()
    pace = pacer.pace_for(cancelled)
    outcome = {}

    def work() -> None:
        started = time.monotonic()
        try:
            for _ in range(100):
                pace()
                spin(0.02)
        except QueryCancelled:
            outcome["seconds"] = time.monotonic() - started
        finally:
            pace.release()

    thread = threading.Thread(target=work)
    thread.start()
    time.sleep(0.2)
    cancelled.set()
    thread.join(5)
    assert outcome and outcome["seconds"] < 1.0, outcome
    assert pacer._turns.acquire(timeout=1)     # the turn was given back

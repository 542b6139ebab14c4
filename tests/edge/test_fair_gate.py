"""The compute gate is fair between principals (edge_engine/pacing.py `ComputeGate`): a line per
principal, FIFO within it, the next place to the principal that has held places the least.
Admissions are counted, not timed."""
from __future__ import annotations

import threading

from edge_engine.pacing import USED_KEYS_KEPT, ComputeGate

from concurrency_probe import wait_until


class StepClock:
    """The gate's clock, moved by the test only: each admitted thread holds exactly `step`."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        return self.now


def queue_in_order(gate: ComputeGate, waiters: list[tuple[str, int]], admitted: list, clock=None):
    """One thread per (principal, index), queued at the gate one after the other in this order;
    each, once admitted, notes itself and leaves (after one step of the test's `clock`, if any)."""
    threads = []
    for key, index in waiters:
        place = gate.place(key)

        def wait(place=place, key=key, index=index) -> None:
            place.check_in(threading.Event())
            admitted.append((key, index))
            if clock is not None:
                clock.now += clock.step      # one admitted at a time (one place): no race
            place.leave()
        queued = gate.queued
        thread = threading.Thread(target=wait)
        thread.start()
        threads.append(thread)
        assert wait_until(lambda: gate.queued == queued + 1)
    return threads


def test_a_lone_principal_gets_a_place_after_about_one_turn_not_the_whole_line():
    clock = StepClock(0.002)
    gate = ComputeGate(1, lease_s=60, clock=clock)
    holder = gate.place("hog")
    holder.check_in(threading.Event())
    admitted: list[tuple[str, int]] = []
    waiters = [("hog", i) for i in range(10)] + [("lone", 0)]
    threads = queue_in_order(gate, waiters, admitted, clock=clock)
    assert gate.queued == 11 and gate.keys_waiting == 2
    clock.now += clock.step      # the hog's holder computed: it is charged for it when it leaves
    holder.leave()
    for thread in threads:
        thread.join(10)
    assert len(admitted) == 11
    # first come, first served would admit it 11th, after every one of the hog's
    assert admitted.index(("lone", 0)) <= 1, admitted
    # FIFO within a principal
    assert [i for key, i in admitted if key == "hog"] == list(range(10))
    assert gate.computing == 0 and gate.queued == 0 and gate.keys_waiting == 0


def test_two_busy_principals_take_turns_whatever_order_they_queued_in():
    clock = StepClock(0.003)
    gate = ComputeGate(1, lease_s=60, clock=clock)
    holder = gate.place("a")
    holder.check_in(threading.Event())
    admitted: list[tuple[str, int]] = []
    waiters = [("a", i) for i in range(8)] + [("b", i) for i in range(8)]    # all of a's first
    threads = queue_in_order(gate, waiters, admitted, clock=clock)
    clock.now += clock.step
    holder.leave()
    for thread in threads:
        thread.join(10)
    assert len(admitted) == 16
    # each admission holds its place as long: neither principal gets two turns ahead of the other
    # (FIFO would admit all eight of a's first)
    lead = 0
    for key, _ in admitted[:14]:
        lead += 1 if key == "a" else -1
        assert abs(lead) <= 2, admitted
    for principal in "ab":
        assert [i for key, i in admitted if key == principal] == list(range(8))


def test_a_principal_that_computed_longer_waits_behind_one_that_computed_less():
    clock = StepClock(0.0)
    gate = ComputeGate(1, lease_s=60, clock=clock)
    for key, seconds in (("heavy", 0.05), ("light", 0.005)):   # one turn each, of different lengths
        place = gate.place(key)
        place.check_in(threading.Event())
        clock.now += seconds
        place.leave()
    holder = gate.place("other")
    holder.check_in(threading.Event())
    admitted: list[tuple[str, int]] = []
    threads = queue_in_order(gate, [("heavy", 0), ("light", 0)], admitted)   # heavy first in time
    holder.leave()
    for thread in threads:
        thread.join(10)
    assert admitted == [("light", 0), ("heavy", 0)]


def test_a_principal_back_after_a_pause_goes_through_a_burst_up_to_its_wake_credit():
    clock = StepClock(0.01)
    gate = ComputeGate(1, lease_s=60, clock=clock, wake_credit_s=0.03)
    holder = gate.place("busy")
    holder.check_in(threading.Event())
    admitted: list[tuple[str, int]] = []
    waiters = [("busy", i) for i in range(6)] + [("burst", i) for i in range(6)]
    threads = queue_in_order(gate, waiters, admitted, clock=clock)
    clock.now += 0.025           # the busy one computed 0.025 s since its line formed
    holder.leave()
    for thread in threads:
        thread.join(10)
    # both lines formed 0.03 s behind the virtual time; the busy one used 0.025 s of it since: at
    # 0.01 s an admission the burst's first three go first (not all six: the credit is bounded),
    # then they take turns
    assert admitted[:4] == [("burst", 0), ("burst", 1), ("burst", 2), ("busy", 0)], admitted
    assert [i for key, i in admitted if key == "burst"] == list(range(6))


def test_a_cancelled_waiter_leaves_its_principals_line_and_the_rest_keep_their_order():
    gate = ComputeGate(1, lease_s=60)
    holder = gate.place("hog")
    holder.check_in(threading.Event())
    cancelled = threading.Event()
    victim = gate.place("hog")
    raised: list[BaseException] = []

    def wait_cancelled() -> None:
        try:
            victim.check_in(cancelled)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            raised.append(exc)
    admitted: list[tuple[str, int]] = []
    threads = queue_in_order(gate, [("hog", 0)], admitted)
    t = threading.Thread(target=wait_cancelled)
    t.start()
    assert wait_until(lambda: gate.queued == 2)
    threads += queue_in_order(gate, [("hog", 2)], admitted)
    cancelled.set()
    victim.interrupt()
    t.join(5)
    assert not t.is_alive() and len(raised) == 1 and type(raised[0]).__name__ == "QueryCancelled"
    assert gate.queued == 2
    holder.leave()
    for thread in threads:
        thread.join(10)
    assert admitted == [("hog", 0), ("hog", 2)]
    assert gate.queued == 0 and gate.keys_waiting == 0


def test_a_lapsed_place_is_charged_and_the_gate_reopens():
    gate = ComputeGate(1, lease_s=0.05)
    blocked = gate.place("sleeper")
    blocked.check_in(threading.Event())      # then blocks inside a source without a check point
    admitted: list[tuple[str, int]] = []
    threads = queue_in_order(gate, [("other", 0)], admitted)
    for thread in threads:
        thread.join(10)
    assert admitted == [("other", 0)] and gate.lapsed == 1 and not blocked.held
    assert gate._used["sleeper"] >= 0.05     # the time it sat on its place counts against it


def test_the_table_of_principals_stays_bounded():
    gate = ComputeGate(2)
    keep = gate.place("always")
    keep.check_in(threading.Event())
    for i in range(3 * USED_KEYS_KEPT):      # a principal per client, each computing once
        place = gate.place(f"client-{i}")
        place.check_in(threading.Event())
        place.leave()
    assert len(gate._used) <= USED_KEYS_KEPT + 2
    keep.leave()

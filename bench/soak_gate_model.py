"""How many admissions a newcomer waits at the edge's compute gate, by policy — the gate's own
code (edge_engine/pacing.py `ComputeGate`) driven in one thread on a step clock: no timing, no
threads, a second to run. Busy principals keep `each` fragments in line (streams: back in line
after every turn); a newcomer brings `n` fragments at once (a fleet query over every edge of a
simulator process, or one device's fragment).

    PYTHONPATH=. python bench/soak_gate_model.py
"""
from __future__ import annotations

from edge_engine.pacing import ComputeGate, Place


def admissions_until_served(busy: int, each: int, busy_cost: float, n: int, cost: float, *,
                            credit: float = 0.0, fifo: bool = False, warmup: int = 2000) -> int:
    """Admissions (one place) until the newcomer's last fragment got its place."""
    now = [0.0]
    gate = ComputeGate(1, clock=lambda: now[0], wake_credit_s=credit)
    costs: dict[Place, float] = {}

    def enqueue(place: Place, seconds: float) -> None:
        costs[place] = seconds
        gate._enqueue(place)

    def next_place() -> Place:
        if not fifo:
            return gate._next()
        key = min(gate._lines, key=lambda k: gate._lines[k][0].seq)    # first come, first served
        line = gate._lines[key]
        place = line.popleft()
        gate._queued -= 1
        if not line:
            del gate._lines[key]
        return place

    def turn() -> Place:
        place = next_place()
        gate._holders[place] = place.since = now[0]
        place.held = True
        now[0] += costs[place]
        gate._charge(place, now[0])
        return place

    for p in range(busy):
        for _ in range(each):
            enqueue(Place(gate, f"busy-{p}"), busy_cost)
    for _ in range(warmup):                  # the busy ones take turns a while: the virtual time moves
        place = turn()
        enqueue(place, busy_cost)
    mine = set()
    for _ in range(n):
        place = Place(gate, "newcomer")
        enqueue(place, cost)
        mine.add(place)
    count = 0
    while mine:
        place = turn()
        count += 1
        if place in mine:
            mine.discard(place)
        else:
            enqueue(place, busy_cost)
    return count


def main() -> None:
    cases = [("30 busy × 10 waiting, a newcomer with 1 fragment", (30, 10, 0.01, 1, 0.005)),
             ("30 busy × 10 waiting, a newcomer with 25 fragments", (30, 10, 0.01, 25, 0.005)),
             ("10 busy × 10 waiting, a newcomer with 25 fragments", (10, 10, 0.01, 25, 0.005)),
             ("3 busy × 100 waiting, a newcomer with 25 fragments", (3, 100, 0.01, 25, 0.005))]
    print(f"{'case (turns: busy 10 ms, newcomer 5 ms)':52} {'FIFO':>6} {'fair':>6} {'fair + 0.2 s credit':>20}")
    for name, args in cases:
        print(f"{name:52} {admissions_until_served(*args, fifo=True):>6} {admissions_until_served(*args):>6} "
              f"{admissions_until_served(*args, credit=0.2):>20}")


if __name__ == "__main__":
    main()

"""What a simulated edge's fragments cost: K simulated edges in one process, fragments driven as
the federation drives them, no network (a minute; issue 12's soak is bound by this cost).

    PYTHONPATH=. python bench/bench_fragments.py [--edges 25] [--streams 4] [--unread 8]
        [--oneshots 2] [--seconds 15]

Edges are built as `streamql edge --simulate` builds them (edge_engine/simulate.py: the fleet's
identities, on-demand simulated signals, one signal pump, an engine per edge) and each gets a
`FragmentSet` whose frames go to an in-process consumer instead of a socket. Phases, each for
`--seconds`:

- **read**: `--streams` standing streams per edge (half `engine_speed`, half `vibration`), read
  as the federation's hub reads them (credit granted again each time half was consumed);
- **unread**: `--unread` standing streams per edge that nobody reads (512 rows of credit, never
  more: what an abandoned client's stream leaves on every edge), after their credit is used up;
- **one-shot**: every edge answers `--oneshots` statements a second (`signal_value('battery')`,
  the grouped aggregate's fragment), each a new fragment: per-fragment latency and cost;
- **cancel**: M unread streams per edge cancelled at once: how long until every thread is gone.

Figures: CPU seconds of the process per wall second (100 % = one core), the same per fragment,
threads, latency. Compare before/after a change in the same shape and load (`uptime` is printed).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time

from common import machine  # noqa: F401  (puts the repository on sys.path)

from edge_engine.fragments import FragmentSet
from edge_engine.sim_signals import SignalPump, on_demand
from edge_engine.signals import build_drivers
from edge_engine.simulate import fleet_identities
from streamql import wire
from streamql.streams import Limits

STREAM_TEXT = "select stream of x from Real x where x in signal_stream('{}');"
ONESHOTS = ("select signal_value('battery');", "select signal_value('battery'), signal_value('engine_speed');")
STREAM_CREDIT = 512


class Edge:
    """One simulated edge's engine and fragments, its frames consumed here."""

    def __init__(self, identity, pump: SignalPump, loop, store: str):
        import streamql
        drivers = on_demand(build_drivers(identity.signals), pump)
        self.engine = streamql.Engine(seed=identity.seed, name=identity.id, files=None)
        for name, live in drivers.signals.items():
            self.engine.add_signal(name, live, type=live.type_name or None)
        self.id = identity.id
        self.rows: dict[str, int] = {}
        self.ends: dict[str, asyncio.Future] = {}
        self.read: set[str] = set()
        self.fragments = FragmentSet(loop, send_frame=self._frame, send_bytes=self._bytes, engine=lambda: self.engine,
                                     default_limits=Limits(None, None, 256), max_running=10_000,
                                     max_per_principal=10_000)
        self.loop = loop

    async def _frame(self, frame: wire.Frame) -> None:
        if frame.t == "end":
            future = self.ends.get(frame["qid"])
            if future is not None and not future.done():
                future.set_result(frame.fields)

    async def _bytes(self, data: bytes) -> None:
        frame = wire.decode(data)
        qid = frame["qid"]
        if frame.t == "end":
            return await self._frame(frame)
        self.rows[qid] = self.rows.get(qid, 0) + frame["n"]
        if qid in self.read and self.rows[qid] >= STREAM_CREDIT // 2:   # the hub grants again at half
            self.fragments.credit(qid, self.rows[qid])
            self.rows[qid] = 0

    def start(self, qid: str, text: str, *, read: bool, credit: int = STREAM_CREDIT) -> asyncio.Future:
        if read:
            self.read.add(qid)
        self.ends[qid] = self.loop.create_future()
        self.fragments.start({"qid": qid, "source": text, "credit": credit, "limits": {}})
        return self.ends[qid]


def cpu_now() -> float:
    t = os.times()
    return t.user + t.system


def threads_now() -> int:
    """Every thread of the process (fragments start bare threads, which `threading` does not count)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return threading.active_count()


async def measure(seconds: float) -> dict:
    cpu0, wall0 = cpu_now(), time.monotonic()
    threads = []
    while time.monotonic() - wall0 < seconds:
        threads.append(threads_now())
        await asyncio.sleep(0.25)
    cpu, wall = cpu_now() - cpu0, time.monotonic() - wall0
    return {"cpu_pct": 100 * cpu / wall, "threads_max": max(threads), "wall": wall, "cpu": cpu}


async def main(args) -> None:
    loop = asyncio.get_running_loop()
    pump = SignalPump()
    pump.start()
    store = tempfile.mkdtemp(prefix="bench-fragments-")
    edges = [Edge(identity, pump, loop, store) for identity in fleet_identities(args.edges, 1)]
    from streamql.syntax import parse
    parse("select 1;")
    print(f"{args.edges} simulated edges in one process; {machine()}; {os.getloadavg()[0]:.2f} load before")
    report = {}

    idle = await measure(min(5.0, args.seconds))
    report["idle"] = idle
    print(f"idle:      CPU {idle['cpu_pct']:5.1f} %  threads {idle['threads_max']}")

    # -- read streams
    n = 0
    qids = []
    for edge in edges:
        for i in range(args.streams):
            n += 1
            qid = f"r{n}"
            edge.start(qid, STREAM_TEXT.format(("engine_speed", "vibration")[i % 2]), read=True)
            qids.append((edge, qid))
    await asyncio.sleep(2.0)
    read = await measure(args.seconds)
    fragments = len(qids)
    print(f"read:      CPU {read['cpu_pct']:5.1f} %  threads {read['threads_max']}  {fragments} streams, "
          f"{1000 * read['cpu'] / read['wall'] / max(1, fragments):.2f} ms CPU per stream-second")
    report["read"] = read
    for edge, qid in qids:
        edge.fragments.cancel(qid)
    await asyncio.sleep(1.0)

    # -- unread streams, credit used up
    qids = []
    for edge in edges:
        for i in range(args.unread):
            n += 1
            qid = f"u{n}"
            edge.start(qid, STREAM_TEXT.format(("engine_speed", "vibration")[i % 2]), read=False)
            qids.append((edge, qid))
    await asyncio.sleep(7.0)          # vibration: 512 rows at 100 Hz; engine_speed keeps its credit longer
    unread = await measure(args.seconds)
    paused = sum(edge.fragments.paused() for edge in edges)
    print(f"unread:    CPU {unread['cpu_pct']:5.1f} %  threads {unread['threads_max']}  {len(qids)} streams "
          f"({paused} paused), {1000 * unread['cpu'] / unread['wall'] / max(1, len(qids)):.2f} ms CPU per "
          "stream-second")
    report["unread"] = unread

    # -- cancel them all at once
    started = time.monotonic()
    before = threads_now()
    for edge, qid in qids:
        edge.fragments.cancel(qid)
    while threads_now() > idle["threads_max"] and time.monotonic() - started < 30:
        await asyncio.sleep(0.01)
    gone = time.monotonic() - started
    print(f"cancel:    {len(qids)} unread streams cancelled; threads {before} → {threads_now()} in {gone:.2f} s")
    report["cancel_s"] = gone

    # -- one-shots
    latencies = []
    stop_at = time.monotonic() + args.seconds
    cpu0, wall0 = cpu_now(), time.monotonic()
    count = 0
    threads = []

    async def one(edge: Edge, text: str) -> None:
        nonlocal n, count
        n += 1
        begun = time.monotonic()
        end = await edge.start(f"o{n}", text, read=True, credit=10_000)
        latencies.append(time.monotonic() - begun)
        if end["outcome"] != "ok":
            print("one-shot failed:", end)
        count += 1

    pending = set()
    k = 0
    while time.monotonic() < stop_at:
        for edge in edges:
            for _ in range(args.oneshots):
                pending.add(asyncio.ensure_future(one(edge, ONESHOTS[k % 2])))
                k += 1
        threads.append(threads_now())
        await asyncio.sleep(1.0)
        pending = {p for p in pending if not p.done()}
    await asyncio.gather(*pending)
    cpu, wall = cpu_now() - cpu0, time.monotonic() - wall0
    latencies.sort()
    print(f"one-shot:  CPU {100 * cpu / wall:5.1f} %  threads {max(threads)}  {count} fragments, "
          f"{1000 * cpu / max(1, count):.2f} ms CPU each; latency p50 {1000 * statistics.median(latencies):.1f} ms, "
          f"p99 {1000 * latencies[int(0.99 * (len(latencies) - 1))]:.1f} ms")
    await pump.stop()
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=25)
    parser.add_argument("--streams", type=int, default=4, help="read standing streams per edge")
    parser.add_argument("--unread", type=int, default=8, help="unread standing streams per edge")
    parser.add_argument("--oneshots", type=int, default=2, help="one-shot fragments per edge and second")
    parser.add_argument("--seconds", type=float, default=15.0)
    asyncio.run(main(parser.parse_args()))

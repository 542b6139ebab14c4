"""The signals of a simulated fleet, computed when read (`streamql edge --simulate N`).

A simulated signal is a pure function of (parameters, seed, time) (edge_engine.simulation), so a
fleet of thousands of edges need not push every reading of every signal to have them: an
`OnDemandSignal` answers `signal_value` (`latest()`) by computing the grid reading at or just
before now, once per grid step, and only a signal someone streams (`signal_stream`, a window)
has its driver polled, from the moment the reader opened until it closed. An idle simulated edge
costs no CPU for its signals at all; the pump's work is proportional to the signals being read.
"""
from __future__ import annotations

import asyncio
import logging
import math

from streamql.clock import SYSTEM_CLOCK, Clock
from streamql.signals import LiveSignal

from .drivers import SimulatedDriver
from .signals import DriverSet

__all__ = ["OnDemandSignal", "SignalPump", "on_demand"]

log = logging.getLogger("streamql.edge.simulate")


IDLE_TICK_S = 0.5
"""How long a reader of a simulated signal waits for readings before its query is told it is idle.
Readings come in batches (every 0.25 s for the fast signals), and a reader of a live signal wakes
at each batch and after each idle tick: at the default 0.1 s a reader woke three times per batch,
most of them to find nothing — on a process simulating dozens of edges with thousands of standing
streams, most of its CPU. A fragment's end is sent at once whatever the tick; its thread leaves
within a tick."""

LINGER_S = 1.0
"""A reader of a simulated signal takes what has arrived at most every LINGER_S (LiveSignal.linger):
a standing stream's fragment wakes, runs its operators and sends a `rows` frame once a second
rather than at every batch of the signal (four times a second) — a quarter of the wake-ups, of the
frames on the link and of the federation's work per fragment, for a second more latency at most
(the first readings go at once). A cancel still wakes it at once (the sleep is on its query's
clock). bench/bench_fragments.py, 200 streams on 25 edges: 0.50 ms of CPU per stream-second
without, 0.31 with."""


class OnDemandSignal(LiveSignal):
    """A LiveSignal whose latest reading is computed from its model when asked (see the module
    docstring); opening a reader asks the pump to push readings to it."""

    def __init__(self, driver: SimulatedDriver, pump: "SignalPump", clock: Clock = SYSTEM_CLOCK):
        super().__init__(driver.name, type_name=driver.signal.type_name, clock=clock, idle_tick=IDLE_TICK_S,
                         linger=LINGER_S)
        self.driver, self.pump = driver, pump
        self._cached_k: int | None = None      # grid index of the cached latest reading
        self._cached: float | None = None

    def _grid(self) -> int:
        return math.floor(self.clock.now() * self.driver.rate_hz)

    def latest(self):
        k = self._grid()
        if k != self._cached_k:
            t = k / self.driver.rate_hz
            self._cached = self.driver.model.value_at(t)
            self._cached_k = k
        return self._cached

    def latest_time(self) -> float | None:
        return self._grid() / self.driver.rate_hz

    def open(self, clock: Clock | None = None):
        reader = super().open(clock)
        self.pump.activate(self.driver, self.clock.now())   # from any thread: fragments run in threads
        return reader


def on_demand(drivers: DriverSet, pump: "SignalPump", clock: Clock = SYSTEM_CLOCK) -> DriverSet:
    """Give every simulated driver of `drivers` an OnDemandSignal (before an engine sees them)."""
    for driver in drivers.drivers:
        if isinstance(driver, SimulatedDriver):
            driver.signal = OnDemandSignal(driver, pump, clock)
            drivers.signals[driver.name] = driver.signal
    return drivers


class SignalPump:
    """One task polling the simulated drivers that someone reads (instead of a task per signal).

    A driver joins when a reader opens its signal (`activate`, thread-safe) and leaves once its
    last reader closed; while active it is polled when due (`next_due()`: the next reading of a
    slow signal, one batch interval later for a fast one), from the grid reading at or just
    before the moment the reader opened.
    """

    def __init__(self, clock: Clock = SYSTEM_CLOCK, interval_s: float = 0.05):
        self.clock = clock
        self.interval_s = interval_s
        self._active: dict[int, SimulatedDriver] = {}
        self._due: dict[int, float] = {}               # id(driver) → clock time of its next poll
        self._joining: list[tuple[SimulatedDriver, float]] = []
        self._task: asyncio.Task | None = None
        self.failures = 0

    @property
    def active(self) -> int:
        return len(self._active)

    def activate(self, driver: SimulatedDriver, opened_at: float) -> None:
        self._joining.append((driver, opened_at))      # list.append is atomic: any thread may call

    def poll(self) -> int:
        now = self.clock.now()
        while self._joining:
            driver, opened_at = self._joining.pop()
            key = id(driver)
            if key not in self._active:
                # readings from the one at or before the reader opened; none from before (unread)
                driver._next_k = max(driver._next_k, math.floor(opened_at * driver.rate_hz))
                self._active[key] = driver
                self._due[key] = now
        pushed = 0
        for key, driver in list(self._active.items()):
            if driver.signal.reader_count == 0:
                del self._active[key]
                self._due.pop(key, None)
                continue
            if self._due.get(key, now) > now:
                continue
            try:
                pushed += driver.poll(now)
                self._due[key] = driver.next_due()
            except Exception:  # noqa: BLE001 - one broken driver must not stop the others
                self._due[key] = now + 1.0
                self.failures += 1
                if self.failures <= 10:
                    log.exception("signal %s failed", driver.name)
        return pushed

    async def run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="signal pump")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

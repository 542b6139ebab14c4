"""Signal drivers that read on a schedule: simulated sensors, CSV replay, polled callables.

Each feeds one `streamql.signals.LiveSignal` (edge_engine.signals describes the kinds; UDP input
and the set of drivers a daemon runs are there). A CSV replay can start at a row: a restarted
edge resumes there what a checkpointed autostart query had read (docs/checkpoints.md).
"""
from __future__ import annotations

import asyncio
import csv
import inspect
import itertools
import logging
import math
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from streamql.batch import Batch
from streamql.clock import SYSTEM_CLOCK, Clock
from streamql.signals import LiveSignal
from streamql.values import Time

from .simulation import SignalSpecError, SimModel, _check_number

__all__ = ["Driver", "SimulatedDriver", "CsvReplayDriver", "CallableDriver", "MAX_TICK", "MAX_CATCH_UP"]

log = logging.getLogger("streamql.edge.signals")

MAX_TICK = 0.1          # the longest a driver sleeps, so stop() is noticed quickly
MAX_CATCH_UP = 1_000_000  # readings one poll delivers at most after a stall (the rest are skipped)


# == drivers ===================================================================================
class Driver:
    """Feeds one LiveSignal; `poll` does one step, `start`/`stop` run it as an asyncio task."""

    kind = "driver"

    def __init__(self, name: str, signal: LiveSignal | None = None, clock: Clock = SYSTEM_CLOCK,
                 type_name: str | None = "Real"):
        self.name = name
        self.clock = clock
        self.signal = signal if signal is not None else LiveSignal(name, type_name=type_name, clock=clock)
        self.pushed = 0
        self.skipped = 0
        self._stop = threading.Event()
        self._task: asyncio.Task | None = None

    def poll(self, now: float | None = None) -> int:
        """Push everything due by `now` (default: the clock's now); how many readings were pushed."""
        raise NotImplementedError

    def next_due(self) -> float | None:
        """Clock time of the next reading, or None when unknown (then the driver ticks)."""
        return None

    @property
    def finished(self) -> bool:
        return False

    def describe(self) -> dict:
        return {"name": self.name, "type": self.signal.type_name, "kind": self.kind}

    async def run(self) -> None:
        while not self._stop.is_set() and not self.finished:
            try:
                self.poll()
            except Exception:  # a broken sensor must not take the daemon down
                log.exception("signal %s: driver failed; retrying", self.name)
                await asyncio.sleep(1.0)
            due = self.next_due()
            delay = MAX_TICK if due is None else min(MAX_TICK, max(0.0, due - self.clock.now()))
            await asyncio.sleep(delay)

    async def start(self) -> "Driver":
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"signal:{self.name}")
        return self

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def _push(self, times: np.ndarray, values) -> int:
        n = len(times)
        if n == 0:
            return 0
        if n == 1:
            value = values[0]
            self.signal.push(value.item() if isinstance(value, np.generic) else value, float(times[0]))
        else:
            self.signal.push_batch(values, times)
        self.pushed += n
        return n


UNREAD_INTERVAL_S = 1.0


class SimulatedDriver(Driver):
    """Samples a `SimModel` on its grid `k / rate_hz` as time passes; batches when fast. With
    `lazy_when_unread` (set by a simulated fleet, `streamql edge --simulate N`), while no query
    reads a fast signal it is sampled once every UNREAD_INTERVAL_S, for its latest reading only
    (what `signal_value` reads): a hundred simulated edges in one process spend nothing on
    readings nobody reads. A reader opening gets its first readings within that second."""

    kind = "simulated"
    lazy_when_unread = False
    waiting_unread = False     # its next poll was put off because nobody read it

    def __init__(self, name: str, model: SimModel, *, clock: Clock = SYSTEM_CLOCK,
                 signal: LiveSignal | None = None, batch_interval_s: float = 0.05, start_time: float | None = None):
        super().__init__(name, signal, clock)
        self.model = model
        self.rate_hz = model.rate_hz
        self.batch_interval_s = batch_interval_s
        start = clock.now() if start_time is None else start_time
        # the grid point at or just before start: the first poll, as the driver starts (before the
        # edge connects), gives the signal its current value, so no statement sees it empty
        self._next_k = math.floor(start * self.rate_hz)

    def poll(self, now: float | None = None) -> int:
        now = self.clock.now() if now is None else now
        last_k = math.floor(now * self.rate_hz)
        if last_k < self._next_k:
            return 0
        if last_k - self._next_k + 1 > MAX_CATCH_UP:  # after a long stall: skip ahead, count it
            self.skipped += last_k - self._next_k + 1 - MAX_CATCH_UP
            self._next_k = last_k + 1 - MAX_CATCH_UP
        if last_k > self._next_k and not self._read():
            self._next_k = last_k          # nobody reads the stream: only the latest reading counts
        ks = np.arange(self._next_k, last_k + 1, dtype=np.float64)
        self._next_k = last_k + 1
        times = ks / self.rate_hz
        return self._push(times, self.model.values_at(times))

    def _read(self) -> bool:
        return not self.lazy_when_unread or getattr(self.signal, "reader_count", 1) > 0

    def next_due(self) -> float:
        due = self._next_k / self.rate_hz
        self.waiting_unread = False
        if self.rate_hz * self.batch_interval_s >= 2:  # fast: wake once per batch interval …
            self.waiting_unread = not self._read()
            interval = max(self.batch_interval_s, UNREAD_INTERVAL_S) if self.waiting_unread else self.batch_interval_s
            due = max(due, self.clock.now() + interval)   # … or once a second while nobody reads it
        return due

    def describe(self) -> dict:
        return {**super().describe(), "shape": self.model.shape, "rate_hz": self.rate_hz}


class CsvReplayDriver(Driver):
    """Replays a CSV file's column (or columns, as vectors) at `speed` × real time.

    Data time of row i: the `time_column` (seconds or ISO 8601) or `start_time + i / rate_hz`
    (start_time defaults to the moment replay starts). Row i is delivered when
    `replay_start + (data_time_i − data_time_0) / speed` has come (`speed = inf`: as fast as
    possible, in batches). Readings carry their data time (`restamp=True`: their delivery time).
    Rows whose value does not parse are skipped and counted in `bad_rows` (timed by the row
    rate, they keep their slot: the next row is not moved earlier).
    """

    kind = "csv"

    def __init__(self, name: str, path: str | Path, *, column: str | int | None = None,
                 columns: list | None = None, time_column: str | int | None = None,
                 rate_hz: float | None = None, speed: float = 1.0, loop: bool = False,
                 restamp: bool = False, start_time: float | None = None, end_at_eof: bool | None = None,
                 clock: Clock = SYSTEM_CLOCK, signal: LiveSignal | None = None, max_batch: int = 65536):
        super().__init__(name, signal, clock, type_name="Real" if columns is None else "Vector of Real")
        self.path = Path(path)
        if not self.path.is_file():
            raise SignalSpecError("path", f"no such file: {self.path}")
        if time_column is None and rate_hz is None:
            raise SignalSpecError("rate_hz", "give rate_hz or time_column to time the rows")
        if rate_hz is not None:
            _check_number("rate_hz", rate_hz, positive=True)
        if not (isinstance(speed, (int, float)) and speed > 0):
            raise SignalSpecError("speed", f"must be a positive number (inf for as fast as possible), got {speed!r}")
        self.column, self.columns, self.time_column = column, columns, time_column
        self.rate_hz, self.speed, self.loop, self.restamp = rate_hz, float(speed), loop, restamp
        self.start_time = start_time
        self.end_at_eof = (not loop) if end_at_eof is None else end_at_eof
        self.max_batch = max_batch
        self.bad_rows = 0
        self.rows_read = 0
        self.start_row = 0     # readings (rows that parse) to pass over first: see resume_at
        self.signal.position_base = 0   # its readings have positions: a restored query skips what it read
        self._rows: Iterator[tuple[float, Any]] | None = None
        self._pending: tuple[float, Any] | None = None
        self._replay_start: float | None = None
        self._data_start: float | None = None
        self._done = False
        self._header = self._read_header()

    def _read_header(self) -> list[str]:
        with open(self.path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), None)
        if header is None:
            raise SignalSpecError("path", f"{self.path} is empty")
        for key, wanted in (("column", self.column), ("time_column", self.time_column)):
            if isinstance(wanted, str) and wanted not in header:
                raise SignalSpecError(key, f"{self.path} has no column {wanted!r} (columns: {', '.join(header)})")
        for wanted in self.columns or []:
            if isinstance(wanted, str) and wanted not in header:
                raise SignalSpecError("columns", f"{self.path} has no column {wanted!r}")
        return header

    def _index(self, wanted: str | int | None, default: int) -> int:
        if wanted is None:
            return default
        return self._header.index(wanted) if isinstance(wanted, str) else int(wanted)

    def _read_rows(self) -> Iterator[tuple[float, Any]]:
        time_index = None if self.time_column is None else self._index(self.time_column, 0)
        if self.columns:
            value_indexes = [self._index(c, 0) for c in self.columns]
        else:
            first_value = next((i for i in range(len(self._header)) if i != time_index), 0)
            value_indexes = [self._index(self.column, first_value)]
        period = None if self.rate_hz is None else 1.0 / self.rate_hz
        base = self.start_time if self.start_time is not None else self._replay_start
        first_time = None
        offset = 0.0  # added to data times on each pass of a loop
        while True:
            last_time = None
            with open(self.path, newline="", encoding="utf-8") as handle:
                reader = csv.reader(handle)
                next(reader, None)
                for i, row in enumerate(reader):
                    try:
                        values = [float(row[j]) for j in value_indexes]
                        data_time = (_parse_time(row[time_index]) if time_index is not None
                                     else base + i * period)
                    except (ValueError, IndexError):
                        self.bad_rows += 1
                        continue
                    first_time = data_time if first_time is None else first_time
                    last_time = data_time
                    self.rows_read += 1
                    yield data_time + offset, (np.array(values) if self.columns else values[0])
            if not self.loop or last_time is None:
                return
            step = period if period is not None else _typical_step(first_time, last_time, self.rows_read)
            offset += (last_time - first_time) + step

    def poll(self, now: float | None = None) -> int:
        now = self.clock.now() if now is None else now
        if self._done:
            return 0
        if self._rows is None:
            self._replay_start = now
            self._rows = itertools.islice(self._read_rows(), self.start_row, None)
        times, values = [], []
        while len(times) < self.max_batch:
            if self._pending is None:
                self._pending = next(self._rows, None)
                if self._pending is None:
                    self._finish()
                    break
                if self._data_start is None:
                    self._data_start = self._pending[0]
            data_time, value = self._pending
            due = self._due(data_time)
            if due > now:
                break
            times.append(due if self.restamp else data_time)
            values.append(value)
            self._pending = None
        if not times:
            return 0
        column = np.stack(values) if self.columns else np.array(values, dtype=np.float64)
        return self._push(np.array(times, dtype=np.float64), column)

    def resume_at(self, position: int) -> None:
        """Start the replay at reading `position` (0-based, counting rows that parse, passes of a
        loop one after another): where a restarted edge's checkpointed queries left off. The
        signal's readings then carry positions from there (`position_base`)."""
        if self._rows is not None:
            raise RuntimeError("the replay has started already")
        self.start_row = max(0, int(position))
        self.signal.position_base = self.start_row

    def _due(self, data_time: float) -> float:
        if math.isinf(self.speed):
            return self._replay_start
        return self._replay_start + (data_time - self._data_start) / self.speed

    def _finish(self) -> None:
        self._done = True
        if self.end_at_eof:
            self.signal.end()

    @property
    def finished(self) -> bool:
        return self._done

    def next_due(self) -> float | None:
        if self._pending is not None:
            return self._due(self._pending[0])
        return None

    def describe(self) -> dict:
        out = {**super().describe(), "path": str(self.path), "speed": self.speed}
        if self.start_row:
            out["resumed_at"] = self.start_row
        return out


def _typical_step(first: float, last: float, rows: int) -> float:
    """The gap to leave between the last row of a pass and the first of the next."""
    return (last - first) / (rows - 1) if rows > 1 and last > first else 1.0


def _parse_time(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return Time.parse(text).seconds


class CallableDriver(Driver):
    """Polls a Python function every 1 / rate_hz seconds.

    The function takes no argument or the current time, and returns a reading, None (nothing
    now), a `Batch(values, times)`, or a numpy array of readings (stamped now).
    """

    kind = "callable"

    def __init__(self, name: str, function: Callable, *, rate_hz: float = 1.0, clock: Clock = SYSTEM_CLOCK,
                 signal: LiveSignal | None = None, type_name: str | None = None):
        super().__init__(name, signal, clock, type_name=type_name)
        _check_number("rate_hz", rate_hz, positive=True)
        if not callable(function):
            raise SignalSpecError("function", "must be callable")
        self.function, self.period = function, 1.0 / rate_hz
        self.rate_hz = rate_hz
        self._wants_time = _accepts_argument(function)
        self._next: float | None = None

    def poll(self, now: float | None = None) -> int:
        now = self.clock.now() if now is None else now
        if self._next is None:
            self._next = now
        if now < self._next:
            return 0
        missed = math.floor((now - self._next) / self.period)
        self.skipped += missed  # a callable is sampled now, not replayed for the past
        self._next += (missed + 1) * self.period
        reading = self.function(now) if self._wants_time else self.function()
        if reading is None:
            return 0
        if isinstance(reading, Batch):
            times = reading.times if reading.times is not None else np.full(len(reading), now)
            return self._push(np.asarray(times, dtype=np.float64), reading.values)
        if isinstance(reading, np.ndarray) and reading.ndim >= 1 and self.signal.type_name != "Vector of Real":
            return self._push(np.full(len(reading), now), reading)
        self.signal.push(reading, now)
        self.pushed += 1
        return 1

    def next_due(self) -> float | None:
        return self._next

    def describe(self) -> dict:
        return {**super().describe(), "rate_hz": self.rate_hz}


def _accepts_argument(function: Callable) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in parameters)

"""Signal drivers: what feeds an edge engine's sensors.

A driver pushes readings into a `streamql.signals.LiveSignal` (the hub the engine's
`signal_stream`, `ts_signal_stream` and `signal_value` read). Kinds:

- `simulated`: seeded generators with realistic dynamics (sine plus noise, a bounded
  mean-reverting random walk, constants, noise; bursts, spikes and level shifts on top).
  Every simulated value is a pure function of (parameters, seed, timestamp): `SimModel.values_at`
  and `SimModel.generate` compute exactly what a driver pushed, for tests and the federation's
  oracle. A driver samples the grid `t = k / rate_hz` (k an integer, aligned to the epoch).
- `csv`: replay of a column (or columns, as vectors) at real or accelerated speed, timestamps
  from a column or from the row rate.
- `udp`: JSON lines over UDP, `{"signal": name, "value": v, "time": t?}`, one or more per datagram.
- `callable`: a Python function polled at a rate, for embedding.

Drivers run as asyncio tasks on the daemon's event loop (`await driver.start()` … `await
driver.stop()`); `poll(now)` does one step synchronously, so tests drive them with a `FakeClock`
and no loop at all. Fast signals are delivered in numpy batches every `batch_interval_s`
(10 kHz → 500 readings per 50 ms batch); slow ones (fewer than two readings per interval) one
reading at a time, each at its own timestamp. Callables must not block; a blocking sensor belongs
in its own thread that pushes into the LiveSignal itself.
"""
from __future__ import annotations

import asyncio
import builtins
import csv
import importlib
import inspect
import json
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

__all__ = [
    "SignalSpecError", "SimModel", "Driver", "SimulatedDriver", "CsvReplayDriver", "CallableDriver",
    "UdpJsonInput", "DriverSet", "check_spec", "build_drivers", "SIGNAL_KINDS", "SHAPES",
]

log = logging.getLogger("streamql.edge.signals")

SIGNAL_KINDS = ("simulated", "csv", "udp", "callable")
SHAPES = ("sine", "walk", "constant", "noise")
MAX_TICK = 0.1          # the longest a driver sleeps, so stop() is noticed quickly
MAX_CATCH_UP = 1_000_000  # readings one poll delivers at most after a stall (the rest are skipped)


class SignalSpecError(ValueError):
    """A signal's configuration is wrong; `key` names the parameter."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


# == counter-based randomness: a pure function of (seed, salt, key) ===========================
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = 0x9E3779B97F4A7C15


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, vectorized (uint64 arithmetic wraps)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def _uniform(seed: int, salt: int, keys: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) for each uint64 key, independent across (seed, salt)."""
    base = np.uint64((seed * _GOLDEN + salt * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF)
    return (_mix(_mix(keys ^ base)) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _gauss(seed: int, salt: int, keys: np.ndarray) -> np.ndarray:
    u1 = _uniform(seed, salt, keys)
    u2 = _uniform(seed, salt + 7919, keys)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def _time_keys(times: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(times, dtype=np.float64).view(np.uint64)


def _cell_keys(cells: np.ndarray) -> np.ndarray:
    return cells.astype(np.int64).view(np.uint64)


# == simulated signals =========================================================================
_SIM_PARAMS = {
    "shape", "seed", "rate_hz", "offset", "amplitude", "frequency_hz", "phase", "noise",
    "reversion_s", "min", "max", "bursts", "spikes", "level_shifts",
}
_BURST_PARAMS = {"every_s", "probability", "duration_s", "amplitude", "frequency_hz"}
_SPIKE_PARAMS = {"rate_per_s", "amplitude"}
_SHIFT_PARAMS = {"every_s", "probability", "duration_s", "magnitude"}


class SimModel:
    """A simulated signal as a pure function of time (see the module docstring).

    shape `sine`: offset + amplitude·sin(2π·frequency_hz·t + phase);
    `walk`: a bounded, mean-reverting random walk around `offset` with standard deviation about
    `amplitude`, reverting over `reversion_s` (fractal value noise: octaves of smoothly
    interpolated random levels with amplitudes ∝ √scale, as a random walk's increments);
    `constant`: offset; `noise`: offset plus noise. On top: Gaussian `noise` (its standard
    deviation), `bursts` (an oscillation of `amplitude` at `frequency_hz` lasting `duration_s`,
    in a window of `every_s` with `probability`), `spikes` (±`amplitude` on single samples,
    `rate_per_s` on average), `level_shifts` (±`magnitude` for `duration_s`, in a window of
    `every_s` with `probability`); finally clipped to [`min`, `max`] when given.

    >>> model = SimModel(shape="sine", amplitude=2.0, frequency_hz=0.25, seed=1)
    >>> np.round(model.values_at([0.0, 1.0, 2.0]), 6).tolist()
    [0.0, 2.0, 0.0]
    """

    def __init__(self, shape: str = "sine", *, seed: int = 0, rate_hz: float = 1.0, offset: float = 0.0,
                 amplitude: float = 1.0, frequency_hz: float = 1.0, phase: float = 0.0, noise: float = 0.0,
                 reversion_s: float = 60.0, min: float | None = None, max: float | None = None,
                 bursts: dict | None = None, spikes: dict | None = None, level_shifts: dict | None = None):
        if shape not in SHAPES:
            raise SignalSpecError("shape", f"must be one of {', '.join(SHAPES)}, not {shape!r}")
        _check_int("seed", seed)
        for key, value in (("rate_hz", rate_hz), ("reversion_s", reversion_s)):
            _check_number(key, value, positive=True)
        for key, value in (("offset", offset), ("amplitude", amplitude), ("frequency_hz", frequency_hz),
                           ("phase", phase)):
            _check_number(key, value)
        _check_number("noise", noise, minimum=0.0)
        for key, value in (("min", min), ("max", max)):
            if value is not None:
                _check_number(key, value)
        if min is not None and max is not None and min > max:
            raise SignalSpecError("min", f"{min} is above max {max}")
        self.shape, self.seed, self.rate_hz = shape, int(seed), float(rate_hz)
        self.offset, self.amplitude, self.frequency_hz = float(offset), float(amplitude), float(frequency_hz)
        self.phase, self.noise, self.reversion_s = float(phase), float(noise), float(reversion_s)
        self.min, self.max = min, max
        self.bursts = _sub_params("bursts", bursts, _BURST_PARAMS,
                                  {"every_s": 60.0, "probability": 0.5, "duration_s": 5.0,
                                   "amplitude": 1.0, "frequency_hz": 50.0})
        self.spikes = _sub_params("spikes", spikes, _SPIKE_PARAMS, {"rate_per_s": 0.01, "amplitude": 5.0})
        self.level_shifts = _sub_params("level_shifts", level_shifts, _SHIFT_PARAMS,
                                        {"every_s": 600.0, "probability": 0.2, "duration_s": 120.0,
                                         "magnitude": 2.0})
        for name, params in (("bursts", self.bursts), ("level_shifts", self.level_shifts)):
            if params and params["duration_s"] > params["every_s"]:
                raise SignalSpecError(f"{name}.duration_s", "must not exceed every_s")
            if params and not 0 <= params["probability"] <= 1:
                raise SignalSpecError(f"{name}.probability", "must be between 0 and 1")
        # octaves of the walk: from reversion_s down to about one sample period
        self._octaves = int(np.clip(math.ceil(math.log2(builtins.max(2.0, self.reversion_s * self.rate_hz))), 1, 12))

    @classmethod
    def from_spec(cls, spec: dict) -> "SimModel":
        unknown = set(spec) - _SIM_PARAMS - {"name", "kind", "type", "batch_interval_s"}
        if unknown:
            raise SignalSpecError(sorted(unknown)[0], "unknown parameter of a simulated signal "
                                  f"(known: {', '.join(sorted(_SIM_PARAMS))})")
        return cls(**{k: v for k, v in spec.items() if k in _SIM_PARAMS})

    def values_at(self, times) -> np.ndarray:
        """The signal's value at each time (seconds since the epoch), float64."""
        t = np.ascontiguousarray(times, dtype=np.float64)
        keys = _time_keys(t)
        if self.shape == "sine":
            values = self.offset + self.amplitude * np.sin(2.0 * np.pi * self.frequency_hz * t + self.phase)
        elif self.shape == "walk":
            values = self.offset + self.amplitude * self._walk(t)
        else:
            values = np.full(t.shape, self.offset)
        if self.noise:
            values = values + self.noise * _gauss(self.seed, 1, keys)
        if self.bursts:
            values = values + self._bursts(t, keys)
        if self.spikes:
            values = values + self._spikes(keys)
        if self.level_shifts:
            values = values + self._level_shifts(t)
        if self.min is not None or self.max is not None:
            values = np.clip(values, self.min, self.max)
        return values

    def grid(self, n: int, start_time: float) -> np.ndarray:
        """The first `n` grid times `k / rate_hz` at or after `start_time`: what a driver samples."""
        first = math.ceil(start_time * self.rate_hz)
        return np.arange(first, first + n, dtype=np.float64) / self.rate_hz

    def generate(self, n: int, start_time: float, period: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`n` readings: (times, values). Without `period`, on the driver's grid from `start_time`
        (exactly what a `SimulatedDriver` pushes); with it, at `start_time + i * period`."""
        times = self.grid(n, start_time) if period is None else start_time + np.arange(n) * period
        return times, self.values_at(times)

    def latest_at(self, now: float) -> tuple[float, float]:
        """(time, value) of the last grid reading at or before `now`: what `signal_value` reads
        once the driver has caught up (a fast driver delivers every `batch_interval_s`)."""
        t = math.floor(now * self.rate_hz) / self.rate_hz
        return t, float(self.values_at(np.array([t]))[0])

    def _walk(self, t: np.ndarray) -> np.ndarray:
        total = np.zeros(t.shape)
        norm = 0.0
        for octave in range(self._octaves):
            scale = self.reversion_s / (1 << octave)
            weight = math.sqrt(scale / self.reversion_s)
            position = t / scale
            cell = np.floor(position)
            frac = position - cell
            smooth = frac * frac * (3.0 - 2.0 * frac)
            here = _gauss(self.seed, 100 + octave, _cell_keys(cell))
            there = _gauss(self.seed, 100 + octave, _cell_keys(cell + 1))
            total += weight * (here + (there - here) * smooth)
            norm += weight * weight
        return total / math.sqrt(norm)

    def _window_events(self, t: np.ndarray, params: dict, salt: int):
        every, duration = params["every_s"], params["duration_s"]
        window = np.floor(t / every)
        keys = _cell_keys(window)
        happens = _uniform(self.seed, salt, keys) < params["probability"]
        start = window * every + _uniform(self.seed, salt + 1, keys) * (every - duration)
        active = happens & (t >= start) & (t < start + duration)
        return active, start, keys

    def _bursts(self, t: np.ndarray, keys: np.ndarray) -> np.ndarray:
        params = self.bursts
        active, start, _ = self._window_events(t, params, 200)
        phase = 2.0 * np.pi * params["frequency_hz"] * (t - start)
        envelope = np.sin(np.pi * np.clip((t - start) / params["duration_s"], 0.0, 1.0))
        jitter = 1.0 + 0.2 * _gauss(self.seed, 210, keys)
        return np.where(active, params["amplitude"] * envelope * np.sin(phase) * jitter, 0.0)

    def _spikes(self, keys: np.ndarray) -> np.ndarray:
        params = self.spikes
        chance = min(1.0, params["rate_per_s"] / self.rate_hz)
        hit = _uniform(self.seed, 300, keys) < chance
        size = params["amplitude"] * (0.5 + _uniform(self.seed, 301, keys))
        sign = np.where(_uniform(self.seed, 302, keys) < 0.5, -1.0, 1.0)
        return np.where(hit, sign * size, 0.0)

    def _level_shifts(self, t: np.ndarray) -> np.ndarray:
        params = self.level_shifts
        active, _, keys = self._window_events(t, params, 400)
        size = params["magnitude"] * (0.5 + _uniform(self.seed, 402, keys))
        sign = np.where(_uniform(self.seed, 403, keys) < 0.5, -1.0, 1.0)
        return np.where(active, sign * size, 0.0)


def _sub_params(name: str, params: dict | None, known: set, defaults: dict) -> dict | None:
    if params is None or params is False:
        return None
    if params is True:
        params = {}
    if not isinstance(params, dict):
        raise SignalSpecError(name, "must be a table of parameters")
    unknown = set(params) - known
    if unknown:
        raise SignalSpecError(f"{name}.{sorted(unknown)[0]}", f"unknown parameter (known: {', '.join(sorted(known))})")
    merged = {**defaults, **params}
    for key, value in merged.items():
        _check_number(f"{name}.{key}", value, minimum=0.0)
    for key in ("every_s", "duration_s", "rate_per_s"):
        if key in merged and merged[key] <= 0:
            raise SignalSpecError(f"{name}.{key}", "must be positive")
    return {k: float(v) for k, v in merged.items()}


def _check_number(key: str, value: Any, positive: bool = False, minimum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SignalSpecError(key, f"must be a number, got {value!r}")
    if positive and value <= 0:
        raise SignalSpecError(key, f"must be positive, got {value!r}")
    if minimum is not None and value < minimum:
        raise SignalSpecError(key, f"must be at least {minimum:g}, got {value!r}")


def _check_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SignalSpecError(key, f"must be an integer, got {value!r}")


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


class SimulatedDriver(Driver):
    """Samples a `SimModel` on its grid `k / rate_hz` as time passes; batches when fast."""

    kind = "simulated"

    def __init__(self, name: str, model: SimModel, *, clock: Clock = SYSTEM_CLOCK,
                 signal: LiveSignal | None = None, batch_interval_s: float = 0.05, start_time: float | None = None):
        super().__init__(name, signal, clock)
        self.model = model
        self.rate_hz = model.rate_hz
        self.batch_interval_s = batch_interval_s
        start = clock.now() if start_time is None else start_time
        self._next_k = math.ceil(start * self.rate_hz)  # the first grid point at or after start

    def poll(self, now: float | None = None) -> int:
        now = self.clock.now() if now is None else now
        last_k = math.floor(now * self.rate_hz)
        if last_k < self._next_k:
            return 0
        if last_k - self._next_k + 1 > MAX_CATCH_UP:  # after a long stall: skip ahead, count it
            self.skipped += last_k - self._next_k + 1 - MAX_CATCH_UP
            self._next_k = last_k + 1 - MAX_CATCH_UP
        ks = np.arange(self._next_k, last_k + 1, dtype=np.float64)
        self._next_k = last_k + 1
        times = ks / self.rate_hz
        return self._push(times, self.model.values_at(times))

    def next_due(self) -> float:
        due = self._next_k / self.rate_hz
        if self.rate_hz * self.batch_interval_s >= 2:  # fast: wake once per batch interval
            due = max(due, self.clock.now() + self.batch_interval_s)
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
            self._rows = self._read_rows()
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
        return {**super().describe(), "path": str(self.path), "speed": self.speed}


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


class UdpJsonInput:
    """JSON lines over UDP into named LiveSignals: `{"signal": name, "value": v, "time": t?}`.

    One socket serves every signal that names its port. A value that is a list of numbers becomes
    a numpy vector; `time` is seconds or ISO 8601 (default: arrival time). Lines that are not
    JSON objects of that form are counted in `bad_lines`, unknown signal names in `unknown`.
    """

    def __init__(self, signals: dict[str, LiveSignal], *, port: int, host: str = "127.0.0.1",
                 clock: Clock = SYSTEM_CLOCK, max_datagram: int = 65507):
        self.signals = signals
        self.port, self.host, self.clock = port, host, clock
        self.max_datagram = max_datagram
        self.received = self.bad_lines = self.unknown = 0
        self.last_error: str | None = None
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> int:
        """Bind and listen; the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(self.host, self.port))
        self.port = self._transport.get_extra_info("sockname")[1]
        return self.port

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def handle_datagram(self, data: bytes) -> int:
        """Push the readings of one datagram; how many were accepted."""
        arrival = self.clock.now()
        grouped: dict[str, tuple[list, list]] = {}
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            reading = self._parse(line, arrival)
            if reading is None:
                continue
            name, value, stamp = reading
            times, values = grouped.setdefault(name, ([], []))
            times.append(stamp)
            values.append(value)
        accepted = 0
        for name, (times, values) in grouped.items():
            signal = self.signals[name]
            if len(values) > 1 and all(isinstance(v, float) for v in values):
                signal.push_batch(np.array(values), np.array(times))
            else:
                for value, stamp in zip(values, times):
                    signal.push(value, stamp)
            accepted += len(values)
        self.received += accepted
        return accepted

    def _parse(self, line: bytes, arrival: float):
        try:
            item = json.loads(line)
            if not isinstance(item, dict) or not isinstance(item.get("signal"), str) or "value" not in item:
                raise ValueError('a line must be {"signal": name, "value": v, "time": t?}')
            name = item["signal"]
            if name not in self.signals:
                self.unknown += 1
                return None
            value = item["value"]
            if isinstance(value, bool):
                pass
            elif isinstance(value, int):
                value = float(value)
            elif isinstance(value, list) and value and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                value = np.array(value, dtype=np.float64)
            stamp = item.get("time")
            if stamp is None:
                stamp = arrival
            elif isinstance(stamp, str):
                stamp = Time.parse(stamp).seconds
            elif isinstance(stamp, (int, float)) and not isinstance(stamp, bool) and math.isfinite(stamp):
                stamp = float(stamp)
            else:
                raise ValueError(f"time must be seconds or ISO 8601, got {stamp!r}")
            return name, value, stamp
        except (ValueError, TypeError, RecursionError) as exc:
            self.bad_lines += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:200]
            return None


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpJsonInput):
        self.owner = owner

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            self.owner.handle_datagram(data[: self.owner.max_datagram])
        except Exception:  # never let one datagram stop the listener
            log.exception("udp input: datagram from %s failed", addr)

    def error_received(self, exc: Exception) -> None:
        self.owner.last_error = str(exc)


# == from configuration ========================================================================
_COMMON = {"name", "kind", "type"}
_CSV_PARAMS = {"path", "column", "columns", "time_column", "rate_hz", "speed", "loop", "restamp",
               "start_time", "end_at_eof"}
_UDP_PARAMS = {"port", "host"}
_CALLABLE_PARAMS = {"function", "rate_hz"}


def check_spec(spec: dict) -> dict:
    """Check one signal table of edge.toml; SignalSpecError names the bad key."""
    if not isinstance(spec, dict):
        raise SignalSpecError("", "a signal must be a table")
    name = spec.get("name")
    if not isinstance(name, str) or not name or not name.replace("_", "a").replace(".", "a").isalnum():
        raise SignalSpecError("name", f"must be a name of letters, digits, '_' or '.', got {name!r}")
    kind = spec.get("kind", "simulated")
    if kind not in SIGNAL_KINDS:
        raise SignalSpecError("kind", f"must be one of {', '.join(SIGNAL_KINDS)}, not {kind!r}")
    params = set(spec) - _COMMON
    if kind == "simulated":
        SimModel.from_spec(spec)
        if "batch_interval_s" in spec:
            _check_number("batch_interval_s", spec["batch_interval_s"], positive=True)
    else:
        known = {"csv": _CSV_PARAMS, "udp": _UDP_PARAMS, "callable": _CALLABLE_PARAMS}[kind]
        unknown = params - known
        if unknown:
            raise SignalSpecError(sorted(unknown)[0], f"unknown parameter of a {kind} signal "
                                  f"(known: {', '.join(sorted(known))})")
    if kind == "csv":
        if not isinstance(spec.get("path"), str):
            raise SignalSpecError("path", "a csv signal needs the path of its file")
        if "speed" in spec:
            speed = spec["speed"]
            if speed == "max":
                spec = {**spec, "speed": math.inf}
            else:
                _check_number("speed", speed, positive=True)
    if kind == "udp":
        port = spec.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise SignalSpecError("port", f"must be a port number, got {port!r}")
    if kind == "callable" and not isinstance(spec.get("function"), (str,)) and not callable(spec.get("function")):
        raise SignalSpecError("function", "must be 'module:attribute' or a callable")
    return spec


class DriverSet:
    """The drivers of one edge and their signals, started and stopped together."""

    def __init__(self, drivers: list[Driver], udp_inputs: list[UdpJsonInput], signals: dict[str, LiveSignal]):
        self.drivers, self.udp_inputs, self.signals = drivers, udp_inputs, signals
        self._descriptions = {d.name: d.describe() for d in drivers}
        for udp in udp_inputs:
            for name in udp.signals:
                self._descriptions[name] = {"name": name, "type": None, "kind": "udp", "port": udp.port}

    async def start(self) -> None:
        for udp in self.udp_inputs:
            await udp.start()
            for name in udp.signals:
                self._descriptions[name]["port"] = udp.port
        for driver in self.drivers:
            await driver.start()

    async def stop(self) -> None:
        for driver in self.drivers:
            await driver.stop()
        for udp in self.udp_inputs:
            await udp.stop()

    def poll(self, now: float | None = None) -> int:
        return sum(driver.poll(now) for driver in self.drivers)

    def start_thread(self) -> threading.Thread:
        """Run the drivers on their own event loop in a daemon thread (for embedding without asyncio)."""
        self._thread_stop = threading.Event()
        started = threading.Event()
        failure: list[BaseException] = []

        async def main():
            try:
                await self.start()
            except BaseException as exc:  # reported to the caller of start_thread
                failure.append(exc)
                started.set()
                return
            started.set()
            while not self._thread_stop.is_set():
                await asyncio.sleep(0.05)
            await self.stop()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), name="signal-drivers", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]
        return self._thread

    def stop_thread(self, timeout: float = 5.0) -> None:
        if getattr(self, "_thread", None) is not None:
            self._thread_stop.set()
            self._thread.join(timeout)
            self._thread = None

    def describe(self) -> list[dict]:
        """What `hello.capabilities.signals` announces."""
        return [self._descriptions[name] for name in sorted(self._descriptions)]


def build_drivers(specs: list[dict], *, clock: Clock = SYSTEM_CLOCK, base_dir: str | Path | None = None,
                  callables: dict[str, Callable] | None = None) -> DriverSet:
    """Drivers for the `signals` tables of an edge configuration (checked with `check_spec`).

    Relative CSV paths resolve against `base_dir` (the configuration file's directory);
    `callables` maps names a callable signal's `function` may use instead of 'module:attribute'.
    """
    drivers: list[Driver] = []
    signals: dict[str, LiveSignal] = {}
    udp_by_port: dict[tuple[str, int], dict[str, LiveSignal]] = {}
    for spec in specs:
        spec = check_spec(spec)
        name, kind = spec["name"], spec.get("kind", "simulated")
        if name in signals:
            raise SignalSpecError("name", f"signal {name!r} is defined twice")
        type_name = spec.get("type")
        if kind == "simulated":
            driver = SimulatedDriver(name, SimModel.from_spec(spec), clock=clock,
                                     batch_interval_s=spec.get("batch_interval_s", 0.05))
        elif kind == "csv":
            path = Path(spec["path"])
            if base_dir is not None and not path.is_absolute():
                path = Path(base_dir) / path
            options = {k: spec[k] for k in _CSV_PARAMS - {"path"} if k in spec}
            driver = CsvReplayDriver(name, path, clock=clock, **options)
        elif kind == "callable":
            function = spec["function"]
            if isinstance(function, str):
                function = (callables or {}).get(function) or _import_callable(function)
            driver = CallableDriver(name, function, rate_hz=spec.get("rate_hz", 1.0), clock=clock,
                                    type_name=type_name)
        else:
            signal = LiveSignal(name, type_name=type_name, clock=clock)
            signals[name] = signal
            udp_by_port.setdefault((spec.get("host", "127.0.0.1"), spec["port"]), {})[name] = signal
            continue
        if type_name:
            driver.signal.type_name = type_name
        drivers.append(driver)
        signals[name] = driver.signal
    udp_inputs = [UdpJsonInput(named, port=port, host=host, clock=clock)
                  for (host, port), named in udp_by_port.items()]
    return DriverSet(drivers, udp_inputs, signals)


def _import_callable(path: str) -> Callable:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise SignalSpecError("function", f"must be 'module:attribute', got {path!r}")
    try:
        target = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise SignalSpecError("function", f"cannot import {path!r}: {exc}") from None
    if not callable(target):
        raise SignalSpecError("function", f"{path!r} is not callable")
    return target

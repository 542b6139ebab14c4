"""Signal drivers: what feeds an edge engine's sensors.

A driver pushes readings into a `streamql.signals.LiveSignal` (the hub the engine's
`signal_stream`, `ts_signal_stream` and `signal_value` read). Kinds:

- `simulated`: seeded generators with realistic dynamics (sine plus noise, a bounded
  mean-reverting random walk, constants, noise; bursts, spikes and level shifts on top).
  Every simulated value is a pure function of (parameters, seed, timestamp) (`edge_engine.simulation`): `SimModel.values_at`
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

from .simulation import SHAPES, SignalSpecError, SimModel, _check_number  # noqa: F401  (re-exported)

__all__ = [
    "SignalSpecError", "SimModel", "Driver", "SimulatedDriver", "CsvReplayDriver", "CallableDriver",
    "UdpJsonInput", "DriverSet", "check_spec", "build_drivers", "SIGNAL_KINDS", "SHAPES",
]

log = logging.getLogger("streamql.edge.signals")

SIGNAL_KINDS = ("simulated", "csv", "udp", "callable")
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
        self._next_k = math.ceil(start * self.rate_hz)  # the first grid point at or after start

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

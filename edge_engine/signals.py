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
- `mqtt`: readings of MQTT-only devices through nats-server's MQTT listener (a gateway engine;
  edge_engine.mqtt_signals).

Drivers run as asyncio tasks on the daemon's event loop (`await driver.start()` … `await
driver.stop()`); `poll(now)` does one step synchronously, so tests drive them with a `FakeClock`
and no loop at all. Fast signals are delivered in numpy batches every `batch_interval_s`
(10 kHz → 500 readings per 50 ms batch); slow ones (fewer than two readings per interval) one
reading at a time, each at its own timestamp. Callables must not block; a blocking sensor belongs
in its own thread that pushes into the LiveSignal itself.
"""
from __future__ import annotations

import asyncio
import importlib
import json
import logging
import math
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from streamql.clock import SYSTEM_CLOCK, Clock
from streamql.signals import LiveSignal
from streamql.values import Time

from .drivers import MAX_CATCH_UP, MAX_TICK, CallableDriver, CsvReplayDriver, Driver, SimulatedDriver  # noqa: F401
from .mqtt_signals import MqttReadings
from .simulation import SHAPES, SignalSpecError, SimModel, _check_number  # noqa: F401  (re-exported)

__all__ = [
    "SignalSpecError", "SimModel", "Driver", "SimulatedDriver", "CsvReplayDriver", "CallableDriver",
    "UdpJsonInput", "DriverSet", "check_spec", "build_drivers", "SIGNAL_KINDS", "SHAPES",
]

log = logging.getLogger("streamql.edge.signals")

SIGNAL_KINDS = ("simulated", "csv", "udp", "callable", "mqtt")


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
_MQTT_PARAMS = {"device", "topic", "servers", "token_file"}


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
        known = {"csv": _CSV_PARAMS, "udp": _UDP_PARAMS, "callable": _CALLABLE_PARAMS, "mqtt": _MQTT_PARAMS}[kind]
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
    if kind == "mqtt":
        _check_mqtt(spec)
    if kind == "callable" and not isinstance(spec.get("function"), (str,)) and not callable(spec.get("function")):
        raise SignalSpecError("function", "must be 'module:attribute' or a callable")
    return spec


def _check_mqtt(spec: dict) -> None:
    if not isinstance(spec.get("device"), str) or not spec["device"]:
        raise SignalSpecError("device", "an mqtt signal needs the registry id of its device")
    topic = spec.get("topic", spec["name"])
    if not isinstance(topic, str) or not topic or not topic.replace("_", "a").replace("-", "a").isalnum():
        raise SignalSpecError("topic", f"must be one topic level of letters, digits, '_' or '-', got {topic!r}")
    servers = spec.get("servers")
    if isinstance(servers, str):
        servers = [servers]
    if not isinstance(servers, list) or not servers or not all(isinstance(x, str) and x for x in servers):
        raise SignalSpecError("servers", "an mqtt signal needs the NATS servers it reads from (a list of URLs)")
    if not isinstance(spec.get("token_file"), str):
        raise SignalSpecError("token_file", "an mqtt signal needs the file of this edge's device token")


class DriverSet:
    """The drivers of one edge and their signals, started and stopped together."""

    def __init__(self, drivers: list[Driver], udp_inputs: list[UdpJsonInput | MqttReadings], signals: dict[str, LiveSignal]):
        self.drivers, self.udp_inputs, self.signals = drivers, udp_inputs, signals
        self._descriptions = {d.name: d.describe() for d in drivers}
        for udp in udp_inputs:
            for name in udp.signals:
                describe = getattr(udp, "describe_signal", None)   # mqtt inputs describe themselves
                self._descriptions[name] = describe(name) if describe else {
                    "name": name, "type": None, "kind": "udp", "port": udp.port}

    async def start(self) -> None:
        for udp in self.udp_inputs:
            await udp.start()
            if isinstance(udp, UdpJsonInput):
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
    mqtt_by_connection: dict[tuple, tuple[dict, dict]] = {}
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
        elif kind == "mqtt":
            signal = signals[name] = LiveSignal(name, type_name=type_name, clock=clock)
            servers = spec["servers"] if isinstance(spec["servers"], list) else [spec["servers"]]
            token_file = Path(spec["token_file"])
            if base_dir is not None and not token_file.is_absolute():
                token_file = Path(base_dir) / token_file
            routes, named = mqtt_by_connection.setdefault((tuple(servers), str(token_file)), ({}, {}))
            routes[name] = (spec["device"], spec.get("topic", name))
            named[name] = signal
            continue
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
    udp_inputs += [MqttReadings(routes, named, servers=list(servers), token_file=token_file, clock=clock)
                   for (servers, token_file), (routes, named) in mqtt_by_connection.items()]
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

"""Health of an edge engine, sampled for the `health` frame: pure Python, no psutil.

Uptime and restarts (a counter in the store directory), process CPU% (`os.times` over a
monotonic interval) and resident memory (`/proc/self/statm`, else the peak from `resource`),
battery (`/sys/class/power_supply`, or a callable such as a simulated battery signal's latest
value), queue depths (registered callables), link quality (round-trip times, reconnects) and
the last errors (a bounded list, also fed by a logging handler).
"""
from __future__ import annotations

import collections
import logging
import os
import time as _time
from pathlib import Path
from typing import Any, Callable

from streamql.clock import SYSTEM_CLOCK, Clock

__all__ = ["HealthMonitor", "ProcessSampler", "LinkStats", "ErrorLog", "ErrorLogHandler", "read_battery",
           "bump_restarts"]


class ProcessSampler:
    """CPU% of this process since the previous sample, and its resident memory."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK, proc: str | os.PathLike = "/proc/self"):
        self.clock = clock
        self.proc = Path(proc)
        self._last_cpu = self._cpu_seconds()
        self._last_wall = clock.monotonic()

    @staticmethod
    def _cpu_seconds() -> float:
        times = os.times()
        return times.user + times.system

    def cpu_percent(self) -> float | None:
        """Percent of one core used since the last call (None on the first, too-short interval)."""
        cpu, wall = self._cpu_seconds(), self.clock.monotonic()
        elapsed = wall - self._last_wall
        if elapsed <= 0:
            return None
        percent = 100.0 * (cpu - self._last_cpu) / elapsed
        self._last_cpu, self._last_wall = cpu, wall
        return round(max(0.0, percent), 2)

    def memory_kb(self) -> int | None:
        """Resident set size in KiB (from /proc), or the peak RSS where /proc is missing."""
        try:
            fields = (self.proc / "statm").read_text().split()
            return int(fields[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
        except (OSError, IndexError, ValueError, AttributeError):
            pass
        try:
            import resource
            import sys
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return int(peak // 1024) if sys.platform == "darwin" else int(peak)  # bytes on macOS
        except (ImportError, OSError, ValueError):
            return None


def read_battery(root: str | os.PathLike = "/sys/class/power_supply") -> dict | None:
    """The first battery the kernel reports: {percent, charging, source}; None without one."""
    base = Path(root)
    try:
        supplies = sorted(base.iterdir())
    except OSError:
        return None
    for supply in supplies:
        try:
            if (supply / "type").read_text().strip().lower() != "battery":
                continue
            percent = float((supply / "capacity").read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            status = (supply / "status").read_text().strip().lower()
        except OSError:
            status = ""
        charging = None if not status or status == "unknown" else status in ("charging", "full")
        return {"percent": percent, "charging": charging, "source": "sysfs"}
    return None


class LinkStats:
    """Quality of the link to the federation: round-trip times of pings, connections, reconnects."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK, window: int = 32):
        self.clock = clock
        self.rtts: collections.deque[float] = collections.deque(maxlen=window)
        self.connects = 0
        self.reconnects = 0
        self.connected_at: float | None = None
        self.last_disconnect: str | None = None
        self.frames_in = self.frames_out = 0
        self.bytes_in = self.bytes_out = 0

    def connected(self) -> None:
        self.connects += 1
        if self.connects > 1:
            self.reconnects += 1
        self.connected_at = self.clock.monotonic()

    def disconnected(self, reason: str) -> None:
        self.connected_at = None
        self.last_disconnect = reason[:200]

    def record_rtt(self, seconds: float) -> None:
        self.rtts.append(seconds)

    def sent(self, size: int) -> None:
        self.frames_out += 1
        self.bytes_out += size

    def received(self, size: int) -> None:
        self.frames_in += 1
        self.bytes_in += size

    def snapshot(self) -> dict:
        rtts = list(self.rtts)
        out: dict[str, Any] = {
            "connected": self.connected_at is not None,
            "reconnects": self.reconnects,
            "frames_in": self.frames_in, "frames_out": self.frames_out,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
        }
        if self.connected_at is not None:
            out["connected_for_s"] = round(self.clock.monotonic() - self.connected_at, 3)
        if rtts:
            out.update(rtt_ms=round(rtts[-1] * 1000, 3), rtt_avg_ms=round(sum(rtts) / len(rtts) * 1000, 3),
                       rtt_max_ms=round(max(rtts) * 1000, 3))
        if self.last_disconnect:
            out["last_disconnect"] = self.last_disconnect
        return out


class ErrorLog:
    """The last `size` errors, newest last: {time, kind, message}."""

    def __init__(self, size: int = 20, clock: Clock = SYSTEM_CLOCK):
        self.entries: collections.deque[dict] = collections.deque(maxlen=size)
        self.clock = clock
        self.total = 0

    def add(self, message: str, kind: str = "Error") -> None:
        self.total += 1
        self.entries.append({"time": self.clock.now(), "kind": kind, "message": str(message)[:500]})

    def list(self) -> list[dict]:
        return list(self.entries)


class ErrorLogHandler(logging.Handler):
    """Sends log records at WARNING and above into an ErrorLog."""

    def __init__(self, errors: ErrorLog, level: int = logging.WARNING):
        super().__init__(level)
        self.errors = errors

    def emit(self, record: logging.LogRecord) -> None:
        try:
            kind = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else record.levelname
            self.errors.add(record.getMessage(), kind)
        except Exception:  # a logging handler must never raise
            self.handleError(record)


class HealthMonitor:
    """Collects what a `health` frame carries; `sample()` returns its fields."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK, restarts: int = 0,
                 battery: Callable[[], dict | float | None] | None = None,
                 battery_root: str | os.PathLike = "/sys/class/power_supply",
                 process: ProcessSampler | None = None):
        self.clock = clock
        self.restarts = restarts
        self.started = clock.monotonic()
        self.process = process or ProcessSampler(clock)
        self.link = LinkStats(clock)
        self.errors = ErrorLog(clock=clock)
        self._battery = battery
        self._battery_root = battery_root
        self._queues: dict[str, Callable[[], int]] = {}
        self._buffer: Callable[[], dict] | None = None
        self._queries: Callable[[], list[str]] | None = None

    def add_queue(self, name: str, depth: Callable[[], int]) -> None:
        """Report `depth()` as the depth of queue `name` (signal backlogs, outgoing frames, …)."""
        self._queues[name] = depth

    def remove_queue(self, name: str) -> None:
        self._queues.pop(name, None)

    def watch_buffer(self, stats: Callable[[], dict]) -> None:
        """Report the store-and-forward buffer (`StoreForwardBuffer.stats`)."""
        self._buffer = stats

    def watch_queries(self, running: Callable[[], list[str]]) -> None:
        self._queries = running

    def uptime(self) -> float:
        return self.clock.monotonic() - self.started

    def battery(self) -> dict | None:
        if self._battery is not None:
            try:
                reading = self._battery()
            except Exception as exc:
                self.errors.add(f"battery reading failed: {exc}", type(exc).__name__)
                return None
            if reading is None:
                return None
            if isinstance(reading, dict):
                return reading
            return {"percent": float(reading), "charging": None, "source": "signal"}
        return read_battery(self._battery_root)

    def sample(self) -> dict:
        """The fields of a `health` frame, now."""
        queues = {}
        for name, depth in list(self._queues.items()):
            try:
                queues[name] = max(0, int(depth()))
            except Exception as exc:
                self.errors.add(f"queue {name}: {exc}", type(exc).__name__)
        fields: dict[str, Any] = {
            "time": self.clock.now(),
            "uptime_s": round(self.uptime(), 3),
            "restarts": self.restarts,
            "cpu_percent": self.process.cpu_percent(),
            "memory_kb": self.process.memory_kb(),
            "battery": self.battery(),
            "queues": queues,
            "link": self.link.snapshot(),
        }
        if self._buffer is not None:
            stats = self._buffer()
            fields["buffer"] = {"records": stats.get("records", 0), "bytes": stats.get("bytes", 0),
                                "dropped": stats.get("dropped", 0)}
        if self._queries is not None:
            fields["queries"] = list(self._queries())
        fields["errors"] = self.errors.list()
        return fields


def bump_restarts(store: str | os.PathLike) -> int:
    """Count one more start of the daemon in `store`; returns the restarts before this one.

    The counter file is replaced atomically, so a crash never leaves it torn.
    """
    directory = Path(store)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "starts"
    try:
        starts = int(path.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        starts = 0
    temporary = directory / "starts.tmp"
    with open(temporary, "w") as handle:
        handle.write(f"{starts + 1}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return starts


def _busy(seconds: float) -> None:
    """Spin the CPU (for tests of cpu_percent)."""
    end = _time.perf_counter() + seconds
    while _time.perf_counter() < end:
        pass

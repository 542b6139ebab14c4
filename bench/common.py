"""Shared helpers for the benchmarks: timing, machine facts, and a table printer.

Every benchmark compares against its baselines in the same run and reports ratios, so the
numbers mean the same on a fast and a slow machine.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def timings(fn, repeat: int, warmup: int) -> list[float]:
    """Seconds of each of `repeat` runs of fn, after `warmup` runs not timed."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def best_of(fn, repeat: int = 5, warmup: int = 1) -> float:
    """The fastest of several runs, in seconds (the least disturbed by other load)."""
    return min(timings(fn, repeat, warmup))


def median_of(fn, repeat: int = 300, warmup: int = 50) -> float:
    """The median run, in seconds (for short operations timed many times)."""
    return statistics.median(timings(fn, repeat, warmup))


def machine() -> str:
    import numpy
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"numpy {numpy.__version__}")


def table(title: str, rows: list[tuple], headers: tuple) -> str:
    widths = [max([len(str(h))] + [len(str(r[i])) for r in rows]) for i, h in enumerate(headers)]  # rows may be empty
    lines = [title, "  ".join(str(h).ljust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux /proc, else resource)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()

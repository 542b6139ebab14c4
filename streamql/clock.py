"""Injectable time: the engine never calls `time` directly, so tests can control it."""
from __future__ import annotations

import threading
import time


class Clock:
    """Wall-clock time for timestamps, monotonic time for durations, and sleeping."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, condition: threading.Condition, seconds: float) -> None:
        """Wait on a held condition for at most `seconds` of this clock's time."""
        condition.wait(seconds)


class FakeClock(Clock):
    """A clock that only moves when told to; `sleep` advances it instead of waiting.

    >>> clock = FakeClock(start=100.0); clock.sleep(2.5); clock.now()
    102.5
    """

    def __init__(self, start: float = 0.0):
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def wait(self, condition: threading.Condition, seconds: float) -> None:
        # Real time still passes for other threads to push data; fake time advances too.
        condition.wait(min(seconds, 0.01))
        self.advance(seconds)


SYSTEM_CLOCK = Clock()

"""Injectable time: the engine never calls `time` directly, so tests can control it."""
from __future__ import annotations

import threading
import time

from .errors import QueryCancelled


class Clock:
    """Wall-clock time for timestamps, monotonic time for durations, and sleeping."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def sleep_until_set(self, seconds: float, event: threading.Event) -> bool:
        """Sleep `seconds`, waking as soon as `event` is set; whether it is set."""
        if type(self).sleep is not Clock.sleep:   # a clock with its own way of sleeping (a fake one)
            self.sleep(seconds)
            return event.is_set()
        return event.wait(seconds) if seconds > 0 else event.is_set()

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


class CancellableClock(Clock):
    """The engine's clock as a running query sees it: a sleep ends at once, raising
    QueryCancelled, when the query is cancelled — so a slow source (`heartbeat(10)`, a signal
    polled every minute) never makes cancelling wait out its period."""

    def __init__(self, clock: Clock, cancel: threading.Event):
        self.base = clock
        self.cancel = cancel

    def now(self) -> float:
        return self.base.now()

    def monotonic(self) -> float:
        return self.base.monotonic()

    def sleep(self, seconds: float) -> None:
        if self.base.sleep_until_set(seconds, self.cancel):
            raise QueryCancelled("the query was cancelled")

    def sleep_until_set(self, seconds: float, event: threading.Event) -> bool:
        return self.base.sleep_until_set(seconds, event)

    def wait(self, condition: threading.Condition, seconds: float) -> None:
        self.base.wait(condition, seconds)


SYSTEM_CLOCK = Clock()

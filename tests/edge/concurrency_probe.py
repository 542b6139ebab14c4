"""How many threads are inside a section at once (the compute gate's and the pacer's tests)."""
from __future__ import annotations

import contextlib
import threading
import time


def spin(seconds: float) -> None:
    """Burn this thread's CPU for `seconds` of its own CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class InsideCounter:
    """`with counter.inside():` around the section; `most` is the most threads seen in it at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def inside(self):
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            yield
        finally:
            with self._lock:
                self.now -= 1


def wait_until(condition, timeout: float = 5.0, tick: float = 0.005) -> bool:
    """Poll `condition()` until true or `timeout` (a bound on a hang, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(tick)
    return True

"""Fragment threads started a few at a time (edge_engine/fragments.py).

A process starts at most `STARTING_AT_ONCE` fragment threads that have not compiled yet; the
fragments beyond wait in a line without a thread, and each compile done starts the next. A
10,000-edge fan-out started 2,500 fragment threads at once in each simulator process: load 60–127
on two cores, the processes' own loops 20–50 s late and the federation nodes beside them starved
(bench/README.md, issue 16). A fragment that ended while it waited (cancelled, past its deadline)
never gets a thread: its end was already sent from the loop.
"""
from __future__ import annotations

import _thread
import collections
import threading

STARTING_AT_ONCE = 4


class FragmentStarts:
    """The process's fragment threads, started `at_once` at a time until each has compiled."""

    def __init__(self, at_once: int):
        self.at_once = max(1, at_once)
        self._lock = threading.Lock()
        self._starting = 0
        self._line: collections.deque = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._line)

    def start(self, fragment) -> None:
        with self._lock:
            if self._starting >= self.at_once:
                self._line.append(fragment)
                return
            self._starting += 1
        _thread.start_new_thread(fragment._run, ())

    def compiled(self) -> None:
        """(a started thread, once: its compile done or failed) The next in line gets a thread —
        unless it ended while it waited (cancelled, past its deadline): it never needs one."""
        while True:
            with self._lock:
                if not self._line:
                    self._starting -= 1
                    return
                following = self._line.popleft()
            if following.outcome is None:
                _thread.start_new_thread(following._run, ())
                return


STARTS = FragmentStarts(STARTING_AT_ONCE)

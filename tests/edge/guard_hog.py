"""A test-only callable signal for the process-guard test: half a million readings at every poll.

Nothing is kept while no query reads the signal; a query collecting it (`vectorof`) grows by
hundreds of MB a second, which the guard must stop. A fresh array every time: a reader keeps
what it collects by reference.
"""
import numpy as np


def ones():
    return np.ones(500_000)


_calls = [0]


def stall_after_a_second():
    """A sensor whose driver hangs after twenty polls: it blocks the daemon's event loop for good."""
    _calls[0] += 1
    if _calls[0] > 20:
        import time
        time.sleep(3600)
    return 1.0

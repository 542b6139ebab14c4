"""A test-only callable signal for the process-guard test: half a million readings at every poll.

Nothing is kept while no query reads the signal; a query collecting it (`vectorof`) grows by
hundreds of MB a second, which the guard must stop. A fresh array every time: a reader keeps
what it collects by reference.
"""
import numpy as np


def ones():
    return np.ones(500_000)

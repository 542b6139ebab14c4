"""Fixtures for the whole suite."""
from __future__ import annotations

import signal
import warnings

import pytest

_WATCHED = (signal.SIGINT, signal.SIGTERM)

# Started in the background by a shell without job control, the suite inherits SIGINT ignored, and
# Python then installs no KeyboardInterrupt handler: the shell's Ctrl-C tests (which simulate the key
# with `_thread.interrupt_main`) would wait forever for an interrupt that never comes.
if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL):
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def signal_handlers_restored(request):
    """A test that runs a daemon in this process may leave its SIGINT/SIGTERM handlers behind;
    the tests after it (Ctrl-C in the shell, simulated with `_thread.interrupt_main`) would then
    reach that handler instead of KeyboardInterrupt and hang. Put them back, and say who left them."""
    before = {signum: signal.getsignal(signum) for signum in _WATCHED}
    yield
    for signum, handler in before.items():
        if signal.getsignal(signum) is not handler:
            warnings.warn(f"{request.node.nodeid} left a handler for {signal.Signals(signum).name}")
            signal.signal(signum, handler)

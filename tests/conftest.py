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


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """A real PostgreSQL on loopback for the whole run (tests/pg_server.py); `pg_server.new_database()`
    gives each test its own database. Skips only where no server binaries exist at all; under CI
    (`CI` or `STREAMQL_REQUIRE_PG` set) that is a failure instead: scripts/test installs them."""
    import os

    from tests.pg_server import PgServer, find_bin_dir

    required = os.environ.get("CI") or os.environ.get("STREAMQL_REQUIRE_PG")
    if find_bin_dir() is None:
        reason = "no PostgreSQL server binaries (install Debian's postgresql package; scripts/test does)"
        if required:
            pytest.fail(reason)
        pytest.skip(reason)
    server = PgServer(tmp_path_factory.mktemp("pg"))
    try:
        server.init()
        server.start()
    except RuntimeError as exc:
        if required:
            raise
        pytest.skip(f"no PostgreSQL server could be started here: {exc}")
    try:
        yield server
    finally:
        server.stop()

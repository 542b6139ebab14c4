"""Clients never hang, on real processes (a `streamql federation` and a simulated edge): Ctrl-C in
the shell on a fleet stream that never yields a row gives the prompt back at once and the shell
goes on; a Python program that abandons `async for … in fleet.aquery(…)` (break, an exception,
its task cancelled) leaves no unclosed session and prints no traceback."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from fleet_process import ROOT, Fleet

pexpect = pytest.importorskip("pexpect")

pytestmark = pytest.mark.timeout(300)

NO_ROWS = "select stream of x from Edge e, Real x where x in signal_stream('vibration')@e and x > 1e9;"


@pytest.fixture(scope="module", params=["websocket", "nats", "scale-out"])
def fleet(request, tmp_path_factory):
    running = Fleet(tmp_path_factory.mktemp(f"never-hang-{request.param}"), 1, transport=request.param)
    try:
        yield running
    finally:
        running.stop()


def _drain(child) -> None:
    """Read what the terminal printed so far (so a later expect sees only what comes after)."""
    try:
        while True:
            child.read_nonblocking(100_000, timeout=0.3)
    except pexpect.TIMEOUT:
        pass


def test_ctrl_c_on_a_fleet_stream_without_rows_gives_the_prompt_back(fleet, tmp_path):
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=str(ROOT), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1",
               COLUMNS="120", LINES="30")
    child = pexpect.spawn(sys.executable, ["-m", "streamql.cli", "shell", "--federation", fleet.url,
                                           "--token", fleet.admin],
                          env=env, cwd=str(ROOT), encoding="utf-8", timeout=30, dimensions=(30, 120))
    prompt = r"127\.0\.0\.1:\d+>"
    try:
        child.expect(prompt)
        for _ in range(2):                        # and again: the session is still sound
            child.send(NO_ROWS + "\r")
            time.sleep(3.0)                       # the stream has started (its response waits up to 1 s for a row)
            _drain(child)
            interrupted = time.monotonic()
            child.sendintr()
            child.expect(r"\(cancelled after 0 rows\)", timeout=10)
            child.expect(prompt, timeout=10)
            assert time.monotonic() - interrupted < 2.0
            assert "still finishing" not in child.before
        child.send("select count(e) from Edge e;\r")
        child.expect(r" 1\r\n\(1 row\)")
        child.expect(prompt)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


ABANDON = r"""
import asyncio, sys, streamql
fleet = streamql.connect(sys.argv[1], sys.argv[2])
ROWS = "select stream of id(e), x from Edge e, Real x where x in signal_stream('vibration')@e;"
NONE = "select stream of x from Edge e, Real x where x in signal_stream('vibration')@e and x > 1e9;"

async def broken_off():
    async for row in fleet.aquery(ROWS):
        break

async def failed():
    try:
        async for row in fleet.aquery(ROWS):
            raise KeyError("boom")
    except KeyError:
        pass

async def cancelled():
    async def consume():
        async for row in fleet.aquery(NONE):
            pass
    task = asyncio.ensure_future(consume())
    await asyncio.sleep(1.0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass

async def main():
    for case in (broken_off, failed, cancelled):
        await case()
        print(case.__name__, flush=True)

asyncio.run(main())
asyncio.run(broken_off())      # the last thing the program does: nothing left behind either
print("done", flush=True)
"""


def test_abandoning_async_iteration_leaves_no_session_open_and_prints_nothing(fleet):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDEVMODE="1")   # dev mode shows every ResourceWarning
    run = subprocess.run([sys.executable, "-c", ABANDON, fleet.url, fleet.admin], capture_output=True, text=True,
                         env=env, cwd=str(ROOT), timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["broken_off", "failed", "cancelled", "done"]
    assert "Unclosed" not in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert "ResourceWarning" not in run.stderr and "Exception ignored" not in run.stderr, run.stderr

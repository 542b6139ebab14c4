"""End to end in a pseudo-terminal: the `streamql` command as a person would use it."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")

REPO = Path(__file__).resolve().parents[2]
PROMPT = "local>"


@pytest.fixture
def terminal(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=str(REPO), TERM="xterm",
               PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="100", LINES="30")
    child = pexpect.spawn(sys.executable, ["-m", "streamql.cli"], env=env, cwd=str(REPO), encoding="utf-8",
                          timeout=20, dimensions=(30, 100))
    yield child
    if child.isalive():
        child.terminate(force=True)


def test_rows_ctrl_c_on_an_endless_stream_and_ctrl_d(terminal, tmp_path):
    child = terminal
    child.expect("StreamQL .* on a local engine")
    child.expect(PROMPT)
    child.send("select x * 10 from Integer x\r where x in iota(1, 3);\r")
    child.expect(r" 30\r\n\(3 rows\)")
    child.expect(PROMPT)

    child.send("select stream of x from Real x where x in heartbeat(0.05);\r")
    child.expect(r"0\.1\d*\r\n")             # rows keep coming
    child.expect(r"0\.2\d*\r\n")
    time.sleep(0.2)
    child.sendintr()                          # Ctrl-C
    child.expect(r"\(cancelled after \d+ rows\)")
    child.expect(PROMPT)

    child.send("select 'the session survived';\r")
    child.expect(r" the session survived\r\n\(1 row\)")
    child.expect(PROMPT)
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "select 'the session survived';" in (tmp_path / ".streamql_history").read_text()


def test_ctrl_c_on_slow_streams_gives_the_prompt_back_at_once(terminal):
    # sources that sleep long between items (or an operator that swallows them) used to hold the
    # cancellation until their next item: the prompt came back only after the 2 s grace, if at all
    child = terminal
    child.expect(PROMPT)
    for query in ("select stream of x from Real x where x in heartbeat(30);",
                  "select stream of w from Vector of Real w where w in winagg(heartbeat(0.5), 1000, 1000);",
                  "select stream of x from Integer x where x in diota(30, 1, 3);"):
        child.send(query + "\r")
        time.sleep(1.0)
        interrupted = time.monotonic()
        child.sendintr()
        child.expect(r"\(cancelled after 0 rows[^)]*\)")
        note = child.match.group(0)
        child.expect(PROMPT)
        assert time.monotonic() - interrupted < 2.0 and "still finishing" not in note, note
    child.send("select 'still here';\r")
    child.expect(r" still here\r\n\(1 row\)")

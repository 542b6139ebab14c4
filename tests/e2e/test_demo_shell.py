"""The README's main command in a pseudo-terminal: `streamql demo` starts a federation and a
simulated fleet, prints the dashboard's address and opens the shell on the federation; a query
answers from the fleet, and Ctrl-D leaves the shell, stops everything the demo started and exits 0."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")

ROOT = Path(__file__).resolve().parents[2]
EDGES = 6
SEED = 3

pytestmark = pytest.mark.timeout(300)


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, None when it does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2:].split()   # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """pid → start time of every live process below `root` (children, their children, …)."""
    parents: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] != "Z":
                parents.setdefault(stat[0], []).append((int(entry), stat[2]))
    found, todo = {}, [root]
    while todo:
        for pid, started in parents.get(todo.pop(), []):
            if pid not in found:
                found[pid] = started
                todo.append(pid)
    return found


def _still_running(processes: dict[int, int]) -> list[int]:
    """The ones still there: same pid, same start time (not a reused pid), not a zombie."""
    running = []
    for pid, started in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == started and stat[1] != "Z":
            running.append(pid)
    return running


def test_the_demo_opens_the_shell_on_its_fleet_and_ctrl_d_stops_everything(tmp_path):
    data = tmp_path / "data"
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=str(ROOT), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1",
               COLUMNS="120", LINES="40")
    child = pexpect.spawn(sys.executable, ["-m", "streamql.cli", "demo", "--edges", str(EDGES), "--seed", str(SEED),
                                           "--port", "0", "--data", str(data)],
                          env=env, cwd=str(ROOT), encoding="utf-8", timeout=120, dimensions=(40, 120))
    started: dict[int, int] = {}
    url = None
    try:
        child.expect(rf"{EDGES} edges online")
        child.expect(r"Dashboard: (http://127\.0\.0\.1:(\d+))/\?token=(\S+)")
        url, port = child.match.group(1), child.match.group(2)
        prompt = rf"127\.0\.0\.1:{port}>"
        child.expect(r"on federation 127\.0\.0\.1:\d+")     # the shell's banner: on the demo's federation
        child.expect(prompt)

        child.timeout = 60
        child.send("select count(e) from Edge e;\r")
        child.expect(rf" {EDGES}\r\n\(1 row\)")
        child.expect(rf"{EDGES} selected · answered from the registry")   # no device was asked
        child.expect(prompt)                                # Ctrl-D only once the prompt is back
        time.sleep(0.5)                                     # the terminal back in raw mode before typing
        child.send("select count(e) from Edge e where (1 = 1)@e;\r")      # asked of every device
        child.expect(rf" {EDGES}\r\n\(1 row\)")
        child.expect(rf"{EDGES} answered · 0 failed")       # every device's outcome, after the rows
        child.expect(prompt)

        started = _descendants(child.pid)
        assert len(started) >= 2, started                   # at least the federation and the fleet
        assert (data / "federation" / "admin.token").exists() and (data / "demo.log").exists()

        child.sendcontrol("d")
        child.expect("demo stopped")
        child.expect(pexpect.EOF)
    finally:
        if child.isalive() and not started:
            started = _descendants(child.pid)
        child.close(force=True)
        leftover = _still_running(started)
        deadline = time.monotonic() + 5
        while leftover and time.monotonic() < deadline:
            time.sleep(0.2)
            leftover = _still_running(started)
        for pid in leftover:                                 # ours: the demo's own children, by pid
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
    assert child.exitstatus == 0, (child.exitstatus, child.signalstatus, child.before)
    assert leftover == [], f"processes the demo started outlived it: {leftover} (at {url})"

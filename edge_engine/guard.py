"""The process guard of an edge daemon (like osquery's watchdog), and what it remembers.

`streamql edge --watchdog` (or `[guard] enabled = true` in edge.toml) does not run the daemon in
its own process: it starts the same command again as a child (marked with `GUARD_ENV`), watches
the child's resident memory every `check_interval_s`, and

- past `max_rss_mb` kills it (SIGKILL: a statement stuck in a numpy call cannot be stopped more
  gently), waits a moment and starts it again, telling the new child why (`GUARD_ENV`);
- when the child dies by itself (not exit 0, not a configuration error, exit 2), starts it
  again, with backoff (1 s doubling to 30 s, reset after a minute up);
- on SIGTERM or SIGINT forwards SIGTERM to the child and waits for it (the child stops within
  its own 10 s deadline), killing it at HARD_STOP_S.

The guarded daemon writes ahead, before each query fragment starts, a file naming it in
`<store>/running/` (`RunningLog`; removed when it ends). After a restart for memory, the
statements of those files are quarantined (`<store>/quarantine.json`, by the sha256 of their text)
for `quarantine_s`: the same statement is refused with a LimitError saying why and until when.
The restart is counted in health (`restarts`, and `guard` with the reason). Autostart queries of
deployed bundles are not quarantined: they resume after the restart.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from streamql import process_limits

from .store import atomic_write

__all__ = ["GUARD_ENV", "RunningLog", "Quarantine", "guard_state", "supervise", "rss_mb", "hard_exit_after",
           "install_stop_handlers", "STOP_DEADLINE_S"]

log = logging.getLogger("streamql.edge.guard")

GUARD_ENV = "STREAMQL_EDGE_GUARDED"
HARD_STOP_S = 9.5
STOP_DEADLINE_S = 8.0  # a graceful stop gets this long; the process ends at HARD_STOP_S regardless
STABLE_AFTER_S = 60.0
MAX_BACKOFF_S = 30.0


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()


class RunningLog:
    """`<store>/running/`: one small file per running fragment (qid, sha256 of its text)."""

    def __init__(self, store: str | os.PathLike):
        self.directory = Path(store) / "running"
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, qid: str) -> Path:
        return self.directory / hashlib.sha256(qid.encode()).hexdigest()[:32]

    def started(self, qid: str, source: str) -> None:
        # no fsync: a guard kill is a killed process, not a power cut, and the page cache survives it
        try:
            self._path(qid).write_text(json.dumps({"qid": qid, "sha256": source_hash(source), "time": time.time(),
                                                   "text": source[:200]}))
        except OSError as exc:
            log.warning("cannot note fragment %s as running: %s", qid, exc)

    def ended(self, qid: str) -> None:
        try:
            self._path(qid).unlink()
        except OSError:
            pass

    def collect(self) -> list[dict]:
        """What was running when the previous process ended; the directory is emptied."""
        found = []
        for path in sorted(self.directory.iterdir()):
            try:
                entry = json.loads(path.read_text())
                if isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
                    found.append(entry)
            except (OSError, ValueError):
                pass
            try:
                path.unlink()
            except OSError:
                pass
        return found


class Quarantine:
    """`<store>/quarantine.json`: statements refused until a time, by the sha256 of their text."""

    def __init__(self, store: str | os.PathLike, clock=time.time):
        self.path = Path(store) / "quarantine.json"
        self.clock = clock
        self.entries: dict[str, dict] = {}
        try:
            loaded = json.loads(self.path.read_text())
            if isinstance(loaded, dict):
                self.entries = {k: v for k, v in loaded.items() if isinstance(v, dict) and "until" in v}
        except (OSError, ValueError):
            pass
        self._expire()

    def _expire(self) -> None:
        now = self.clock()
        self.entries = {k: v for k, v in self.entries.items() if v["until"] > now}

    def add(self, entries: list[dict], seconds: float, reason: str) -> int:
        until = self.clock() + seconds
        for entry in entries:
            self.entries[entry["sha256"]] = {"until": until, "reason": reason, "text": entry.get("text", "")}
        self._save()
        return len(entries)

    def _save(self) -> None:
        try:
            atomic_write(self.path, json.dumps(self.entries).encode())
        except OSError as exc:
            log.warning("cannot save the quarantine: %s", exc)

    def refuse(self, source: str) -> str | None:
        """Why this statement is refused now (None when it is not quarantined)."""
        if not self.entries:
            return None
        entry = self.entries.get(source_hash(source))
        if entry is None:
            return None
        if entry["until"] <= self.clock():
            self._expire()
            return None
        until = time.strftime("%H:%M:%S", time.localtime(entry["until"]))
        return (f"this statement was running when the edge's guard restarted the daemon ({entry['reason']}); "
                f"it is refused on this edge until {until}")

    def __len__(self) -> int:
        self._expire()
        return len(self.entries)


def guard_state() -> dict | None:
    """What the guard told this process (None when it is not guarded): restarts, reason, time, kind."""
    text = os.environ.get(GUARD_ENV)
    if not text:
        return None
    try:
        state = json.loads(text)
    except ValueError:
        return {"restarts": 0}
    return state if isinstance(state, dict) else {"restarts": 0}


def hard_exit_after(seconds: float = HARD_STOP_S, code: int = 1) -> threading.Timer:
    """End this process `seconds` from now whatever still runs (a query thread stuck in numpy, a
    federation that never answers the close): SIGTERM is obeyed within 10 s."""
    return process_limits.hard_exit_after(seconds, code, log)


def install_stop_handlers(loop, stop) -> None:
    """On SIGTERM or SIGINT: set the asyncio event `stop` (a graceful stop) and end the process
    HARD_STOP_S later regardless. Plain signal handlers, not the loop's: they run even while
    the event loop is blocked (a sensor callable that hangs), and the timer is a thread of its own."""
    fired = threading.Event()

    def handler(signum, frame) -> None:
        if not fired.is_set():
            fired.set()
            hard_exit_after()
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:  # the loop is closed already
            pass

    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(signum, handler)
        except ValueError:  # not the main thread (embedded): the caller stops us
            return


# --- the supervisor (the parent process) ------------------------------------------------------
def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MB (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, IndexError, ValueError):
        return None


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Runs `command` as a guarded child until told to stop (see the module docstring)."""

    def __init__(self, command: list[str], *, max_rss_mb: float, check_interval_s: float = 0.5,
                 env: dict | None = None):
        self.command, self.max_rss_mb, self.interval = command, max_rss_mb, check_interval_s
        self.env = dict(os.environ if env is None else env)
        self.stopping = threading.Event()
        self.child: subprocess.Popen | None = None
        self.restarts = 0
        self.last: dict | None = None

    def stop(self, *_: Any) -> None:
        self.stopping.set()
        child = self.child
        if child is not None and child.poll() is None:
            try:
                child.send_signal(signal.SIGTERM)
            except OSError:
                pass

    def run(self) -> int:
        failures = 0
        while not self.stopping.is_set():
            state = {"restarts": self.restarts, **({"last": self.last} if self.last else {})}
            self.child = subprocess.Popen(self.command, env={**self.env, GUARD_ENV: json.dumps(state)})
            started = time.monotonic()
            killed = self._watch()
            code = self.child.wait()
            if self.stopping.is_set():
                return 0 if code in (0, -signal.SIGTERM) else code
            if killed is None:
                if code == 0:
                    return 0  # the daemon stopped cleanly by itself
                if code == 2:
                    log.error("the edge daemon refused its configuration (exit 2); not restarting")
                    return 2
                killed = {"kind": "exit", "reason": f"the daemon ended with {_describe(code)}"}
            self.last = {**killed, "time": time.time()}
            self.restarts += 1
            failures = 0 if time.monotonic() - started >= STABLE_AFTER_S else failures + 1
            delay = 0.2 if killed["kind"] == "memory" and failures <= 1 else min(MAX_BACKOFF_S, 2.0 ** (failures - 1))
            log.warning("restarting the edge daemon in %.1f s: %s", delay, killed["reason"])
            self.stopping.wait(delay)
        return 0

    def _watch(self) -> dict | None:
        """Poll the child until it ends (None) or passes the memory cap (it is killed: why)."""
        child = self.child
        while child.poll() is None:
            if self.stopping.is_set():
                try:
                    child.wait(HARD_STOP_S)
                except subprocess.TimeoutExpired:
                    log.error("the edge daemon did not stop within %.1f s: killing it", HARD_STOP_S)
                    child.kill()
                return None
            rss = rss_mb(child.pid)
            if rss is not None and rss > self.max_rss_mb:
                child.kill()
                reason = f"memory: {rss:.0f} MB resident passed the cap of {self.max_rss_mb:g} MB"
                log.error("killing the edge daemon: %s", reason)
                return {"kind": "memory", "reason": reason}
            self.stopping.wait(self.interval)
        return None


def supervise(command: list[str] | None = None, *, max_rss_mb: float, check_interval_s: float = 0.5) -> int:
    """Guard the daemon started by `command` (default: this process's own command line, which the
    child recognises by GUARD_ENV) until SIGTERM or SIGINT; the exit code."""
    command = command or [sys.executable, *sys.orig_argv[1:]]
    supervisor = Supervisor(command, max_rss_mb=max_rss_mb, check_interval_s=check_interval_s)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, supervisor.stop)
    log.info("guarding the edge daemon (memory cap %g MB)", max_rss_mb)
    return supervisor.run()

"""A real `streamql edge` process killed with SIGKILL during its autostart windowed
queries, and restarted: at the federation, the windows of a CSV replay are exactly those of a run
that was never killed (exactly once, in order); the windows of a live signal before the kill and
after the restart are each complete, and none is published twice."""
from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from edge_engine.testing import make_bundle

REPO = Path(__file__).resolve().parents[2]
ROWS, SIZE, LIVE_SIZE = 400, 10, 20
REPLAY = "select stream of w from Vector of Real w where w in winagg(signal_stream('replay'), 10, 10);\n"
LIVE = "select stream of w from Vector of Real w where w in winagg(signal_stream('vibration'), 20, 20);\n"


class Edge:
    def __init__(self, tmp_path: Path, edge_id: str, store: Path, fed, keys, csv: Path):
        self.log_path = tmp_path / f"{edge_id}-{random.randrange(1 << 30)}.log"
        self.log = open(self.log_path, "w")
        replay = json.dumps({"name": "replay", "kind": "csv", "path": str(csv), "column": "v", "time_column": "t",
                             "speed": 1.0})
        args = ["--id", edge_id, "--federation", fed.url, "--store", str(store), "--trusted-key", keys[1],
                "--signal", replay, "--signal", "name=vibration,shape=sine,rate_hz=200,noise=0.1,seed=3",
                "--heartbeat", "0.3", "--reconnect-initial", "0.05", "--reconnect-max", "0.3",
                "--log-level", "warning", "--checkpoint-interval", "0.5"]
        self.process = subprocess.Popen([sys.executable, "-m", "streamql.cli", "edge", *args], cwd=REPO,
                                        env={**os.environ, "PYTHONPATH": str(REPO)},
                                        stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


def windows(fed, edge_id: str, flow: str) -> list[list[float]]:
    return [[float(v) for v in (row[0] if isinstance(row, tuple) else row)]
            for record in fed.published.get(edge_id, []) if record["flow"] == flow for row in record["rows"]]


async def until(condition, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


async def installed(tmp_path, fed, keys, csv, bundle, name) -> Path:
    """A store with the bundle deployed (by a daemon since killed), its run's traces removed."""
    store = tmp_path / name
    edge = Edge(tmp_path, f"setup-{name}", store, fed, keys, csv)
    try:
        conn = await fed.connection(f"setup-{name}", timeout=30)
        assert (await conn.deploy("d-1", bundle, "ck", "1.0.0")).t == "ack"
    finally:
        edge.kill()
    shutil.rmtree(store / "checkpoints", ignore_errors=True)
    shutil.rmtree(store / "buffer", ignore_errors=True)
    return store


async def test_sigkill_during_autostart_windows_resumes_exactly_once(fed, tmp_path, keys):
    csv = tmp_path / "replay.csv"
    csv.write_text("t,v\n" + "".join(f"{i * 0.01:.2f},{i}\n" for i in range(ROWS)))
    bundle = make_bundle(tmp_path, name="ck", key=keys[0], requirements={},
                         autostart={"autostart/replay.sql": REPLAY, "autostart/live.sql": LIVE})
    expected = [[float(v) for v in range(i, i + SIZE)] for i in range(0, ROWS, SIZE)]
    reference_store = await installed(tmp_path, fed, keys, csv, bundle, "reference")
    killed_store = await installed(tmp_path, fed, keys, csv, bundle, "killed")

    # a run without the kill
    reference = Edge(tmp_path, "reference", reference_store, fed, keys, csv)
    try:
        await until(lambda: len(windows(fed, "reference", "ck/replay")) >= len(expected), 40, "the reference run")
    finally:
        reference.kill()
    assert windows(fed, "reference", "ck/replay") == expected

    # the same, killed with SIGKILL a third of the way and restarted
    edge = Edge(tmp_path, "killed", killed_store, fed, keys, csv)
    try:
        first = await fed.connection("killed", timeout=30)
        await until(lambda: len(windows(fed, "killed", "ck/replay")) >= 12, 30, "windows before the kill")
        await until(lambda: len(windows(fed, "killed", "ck/live")) >= 5, 30, "live windows before the kill")
        await asyncio.sleep(random.uniform(0.0, 0.3))
        edge.kill()
        before_kill = len(windows(fed, "killed", "ck/replay"))
        live_before = len(windows(fed, "killed", "ck/live"))
        assert before_kill < len(expected), "the replay ended before the kill: nothing was tested"
        edge = Edge(tmp_path, "killed", killed_store, fed, keys, csv)
        conn = await fed.connection("killed", newer_than=first, timeout=30)
        await until(lambda: len(windows(fed, "killed", "ck/replay")) >= len(expected), 40, "the restarted run")
        await until(lambda: len(windows(fed, "killed", "ck/live")) >= live_before + 5, 30, "live windows after")
        await until(lambda: any(f.t == "health" and f.get("autostart") for f in conn.frames), 10, "a health frame")
        health = [f for f in conn.frames if f.t == "health" and f.get("autostart")][-1]
        states = {q["query"]: q.get("checkpoint", "") for q in health["autostart"]}
        assert all(state.startswith("restored") for state in states.values()), states
    finally:
        edge.kill()
    assert windows(fed, "killed", "ck/replay") == expected          # the same windows, each once, in order
    live = windows(fed, "killed", "ck/live")
    assert all(len(window) == LIVE_SIZE for window in live)            # every window whole
    assert len({tuple(window) for window in live}) == len(live)        # none published twice
    seqs = [record["seq"] for record in fed.published["killed"]]
    assert seqs == sorted(set(seqs))

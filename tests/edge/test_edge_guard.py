"""The process guard with real processes (`streamql edge --watchdog`): a fragment that allocates past
the memory cap gets the daemon killed and restarted; it reconnects, health tells the restart and
its reason, the same statement is then refused for a while, other statements still run, and
SIGTERM stops the guard and its daemon within 10 s; the autostart query of a deployed bundle resumes
after the restart. Also the pieces: the write-ahead log of
running fragments and the quarantine."""
from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from edge_engine.guard import Quarantine, RunningLog
from edge_engine.testing import make_bundle, make_keys
from federation.app import create_app
from federation.auth import provision
from federation.config import FederationConfig
from federation.hub import EdgeOffline, FragmentError
from federation.keys import DEPLOYMENTS, HUB, REGISTRY
from streamql.models import read_bundle

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
HOG = "select dim(vectorof(signal_stream('hog')));"  # collects a signal that never ends
CAP_MB = 400
HOG_SIGNAL = '{"name": "hog", "kind": "callable", "function": "guard_hog:ones", "rate_hz": 20, "type": "Real"}'


def test_the_running_log_and_the_quarantine(tmp_path):
    log = RunningLog(tmp_path)
    log.started("q-1", "select 1;")
    log.started("q-2", HOG)
    log.ended("q-1")
    running = log.collect()
    assert [entry["qid"] for entry in running] == ["q-2"] and RunningLog(tmp_path).collect() == []
    now = [1000.0]
    quarantine = Quarantine(tmp_path, clock=lambda: now[0])
    assert quarantine.refuse(HOG) is None
    quarantine.add(running, 60, "memory: 500 MB resident passed the cap of 400 MB")
    reason = Quarantine(tmp_path, clock=lambda: now[0]).refuse(HOG)  # kept in the store
    assert "guard restarted the daemon (memory: 500 MB" in reason and "refused on this edge until" in reason
    assert quarantine.refuse("select 1;") is None
    now[0] += 61
    assert quarantine.refuse(HOG) is None and len(quarantine) == 0


def children_of(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def limit_memory() -> None:
    # the guard is what is tested: this only keeps a broken guard from taking the machine down
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


async def until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)


async def test_the_guard_restarts_a_daemon_past_its_memory_cap_and_quarantines_the_statement(tmp_path):
    client = TestClient(TestServer(create_app(FederationConfig(data_dir=tmp_path / "fed", announce=False,
                                                               heartbeat_s=1.0))))
    await client.start_server()
    hub, registry = client.app[HUB], client.app[REGISTRY]
    private, public = make_keys(tmp_path / "keys")
    bundle = make_bundle(tmp_path / "bundle", key=private, native=True)
    registry.add_bundle("vib", "1.0.0", bundle, read_bundle(bundle).manifest)
    token_file = tmp_path / "device.token"
    token_file.write_text(provision(registry, "wl-1").token + "\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(__file__).parent)])}
    log = open(tmp_path / "edge.log", "w")
    guard = subprocess.Popen(
        [sys.executable, "-m", "edge_engine", "--id", "wl-1", "--federation", str(client.make_url("/")),
         "--store", str(tmp_path / "store"), "--token-file", str(token_file), "--signal", HOG_SIGNAL,
         "--signal", "name=vibration,shape=sine,rate_hz=200,seed=3", "--trusted-key", str(public),
         "--watchdog", "--max-rss-mb", str(CAP_MB), "--guard-check-interval", "0.1", "--quarantine-s", "600",
         "--heartbeat", "0.5", "--reconnect-initial", "0.05", "--reconnect-max", "0.3", "--log-level", "warning",
         # the operator allows statements more memory than the process has: only the guard stops the hog
         "--limit-memory-mb", "100000"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit_memory)
    try:
        await until(lambda: hub.is_online("wl-1"), 30, "the guarded edge connecting")
        deployed = await client.app[DEPLOYMENTS].start("deploy", "vib", None, ["wl-1"], selection="true")
        assert (await client.app[DEPLOYMENTS].wait(deployed, 30))["state"] == "done"
        published = lambda: hub.publish_log.count(flow="vib/scores") if not hub._flush_publish() else 0  # noqa: E731
        await until(lambda: published() > 0, 20, "the autostart query publishing")
        first_child = children_of(guard.pid)
        restarts_before = hub.announced("wl-1")["restarts"]
        started = time.monotonic()
        with pytest.raises(EdgeOffline) as dropped:
            async for _ in hub.fragment("wl-1", HOG, limits={"memory_mb": 100_000}, credit=10):
                pass
        assert dropped.value.dropped and time.monotonic() - started < 60
        await until(lambda: hub.is_online("wl-1"), 30, "the restarted edge reconnecting")
        assert children_of(guard.pid) != first_child and guard.poll() is None
        assert hub.announced("wl-1")["restarts"] == restarts_before + 1
        await until(lambda: "guard" in (hub.announced("wl-1").get("health") or {}), 10, "health after the restart")
        health = hub.announced("wl-1")["health"]
        assert health["guard"]["restarts"] == 1 and f"passed the cap of {CAP_MB} MB" in health["guard"]["reason"]
        assert health["guard"]["quarantined"] == 1
        with pytest.raises(FragmentError) as refused:
            async for _ in hub.fragment("wl-1", HOG, limits={"memory_mb": 100_000}):
                pass
        assert refused.value.error["kind"] == "LimitError"
        assert "refused on this edge until" in refused.value.error["message"]
        rows = [r async for b in hub.fragment("wl-1", "select 1 + 1;") for r in b.rows()]
        assert rows == [2] and hub.is_online("wl-1")
        before = published()  # the autostart query resumed with the restarted daemon
        await until(lambda: published() > before, 20, "the autostart query publishing after the restart")
        await until(lambda: [a["status"] for a in hub.announced("wl-1")["health"]["autostart"]] == ["running"], 10,
                    "health telling the autostart query runs")
        child = children_of(guard.pid)
        stopping = time.monotonic()
        guard.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(asyncio.to_thread(guard.wait), 15) == 0
        assert time.monotonic() - stopping < 10
        assert child and not any(alive(pid) for pid in child)
    finally:
        if guard.poll() is None:
            for pid in children_of(guard.pid):
                os.kill(pid, signal.SIGKILL)
            guard.kill()
        guard.wait()
        log.close()
        await client.close()
        print((tmp_path / "edge.log").read_text()[-3000:])

"""Real daemon processes: kill -9 during deployments, a crash while offline, the command line."""
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_engine.daemon import CRASH_ENV
from edge_engine.store import EdgeStore
from edge_engine.testing import make_bundle

REPO = Path(__file__).resolve().parents[2]
VERSION = "select m_version(), predict('m', [0, 0, 0, 0]);"
VIBRATION = "name=vibration,shape=sine,rate_hz=200,noise=0.1,seed=3"


class EdgeProcess:
    """`python -m edge_engine …` as a child process."""

    def __init__(self, args, tmp_path, env=None):
        self.args, self.tmp_path = args, tmp_path
        self.log_path = tmp_path / f"edge-{random.randrange(1 << 30)}.log"
        environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "edge_engine", *args], cwd=REPO, env=environment,
                                        stdout=self.log, stderr=subprocess.STDOUT)

    async def wait(self, timeout=20.0) -> int:
        return await asyncio.wait_for(asyncio.to_thread(self.process.wait), timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def close(self):
        self.kill()
        self.log.close()


@pytest.fixture
def processes():
    started = []

    def start(args, tmp_path, env=None):
        process = EdgeProcess(args, tmp_path, env)
        started.append(process)
        return process
    yield start
    for process in started:
        process.close()


def edge_args(fed, store, keys, *extra):
    return ["--id", "wl-1", "--federation", fed.url, "--store", str(store), "--trusted-key", keys[1],
            "--signal", VIBRATION, "--ram-kb", "1024", "--heartbeat", "0.5", "--reconnect-initial", "0.05",
            "--reconnect-max", "0.3", "--log-level", "warning", *extra]


async def version_of(conn):
    rows, end = await conn.run_query(VERSION)
    assert end["outcome"] == "ok", end
    (name, out), = rows
    return name, float(out[1])


async def test_kill_9_during_a_deployment_leaves_the_old_or_the_new_version_never_a_mix(fed, tmp_path, keys,
                                                                                         processes):
    versions = {"1.0.0": 1.0, "2.0.0": 2.0}
    data = {v: make_bundle(tmp_path / "b", version=v, key=keys[0], bias=b) for v, b in versions.items()}
    store = tmp_path / "store"
    edge = processes(edge_args(fed, store, keys), tmp_path)
    conn = await fed.connection("wl-1", timeout=20)
    assert (await conn.deploy("d-0", data["1.0.0"], "vib", "1.0.0")).t == "ack"
    current, deployments = "1.0.0", 0

    async def restart_and_check(expected_options, crashed):
        nonlocal conn, edge
        assert await edge.wait() == -signal.SIGKILL, crashed
        edge = processes(edge_args(fed, store, keys), tmp_path)
        conn = await fed.connection("wl-1", newer_than=conn, timeout=20)
        active = conn.hello["models"].get("vib")
        assert active in expected_options, (crashed, active)
        assert await version_of(conn) == (active, versions[active]), crashed    # functions and model agree
        start = len(conn.frames)
        await conn.wait_for(lambda f: f.t == "publish", start=start, timeout=10)   # its queries run again
        state = EdgeStore(store).load_state()                                       # the store reads back
        assert state.bundles["vib"].active.version == active
        return active

    # at each step of an installation, by the daemon's own hand (SIGKILL at that point)
    for step, switched in (("built-scratch", False), ("bundle-written", False), ("before-switch", False),
                           ("after-switch", True)):
        edge.kill()
        edge = processes(edge_args(fed, store, keys), tmp_path, env={CRASH_ENV: step})
        conn = await fed.connection("wl-1", newer_than=conn, timeout=20)
        target = "2.0.0" if current == "1.0.0" else "1.0.0"
        deployments += 1
        await conn.deploy(f"d-{deployments}", data[target], "vib", target, wait=False)
        current = await restart_and_check({target} if switched else {current}, step)
    # and at random moments, from outside
    rng = random.Random(6)
    for attempt in range(3):
        target = "2.0.0" if current == "1.0.0" else "1.0.0"
        deployments += 1
        await conn.deploy(f"d-{deployments}", data[target], "vib", target, wait=False)
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        edge.kill()
        current = await restart_and_check({current, target}, f"random kill {attempt}")


async def test_buffered_results_survive_a_crash_while_offline(fed, tmp_path, keys, processes):
    counter = make_bundle(tmp_path, name="count", key=keys[0], requirements={}, autostart={
        "autostart/counter.sql": "select stream of x from Integer x where x in diota(0.002, 1, 1000000);\n"})
    store = tmp_path / "store"
    edge = processes(edge_args(fed, store, keys), tmp_path)
    conn = await fed.connection("wl-1", timeout=20)
    assert (await conn.deploy("d-1", counter, "count", "1.0.0")).t == "ack"
    deadline = asyncio.get_running_loop().time() + 10
    while len(fed.values("wl-1")) < 100:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    received = len(fed.values("wl-1"))
    await fed.stop()
    await asyncio.sleep(0.8)                  # results pile up in the buffer …
    edge.kill()                               # … and the device dies
    edge = processes(edge_args(fed, store, keys), tmp_path)
    await asyncio.sleep(0.5)
    await fed.start()
    conn = await fed.connection("wl-1", newer_than=conn, timeout=20)
    resume = conn.hello["resume"]
    assert resume["last"] > resume["first"] and resume["dropped"] == 0
    deadline = asyncio.get_running_loop().time() + 15
    while fed.receiver.last("wl-1") < resume["last"]:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    seqs = [r["seq"] for r in fed.published["wl-1"]]
    assert seqs == list(range(1, len(seqs) + 1)) and fed.receiver.missing("wl-1") == 0
    values = fed.values("wl-1")
    restart = values.index(1, 1)               # the restarted query counts from 1 again
    assert values[:restart] == list(range(1, restart + 1))          # the first life: complete, in order
    assert restart > received                  # including what was buffered offline and across the crash
    assert values[restart:] == list(range(1, len(values) - restart + 1))


def test_the_command_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    shown = subprocess.run([sys.executable, "-m", "edge_engine", "--id", "x-1", "--store", str(tmp_path),
                            "--meta", "region=EU", "--print-config"], capture_output=True, text=True, env=env,
                           timeout=60)
    assert shown.returncode == 0 and json.loads(shown.stdout)["metadata"] == {"region": "EU"}
    bad = subprocess.run([sys.executable, "-m", "streamql.cli", "edge", "--id", "x-1", "--heartbeat", "-1"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "heartbeat_s" in bad.stderr
    keyless = subprocess.run([sys.executable, "-m", "edge_engine", "--id", "x-1", "--store", str(tmp_path / "s"),
                              "--trusted-key", str(tmp_path / "missing.pub")], capture_output=True, text=True,
                             env=env, timeout=60)
    assert keyless.returncode == 2 and "trusted_keys[0]" in keyless.stderr


async def test_a_simulated_fleet_process_connects_and_stops_cleanly(fed, tmp_path, processes):
    edge = processes(["--simulate", "6", "--federation", fed.url, "--store", str(tmp_path / "sim"), "--seed", "3",
                      "--heartbeat", "0.5", "--log-level", "warning"], tmp_path)
    conns = []
    from edge_engine.simulate import fleet_identities
    for identity in fleet_identities(6, 3):
        conns.append(await fed.connection(identity.id, timeout=30))
    assert {c.hello["metadata"]["kind"] for c in conns} == {"wheel loader", "dumper", "excavator"}
    deadline = time.monotonic() + 20
    while True:   # the first reading arrives a batch interval after the start: until then, no value
        rows, end = await conns[0].run_query("select signal_value('engine_speed');")
        if rows != [None] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert len(rows) == 1 and 600 <= rows[0] <= 2400
    edge.process.send_signal(signal.SIGTERM)
    assert await edge.wait() == 0, edge.output()
    for conn in conns:
        await asyncio.wait_for(conn.closed.wait(), 5)
        assert conn.ws.close_code == 1001
    assert sorted(p.name for p in (tmp_path / "sim").iterdir()) == sorted(c.edge for c in conns)


async def test_a_real_daemon_answers_hostile_frames_and_stops_only_the_query_past_its_limits(fed, tmp_path, keys,
                                                                                             processes):
    from test_edge_link import HOSTILE

    edge = processes(edge_args(fed, tmp_path / "store", keys), tmp_path)
    conn = await fed.connection("wl-1", timeout=30)
    steady = await conn.start_query("select stream of x from Real x where x in signal_stream('vibration');")
    for data, code, ref in HOSTILE:                    # garbage, wrong types, huge claims, deep nesting
        start = len(conn.frames)
        await conn.send_raw(data)
        error = await conn.next("error", start=start)
        assert error["code"] == code, (data[:40], error)
    big = await conn.start_query("select x, count(*) from Integer x where x in iota(1, 5000000) group by x;",
                                 limits={"memory_mb": 4})
    end = await conn.next("end", qid=big, start=0, timeout=30)
    assert end["outcome"] == "limit" and "memory limit" in end["error"]["message"], end
    rows, end = await conn.run_query("select 40 + 2;")
    assert rows == [42] and end["outcome"] == "ok"
    assert not conn.of_type("end", qid=steady)         # the stream went on through all of it
    assert conn is fed.connections["wl-1"] and edge.process.poll() is None, edge.output()


async def test_sigterm_stops_a_daemon_within_10_s_even_with_statements_running(fed, tmp_path, keys, processes):
    edge = processes(edge_args(fed, tmp_path / "store", keys), tmp_path)
    conn = await fed.connection("wl-1", timeout=30)
    await conn.start_query("select stream of x from Real x where x in signal_stream('vibration');", credit=1)
    # counting two trillion streams through the bag: busy for hours, within any memory limit
    busy = await conn.start_query("select count(iota(1, 2000000000000));")
    await asyncio.sleep(0.5)
    assert not conn.of_type("end", qid=busy)  # still counting
    started = asyncio.get_running_loop().time()
    edge.process.send_signal(signal.SIGTERM)
    code = await edge.wait(15)
    assert asyncio.get_running_loop().time() - started < 10 and code in (0, 1), (code, edge.output())


async def test_sigterm_stops_a_daemon_within_10_s_even_when_its_event_loop_is_stuck(fed, tmp_path, keys, processes):
    stall = '{"name": "stall", "kind": "callable", "function": "guard_hog:stall_after_a_second", "rate_hz": 20}'
    edge = processes(edge_args(fed, tmp_path / "store", keys, "--signal", stall), tmp_path,
                     env={"PYTHONPATH": os.pathsep.join([str(REPO), str(Path(__file__).parent)])})
    await fed.connection("wl-1", timeout=30)
    await asyncio.sleep(2.0)  # the sensor has hung the loop by now
    started = asyncio.get_running_loop().time()
    edge.process.send_signal(signal.SIGTERM)
    code = await edge.wait(15)
    assert asyncio.get_running_loop().time() - started < 10 and code == 1, (code, edge.output())
    assert "did not stop within" in edge.output()

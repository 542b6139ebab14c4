"""Edge daemon footprint: idle memory, cold start to connected, memory per simulated edge.

Every daemon runs as a real child process (`streamql edge …`, the fleet `streamql edge --simulate N`)
against a fake federation
(`edge_engine.testing.FakeFederation`, in this process, on 127.0.0.1), and is measured from
outside through /proc. Baselines in the same run: a bare Python with numpy imported (memory),
the time to import the daemon's modules (start-up), and one simulated edge (per-edge memory).
Children keep compiled bytecode in a temporary directory, as an installed package does (start-up
without it, which this environment's PYTHONDONTWRITEBYTECODE causes, is reported too).

Targets: idle daemon ≤ 80 MB resident with numpy; cold start to connected ≤ 1 s.

    /work/venv/bin/python bench/bench_edge.py [--edges 100] [--starts 5] [--settle 3]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, machine, table  # noqa: E402
from edge_engine.testing import FakeFederation, make_bundle, make_keys  # noqa: E402

SIGNALS = ["name=vibration,shape=sine,rate_hz=1000,frequency_hz=12.5,amplitude=0.8,noise=0.2,seed=1",
           "name=outside_temperature,shape=walk,rate_hz=1,offset=-24,amplitude=4,seed=2"]


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CHILD_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def use_bytecode_cache(directory: Path) -> None:
    """Let the children keep compiled bytecode (in `directory`, not the repository), as an
    installed package has it; this environment may set PYTHONDONTWRITEBYTECODE."""
    CHILD_ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    CHILD_ENV["PYTHONPYCACHEPREFIX"] = str(directory)
    # everything a daemon may import, LiteRT's large flatbuffer schema included: compiling that at
    # the first deployment would show up as memory that an installed package never spends
    subprocess.run([sys.executable, "-c", "import streamql.cli, edge_engine.daemon, edge_engine.simulate, "
                    "streamql.engine, streamql.models, streamql.models.tflite, edge_engine.cli, zipfile; "
                    "import ai_edge_litert.interpreter, ai_edge_litert.schema_py_generated; "
                    "from streamql.models import signing; "
                    "from cryptography.hazmat.primitives import serialization"],
                   cwd=ROOT, env=CHILD_ENV, check=True)


def spawn(args: list[str], log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=CHILD_ENV, stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def baseline_rss_mb() -> float:
    """A bare Python with numpy imported, measured the same way."""
    process = subprocess.Popen([sys.executable, "-c", "import numpy, sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    time.sleep(1.5)
    rss = status_kb(process.pid, "VmRSS") / 1024
    process.stdin.close()
    process.wait()
    return rss


def import_time_s() -> float:
    """How long starting Python and importing the daemon's modules takes (no store, no link)."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import streamql.cli, edge_engine.daemon, streamql.engine"], cwd=ROOT,
                       env=CHILD_ENV, check=True)
        times.append(time.perf_counter() - start)
    return min(times)


async def settle(pid: int, seconds: float) -> tuple[float, float]:
    """(resident MB, CPU % of one core) after `seconds` of idling."""
    before, started = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    cpu = 100 * (cpu_seconds(pid) - before) / (time.monotonic() - started)
    return status_kb(pid, "VmRSS") / 1024, cpu


async def single_daemon(fed: FakeFederation, work: Path, settle_s: float, starts: int, log,
                        measure: bool = True) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    priv, pub = make_keys(work)
    bundle = make_bundle(work / "bundle", name="vib", key=priv)
    args = ["-m", "streamql.cli", "edge", "--id", "bench-1", "--federation", fed.url, "--trusted-key", pub,
            "--ram-kb", "524288", "--heartbeat", "5", "--log-level", "warning"]
    for spec in SIGNALS:
        args += ["--signal", spec]
    cold = []
    out: dict = {}
    for attempt in range(starts):
        store = work / f"store-{attempt}"
        conn = None
        began = time.perf_counter()
        process = spawn(args + ["--store", str(store)], log)
        try:
            conn = await fed.connection("bench-1", timeout=30,
                                        newer_than=fed.connections.get("bench-1"))
            cold.append(time.perf_counter() - began)
            if attempt == 0 and measure:
                out["idle_rss"], out["idle_cpu"] = await settle(process.pid, settle_s)
                answer = await conn.deploy("d-1", bundle, "vib", "1.0.0")
                assert answer.t == "ack", answer
                out["model_rss"], out["model_cpu"] = await settle(process.pid, settle_s)
                out["model_hwm"] = status_kb(process.pid, "VmHWM") / 1024
        finally:
            stop(process)
            if conn is not None:
                await conn.closed.wait()
    if not measure:
        return {"cold": cold}
    # the same store again: the bundle restored at start (one engine, no deployment work)
    process = spawn(args + ["--store", str(work / "store-0")], log)
    try:
        conn = await fed.connection("bench-1", timeout=30, newer_than=fed.connections.get("bench-1"))
        assert conn.hello["models"] == {"vib": "1.0.0"}
        out["restored_rss"], out["restored_cpu"] = await settle(process.pid, settle_s)
    finally:
        stop(process)
        await conn.closed.wait()
    out["cold"] = cold
    return out


async def fleet(fed: FakeFederation, work: Path, n: int, settle_s: float, log) -> tuple[float, float, float]:
    """(resident MB, CPU %, seconds until all connected) of a process running n simulated edges."""
    from edge_engine.simulate import fleet_identities
    began = time.perf_counter()
    process = spawn(["-m", "streamql.cli", "edge", "--simulate", str(n), "--federation", fed.url, "--store",
                     str(work / f"fleet-{n}"), "--heartbeat", "5", "--log-level", "warning", "--seed", str(n)], log)
    try:
        for identity in fleet_identities(n, n):
            await fed.connection(identity.id, timeout=120)
        connected = time.perf_counter() - began
        rss, cpu = await settle(process.pid, settle_s)
        return rss, cpu, connected
    finally:
        stop(process)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=100)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--settle", type=float, default=3.0)
    options = parser.parse_args()
    import logging
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    print(f"edge daemon benchmark — {machine()}")
    base = baseline_rss_mb()
    fed = FakeFederation(heartbeat_s=5.0)
    await fed.start()
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp, open(Path(tmp) / "edges.log", "w") as log:
        work = Path(tmp)
        imports_uncached = import_time_s()
        cold_uncached = (await single_daemon(fed, work / "uncached", options.settle, 3, log, measure=False))["cold"]
        use_bytecode_cache(work / "pycache")
        imports = import_time_s()
        single = await single_daemon(fed, work, options.settle, options.starts, log)
        one_rss, one_cpu, _ = await fleet(fed, work, 1, options.settle, log)
        many_rss, many_cpu, many_connect = await fleet(fed, work, options.edges, options.settle, log)
    await fed.stop()
    cold = single["cold"]
    per_edge = (many_rss - one_rss) / max(1, options.edges - 1)
    print(table("\nmemory (resident, after idling)", [
        ("python + numpy (baseline)", f"{base:.1f} MB", "1.00×"),
        ("idle daemon, 2 signals (1 kHz + 1 Hz)", f"{single['idle_rss']:.1f} MB", f"{single['idle_rss'] / base:.2f}×"),
        ("… after deploying a TFLite model bundle (autostart query scoring)",
         f"{single['model_rss']:.1f} MB (peak {single['model_hwm']:.1f})", f"{single['model_rss'] / base:.2f}×"),
        ("… restarted with that bundle restored", f"{single['restored_rss']:.1f} MB",
         f"{single['restored_rss'] / base:.2f}×"),
    ], ("process", "resident", "vs baseline")))
    print(f"target ≤ 80 MB idle: {'met' if single['idle_rss'] <= 80 else 'MISSED'}; "
          f"CPU while idle {single['idle_cpu']:.1f} % of a core (1 kHz signal), "
          f"{single['model_cpu']:.1f} % with the model scoring every window")
    print(table("\ncold start: `streamql edge` launched → welcomed by the federation", [
        ("python + import of the daemon's modules (baseline)", f"{imports * 1000:.0f} ms", "1.00×"),
        ("cold start to connected, median", f"{statistics.median(cold) * 1000:.0f} ms",
         f"{statistics.median(cold) / imports:.2f}×"),
        ("cold start to connected, best", f"{min(cold) * 1000:.0f} ms", f"{min(cold) / imports:.2f}×"),
        ("without bytecode cache: imports", f"{imports_uncached * 1000:.0f} ms", f"{imports_uncached / imports:.2f}×"),
        ("without bytecode cache: to connected, median", f"{statistics.median(cold_uncached) * 1000:.0f} ms",
         f"{statistics.median(cold_uncached) / imports:.2f}×"),
    ], ("", "time", "vs baseline")))
    print(f"target ≤ 1 s: {'met' if statistics.median(cold) <= 1.0 else 'MISSED'} ({len(cold)} starts)")
    print(table(f"\n{options.edges} simulated edges in one process", [
        ("1 simulated edge (baseline)", f"{one_rss:.1f} MB", f"{one_cpu:.1f} %"),
        (f"{options.edges} simulated edges", f"{many_rss:.1f} MB", f"{many_cpu:.1f} %"),
        ("per additional edge", f"{per_edge * 1024:.0f} KB", f"{(many_cpu - one_cpu) / max(1, options.edges - 1):.2f} %"),
    ], ("process", "resident", "CPU of one core")))
    print(f"all {options.edges} connected {many_connect:.2f} s after launch")


if __name__ == "__main__":
    asyncio.run(main())

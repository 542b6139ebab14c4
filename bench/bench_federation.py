"""The federation's edge hub on loopback with many simulated edges.

A real federation (aiohttp app, SQLite registry, the hub and the deployer) runs in this process;
the simulated edges (federation.testing.FakeEdge, speaking docs/protocol.md with streamql.wire)
run in a second process, so the hub has a core of its own. Measured:

1. connecting N edges (hello → welcome);
2. a fan-out fragment to every edge: time to the first row and to all rows (every edge's `end`);
   the same as a fleet query through POST /v1/query; and a grouped cross-edge aggregate
   (`select region(e), count(x), avg(x), stdev(x), max(x) … group by region(e)`, split into
   partial aggregates on the edges and merged at the federation): median latency (target
   ≤ 500 ms for 1,000 edges) and the share spent planning, fanning out and merging;
3. result rows merged per second through the hub (target ≥ 200,000), fragments of many rows;
4. a 100 KB bundle deployed to every edge (target ≤ 10 s), each acking after its chunk arrives;
5. every edge publishing R rows/s for S seconds with zero loss: every record kept exactly once,
   each edge's buffer fully acknowledged (the ISSUE's figure is 1,000 edges × 10 rows/s × 60 s).

    /work/venv/bin/python bench/bench_federation.py [--edges 1000] [--publish-seconds 60]
        [--publish-rate 10] [--merge-rows 2000000] [--fanout-rows 100] [--keep]
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, peak_rss_mb, table  # noqa: E402

CAPABILITIES = {"ram_kb": 65536, "runtimes": {"numpy": "2.1"}, "signals": [{"name": "vibration", "type": "Real"}]}


# --- the edge process ---------------------------------------------------------------------------
def _columns(n: int):
    import numpy as np
    return [np.arange(n, dtype=np.int64), np.linspace(0.0, 1.0, n)]


def edge_process(conn, url: str, devices: list[tuple[str, str]]) -> None:
    """Simulated edges: connect, answer fragments, ack deployments, publish on command."""
    asyncio.run(_edge_main(conn, url, devices))


async def _edge_main(conn, url: str, devices: list[tuple[str, str]]) -> None:
    import aiohttp

    from federation.testing import FakeEdge

    cache: dict[tuple[int, int], list] = {}
    answers: dict[str, list] = {}
    engine = _edge_engine()

    def answer(source: str, frame):
        match = re.search(r"rows=(\d+) batch=(\d+)", source)
        fleet = re.search(r"iota\(1, (\d+)\)", source)
        if not match and not fleet:
            # any other fragment runs on a real engine with the edges' signal, once: every edge
            # answers alike, and real edges run their fragments in parallel, each on its own device
            if source not in answers:
                result = engine.query(source)
                answers[source] = [(item.n if type(item) is not dict else 1,
                                    [item[f"$c{i}"] if type(item) is not dict else [item[f"$c{i}"]]
                                     for i in range(len(result.columns))]) for item in result.items()]
            return iter(answers[source])
        if match:
            n, batch = int(match.group(1)), int(match.group(2))
        else:   # a fleet query's fragment, `select i, x … where i in iota(1, N) …`: N rows (Integer, Real)
            n, batch = int(fleet.group(1)), 1024
        key = (n, batch)
        if key not in cache:
            cols = _columns(batch)
            cache[key] = [(min(batch, n - i), [c[:min(batch, n - i)] for c in cols]) for i in range(0, n, batch)]
        return iter(cache[key])

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    edges = [FakeEdge(url, token, edge_id, capabilities=CAPABILITIES, answer=answer, session=session,
                      keep_frames=False) for edge_id, token in devices]
    loop = asyncio.get_running_loop()
    try:
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            name = command[0]
            if name == "connect":
                start = time.perf_counter()
                slots = asyncio.Semaphore(100)

                async def one(edge):
                    async with slots:
                        welcome = await edge.connect()
                        assert welcome["accepted"], welcome

                await asyncio.gather(*(one(e) for e in edges))
                conn.send(("connected", time.perf_counter() - start))
            elif name == "publish":
                rate, seconds = command[1], command[2]
                start = time.perf_counter()
                await asyncio.gather(*(_publish(edge, rate, seconds, i / len(edges)) for i, edge in enumerate(edges)))
                sent_done = time.perf_counter() - start
                deadline = time.monotonic() + 60
                while any(e.buffer for e in edges) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                conn.send(("published", sum(e.next_seq - 1 for e in edges), sum(len(e.buffer) for e in edges),
                           sent_done, time.perf_counter() - start, time.process_time()))
            elif name == "cpu":
                conn.send(("cpu", time.process_time()))
            elif name == "installed":
                conn.send(("installed", sum(len(e.installed) for e in edges)))
            elif name == "close":
                break
    finally:
        for edge in edges:
            await edge.close()
        await session.close()
        conn.send(("closed",))


def _edge_engine():
    """The engine the simulated edges' fragments run on: a `vibration` signal of 1,000 readings."""
    import numpy as np

    import streamql
    engine = streamql.Engine(seed=1)
    engine.add_signal("vibration", np.random.default_rng(3).normal(size=1000), type="Real")
    return engine


async def _publish(edge, rate: float, seconds: float, phase: float) -> None:
    """One row every 1/rate seconds (a record per row), on a fixed schedule."""
    period = 1.0 / rate
    await asyncio.sleep(phase * period)
    start = time.monotonic()
    count = int(rate * seconds)
    for i in range(count):
        edge.publish("bench", [float(i)])
        delay = start + (i + 1) * period - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


# --- the federation process ---------------------------------------------------------------------
async def main(args) -> None:
    from aiohttp import web

    from federation.app import create_app
    from federation.auth import provision_many
    from federation.config import FederationConfig
    from federation.hub import EdgeOffline
    from federation.keys import BOOTSTRAP_TOKEN, DEPLOYMENTS, HUB, REGISTRY
    from federation.testing import make_bundle
    from streamql.models import keygen, read_bundle

    tmp = Path(tempfile.mkdtemp(prefix="bench-federation-"))
    private, public = keygen(tmp / "release")
    config = FederationConfig(data_dir=tmp / "fed", announce=False, trusted_keys=[public], heartbeat_s=30.0)
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    registry, hub = app[REGISTRY], app[HUB]
    ids = [f"edge-{i:04d}" for i in range(args.edges)]
    tokens = provision_many(registry, [(i, {"region": ("US", "EU", "AU")[n % 3]}, {}) for n, i in enumerate(ids)])

    parent, child = mp.Pipe()
    process = mp.get_context("spawn").Process(target=edge_process, args=(child, url, tokens), daemon=True)
    process.start()
    results = []
    print(f"StreamQL federation hub benchmark — {machine()}")
    print(f"{args.edges} simulated edges in a second process, loopback, data in {tmp}\n")
    loop = asyncio.get_running_loop()

    async def ask(*command):
        parent.send(command)
        return await loop.run_in_executor(None, parent.recv)

    try:
        _, seconds = await ask("connect")
        assert len(hub.online_ids()) == args.edges
        results.append((f"connect {args.edges} edges (hello → welcome)", f"{seconds:.2f} s",
                        f"{args.edges / seconds:,.0f} edges/s", ""))

        # fan-out: one fragment to every edge, merged into one stream
        for label, rows_each, batch in (("fan-out", args.fanout_rows, 1024),):
            source = f"bench rows={rows_each} batch={batch}"
            first, total, seconds, failures = await fan_out(hub, ids, source, EdgeOffline)
            results.append((f"{label}: {rows_each} rows from each of {args.edges} edges",
                            f"first row {first * 1000:.1f} ms", f"all rows {seconds * 1000:.0f} ms",
                            f"{total:,} rows, {failures} failed"))

        # the same fan-out as a fleet query through the HTTP API: planning, fragments, merge, NDJSON
        query = (f"select id(e), i, x from Edge e, Integer i, Real x "
                 f"where i in iota(1, {args.fanout_rows})@e and x = i * 0.5;")
        first, rows, seconds, status = await http_fan_out(url, app[BOOTSTRAP_TOKEN], query)
        answered = status["status"]["counts"].get("answered", 0)
        results.append((f"fan-out query via POST /v1/query: {args.fanout_rows} rows from each of {args.edges} edges",
                        f"first row {first * 1000:.1f} ms", f"all rows {seconds * 1000:.0f} ms",
                        f"{rows:,} NDJSON rows, {answered} devices answered"))

        # a grouped aggregate across the fleet: partials on the edges, merged here
        grouped = ("select region(e), count(x), avg(x), stdev(x), max(x) from Edge e, Real x "
                   "where x in vectorof(first_n(signal_stream('vibration'), 100))@e group by region(e);")
        await http_fan_out(url, app[BOOTSTRAP_TOKEN], grouped)      # the edges compute their answer once
        runs = []
        for _ in range(args.aggregate_runs):
            _, rows, seconds, last = await http_fan_out(url, app[BOOTSTRAP_TOKEN], grouped)
            timings = last["status"].get("timings_ms", {})
            runs.append((seconds, timings, rows, last["status"]["counts"].get("answered", 0)))
        runs.sort(key=lambda r: r[0])
        seconds, timings, rows, answered = runs[len(runs) // 2]
        parts = {k: timings.get(k, 0.0) for k in ("plan", "fan_out", "merge")}
        results.append((f"grouped aggregate over {args.edges} edges (median of {len(runs)})",
                        f"{seconds * 1000:.0f} ms", f"target ≤ 500 ms; {rows} groups, {answered} answered",
                        f"plan {parts['plan']:.1f} ms ({parts['plan'] / 10 / seconds:.0f}%), fan-out "
                        f"{parts['fan_out']:.0f} ms ({parts['fan_out'] / 10 / seconds:.0f}%), merge "
                        f"{parts['merge']:.1f} ms ({parts['merge'] / 10 / seconds:.0f}%); the rest: HTTP, "
                        f"statement pool, NDJSON"))

        # merge throughput: fragments of many rows from a few edges and from all of them
        for edges_used, as_rows in ((args.merge_edges, False), (args.edges, False), (args.edges, True)):
            rows_each = max(1, args.merge_rows // edges_used)
            source = f"bench rows={rows_each} batch=1024"
            _, total, seconds, failures = await fan_out(hub, ids[:edges_used], source, EdgeOffline, as_rows)
            how = "as Python rows" if as_rows else "as batches"
            results.append((f"merge {how}: {rows_each:,} rows from each of {edges_used} edges",
                            f"{total / seconds:,.0f} rows/s", f"{seconds:.2f} s",
                            f"target ≥ 200,000 rows/s; {failures} failed"))

        # a 100 KB bundle to every edge
        data = make_bundle(tmp / "bundles", "vib", "1.0.0", private_key=private, padding=100_000)
        registry.add_bundle("vib", "1.0.0", data, read_bundle(data).manifest)
        manager = app[DEPLOYMENTS]
        start = time.perf_counter()
        did = await manager.start("deploy", "vib", None, ids, selection="true")
        progress = await manager.wait(did, 120)
        seconds = time.perf_counter() - start
        (_, installed) = await ask("installed")
        results.append((f"deploy a {len(data) / 1024:.0f} KB bundle to {args.edges} edges", f"{seconds:.2f} s",
                        f"state {progress['state']}, done {progress['counts']['done']}",
                        f"target ≤ 10 s; {installed} installed"))

        # publish with zero loss
        log = hub.publish_log
        before = log.count()
        rss_before = peak_rss_mb()
        cpu_before = time.process_time()
        (_, edge_cpu_before) = await ask("cpu")
        _, sent, unacked, send_seconds, seconds, edge_cpu = await ask("publish", args.publish_rate, args.publish_seconds)
        cpu = time.process_time() - cpu_before
        await asyncio.sleep(0.3)
        kept = log.count() - before
        per_edge = dict(log._conn.execute("SELECT edge, count(DISTINCT seq) FROM published GROUP BY edge"))
        distinct = sum(per_edge.values())
        duplicates_kept = kept - distinct
        missing = sum(log.missing(e) for e in ids)
        lost = sent - kept
        results.append((f"publish: {args.edges} edges × {args.publish_rate:g} rows/s × {args.publish_seconds:g} s",
                        f"{sent:,} sent, {kept:,} kept", f"lost {lost}, duplicates kept {duplicates_kept}",
                        f"unacked at the end {unacked}; {kept / send_seconds:,.0f} records/s; "
                        f"all acked after {seconds:.1f} s; gaps {missing}"))
        results.append(("CPU while publishing", f"federation {cpu / seconds:.0%} of a core",
                        f"edges {(edge_cpu - edge_cpu_before) / seconds:.0%} of a core", ""))
        results.append(("peak memory of the federation process", f"{peak_rss_mb():.0f} MB",
                        f"(before publishing {rss_before:.0f} MB)", ""))
    finally:
        parent.send(("close",))
        await loop.run_in_executor(None, parent.recv)
        process.join(10)
        await runner.cleanup()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(table("Results", results, ("what", "figure", "figure", "notes")))


async def fan_out(hub, ids: list[str], source: str, offline_error, as_rows: bool = False) -> tuple[float, int, float, int]:
    """One fragment on every edge, consumed concurrently: (first row s, rows, all rows s, failures).
    With `as_rows`, every batch is turned into Python rows (tuples of plain values) as a merge would."""
    start = time.perf_counter()
    first = None
    total = 0
    failures = 0
    merged: list = []

    async def one(edge_id: str):
        nonlocal first, total, failures
        try:
            async for batch in hub.fragment(edge_id, source, credit=8192):
                if first is None:
                    first = time.perf_counter() - start
                if as_rows:
                    merged.extend(batch.rows())
                    if len(merged) > 100_000:
                        merged.clear()
                total += batch.n
        except Exception:  # noqa: BLE001 - counted
            failures += 1

    await asyncio.gather(*(one(e) for e in ids))
    return first or 0.0, total, time.perf_counter() - start, failures


async def http_fan_out(url: str, token: str, query: str) -> tuple[float, int, float, dict]:
    """POST a fleet query and read its NDJSON: (first row s, rows, all rows s, the status line)."""
    import json

    import aiohttp

    start = time.perf_counter()
    first, rows, status = None, 0, {}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/query", json={"query": query},
                                headers={"Authorization": f"Bearer {token}", "Accept": "application/x-ndjson"}) as resp:
            assert resp.status == 200, await resp.text()
            async for line in resp.content:
                if first is None:
                    first = time.perf_counter() - start
                if line.startswith(b"["):
                    rows += 1
                else:
                    status = json.loads(line)
    return first or 0.0, rows, time.perf_counter() - start, status


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=1000)
    parser.add_argument("--fanout-rows", type=int, default=100, help="rows each edge returns in the fan-out")
    parser.add_argument("--merge-rows", type=int, default=2_000_000, help="rows in total for the merge figure")
    parser.add_argument("--merge-edges", type=int, default=10, help="edges of the first merge figure")
    parser.add_argument("--publish-rate", type=float, default=10.0, help="rows per second per edge")
    parser.add_argument("--publish-seconds", type=float, default=60.0)
    parser.add_argument("--aggregate-runs", type=int, default=9, help="runs of the grouped aggregate (median)")
    parser.add_argument("--keep", action="store_true", help="keep the federation's data directory")
    asyncio.run(main(parser.parse_args()))

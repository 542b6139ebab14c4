"""Scale benchmark: thousands of simulated edges on one federation node, as the user runs them.

    PYTHONPATH=. python bench/bench_scale.py --edges 1000,10000 [--transport embedded|nats]

For each fleet size: `streamql federation` and `streamql edge --simulate N --processes K` (real
processes on loopback; the simulator provisions its tokens in batches), then
1. connect time: from the simulator's start (provisioning included) until every edge is online;
2. fan-out: `select id(e), signal_value('battery')@e from Edge e;` — first row and all rows, every
   value checked against the simulation function (an oracle; a wrong value fails the run);
3. a grouped cross-edge aggregate (`… where signal_value('battery')@e < 20 group by region(e)`),
   its counts checked against the oracle's bounds per region;
4. deployment of a signed 100 KB bundle to every edge (`deploy model … over waves of 100 percent`);
5. the federation's resident memory per connected edge (RSS with the fleet connected minus RSS
   before the simulator started, over N);
6. graceful stop: SIGTERM with every edge connected, seconds until the federation exited, and
   the registry after it (devices, online, integrity); then the simulator's stop.

`--transport nats` is the second column ("NATS, two nodes"): it runs once the NATS transport
(federation/nats_*.py) is there, and says it is skipped until then. Report the load average with
the figures: the box is shared.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine, table  # noqa: E402
from scale_fleet import ScaleFleet, low_battery_bounds, oracle_battery  # noqa: E402


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def run_size(edges: int, args, work: Path) -> list[tuple]:
    from edge_engine.simulate import fleet_identities
    from streamql.models import keygen

    rows: list[tuple] = []
    private, public = keygen(work / "release")
    processes = args.processes or max(1, min(4, edges // 2500 + 1))
    fleet = ScaleFleet(work / "fleet", edges=edges, processes=processes, heartbeat_s=args.heartbeat, seed=args.seed,
                       trusted_key=public, federation_args=["--device-timeout", str(args.device_timeout)])
    identities = fleet_identities(edges, args.seed)
    label = f"{edges:,} edges"
    try:
        fleet.start_federation()
        time.sleep(1.0)
        rss_empty = fleet.federation_rss_kb() or 0
        began = time.monotonic()
        fleet.start_simulator()
        seconds = fleet.wait_connected(args.connect_timeout, since=began)
        if seconds is None:
            rows.append((label, "connect: all online", f"NOT in {args.connect_timeout:.0f} s "
                         f"({fleet.connected():,} online)", f"{processes} simulator processes; load {load()}"))
            return rows
        rows.append((label, "connect: all online (provisioning included)", f"{seconds:.1f} s",
                     f"{edges / seconds:,.0f} edges/s; {processes} simulator processes; load {load()}"))
        time.sleep(args.settle)
        rss = fleet.federation_rss_kb() or 0
        rows.append((label, "federation RSS per connected edge", f"{(rss - rss_empty) / edges:.1f} KiB",
                     f"RSS {rss / 1024:.0f} MiB connected, {rss_empty / 1024:.0f} MiB empty; heartbeat "
                     f"{args.heartbeat:g} s"))

        t0 = time.time()
        first, answer, total, status = fleet.query("select id(e), signal_value('battery')@e from Edge e;")
        t1 = time.time()
        possible = oracle_battery(identities, t0, t1)
        wrong = sum(1 for edge, value in answer if value not in possible.get(edge, ()))
        counts = status.get("status", {}).get("counts")
        rows.append((label, "fan-out: signal_value@e of every edge", f"first row {first * 1000:.0f} ms",
                     f"all rows {total * 1000:.0f} ms; {len(answer):,} rows, {wrong} differ from the oracle; "
                     f"{counts}; load {load()}"))
        if wrong:
            raise SystemExit(f"{wrong} fan-out values differ from the oracle")

        t0 = time.time()
        _, groups, total, status = fleet.query("select region(e), count(e) from Edge e "
                                               "where signal_value('battery')@e < 20 group by region(e);")
        t1 = time.time()
        bounds = low_battery_bounds(identities, oracle_battery(identities, t0, t1))
        counted = dict((region, count) for region, count in groups)
        outside = [r for r, (low, high) in bounds.items() if not low <= counted.get(r, 0) <= high]
        rows.append((label, "grouped aggregate across the fleet", f"{total * 1000:.0f} ms",
                     f"{len(groups)} groups, {sum(counted.values())} low batteries; oracle "
                     f"{'agrees' if not outside else 'DISAGREES: ' + ', '.join(outside)}; "
                     f"{status.get('status', {}).get('counts')}; load {load()}"))
        if outside:
            raise SystemExit(f"the grouped aggregate differs from the oracle in {outside}")

        if not args.no_deploy:
            rows.append(deploy(fleet, work, private, edges, label, args))

        seconds, code = fleet.stop_federation(timeout=60)
        state = fleet.registry_state()
        rows.append((label, "graceful stop (SIGTERM, all connected)",
                     "killed after 60 s" if seconds is None else f"{seconds:.2f} s",
                     f"exit {code}; registry {state}; load {load()}"))
        seconds, code = fleet.stop_simulator(timeout=60)
        rows.append((label, "simulator stop (SIGTERM)", "killed" if seconds is None else f"{seconds:.2f} s",
                     f"exit {code}"))
        return rows
    finally:
        fleet.close()


def deploy(fleet: ScaleFleet, work: Path, private, edges: int, label: str, args) -> tuple:
    from federation.testing import make_bundle

    data = make_bundle(work / "bundles", "scalebench", "1.0.0", private_key=private, padding=100_000)
    status, answer = fleet.request("POST", "/v1/models", data, content_type="application/octet-stream")
    if status >= 300:
        return (label, f"deploy a {len(data) / 1024:.0f} KB bundle", f"upload failed: HTTP {status}", str(answer)[:200])
    began = time.monotonic()
    _, _, _, result = fleet.query("deploy model 'scalebench' version '1.0.0' to Edge e over waves of 100 percent;")
    deployment = result.get("deployment_id")
    progress = {}
    while deployment is not None and time.monotonic() - began < args.deploy_timeout:
        _, progress = fleet.request("GET", f"/v1/deployments/{deployment}?wait=5&device_limit=0")
        if progress.get("state") in ("done", "failed", "aborted", "cancelled", "rolled_back"):
            break
    seconds = time.monotonic() - began
    return (label, f"deploy a {len(data) / 1024:.0f} KB bundle to every edge", f"{seconds:.1f} s",
            f"state {progress.get('state')}; {progress.get('counts')}; load {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", default="1000,10000", help="fleet sizes, comma-separated")
    parser.add_argument("--transport", choices=("embedded", "nats"), default="embedded")
    parser.add_argument("--processes", type=int, default=0, help="simulator processes (default: by size)")
    parser.add_argument("--heartbeat", type=float, default=30.0, help="the federation's heartbeat (s)")
    parser.add_argument("--device-timeout", type=float, default=60.0)
    parser.add_argument("--connect-timeout", type=float, default=600.0)
    parser.add_argument("--deploy-timeout", type=float, default=600.0)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds between all online and measuring")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-deploy", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if args.transport == "nats" and importlib.util.find_spec("federation.nats_hub") is None:
        print("bench_scale: --transport nats skipped: the NATS transport (federation/nats_*.py) is not there yet")
        return
    if args.transport == "nats":
        print("bench_scale: --transport nats: two federation nodes on a NATS cluster are not wired into this "
              "benchmark yet (ScaleFleet starts the embedded hub); skipped")
        return
    print(f"StreamQL scale benchmark — {machine()}; transport {args.transport}; load {load()}")
    results = []
    for edges in [int(n) for n in args.edges.split(",") if n.strip()]:
        work = Path(tempfile.mkdtemp(prefix=f"bench-scale-{edges}-"))
        try:
            results += run_size(edges, args, work)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        print(table("Results so far", results, ("fleet", "what", "figure", "notes")), flush=True)
    print(table(f"Results ({args.transport} hub)", results, ("fleet", "what", "figure", "notes")))


if __name__ == "__main__":
    main()

"""The soak benchmark of issue 12: many clients, good and bad, against a federation and 100 edges.

`streamql federation` (with `--trusted-key`, so uploads are checked) and `streamql edge --simulate N`
run on 127.0.0.1 in a temporary data directory, and are killed at the end whatever happens. 200 read
tokens and a deploy token are made with `admin.token`; every client has its own read token. Two
client processes (bench/soak_clients.py): the well-behaved clients (70 %), and the abandoning
(20 %) and hostile (10 %) ones. Measured: the well-behaved clients' errors (the goal: none),
their latencies, 429/503 retries, both processes' memory and CPU every 0.5 s (VmHWM at the end),
/healthz answered or not (from a thread of its own), edges reconnecting, the logs' warnings, and
how the federation stops on SIGTERM while the bad clients are still connected (≤ 10 s, exit 0).
From the logs: the simulated fleet's fragment CPU by client group and statement, and who held the
federation's statement lanes when a statement was refused for want of a slot (bench/soak_costs.py).

    /work/venv/bin/python bench/bench_soak.py [--duration 300] [--clients 200] [--edges 100]
        [--think 10] [--heavy 2] [--rss-cap-mb 3000] [--isolate] [--skip ACT …] [--report DIR]

Exit code 0 when the goal is met, 1 with the reasons when it is not, 2 when the fleet does not start.
The whole run takes at most --duration + 60 s once the fleet is up.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, table  # noqa: E402
from bench.soak_clients import ACTS  # noqa: E402
from bench.soak_costs import federation_lanes, fleet_cpu, groups_by_principal, lanes_text  # noqa: E402
from bench.soak_costs import text as fleet_cpu_text  # noqa: E402
from bench.soak_fleet import FleetDidNotStart, SoakFleet, busy_processes, machine_load, pinned, split_cores  # noqa: E402

HERE = Path(__file__).resolve().parent
SIGTERM_LIMIT_S = 10.0


def options(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds the clients run (300)")
    parser.add_argument("--clients", type=int, default=200, help="clients: 70 %% well-behaved, 20 %% abandoning, "
                                                                 "10 %% hostile (200)")
    parser.add_argument("--edges", type=int, default=100, help="simulated edges (100)")
    parser.add_argument("--think", type=float, default=10.0, help="a well-behaved client's mean pause, s (10)")
    parser.add_argument("--heavy", type=int, default=2, help="`select zeros(50000000);` at once, at most (2)")
    parser.add_argument("--rss-cap-mb", type=float, default=3000.0, help="kill a process past this RSS (3000)")
    parser.add_argument("--edges-nice", type=int, default=0,
                        help="niceness of the simulated fleet's session (0): its processes run in one session of "
                             "their own, which the kernel's autogroups weigh as much as the federation's")
    parser.add_argument("--edge-procs", type=int, default=4,
                        help="processes the simulated fleet is split into (4): each runs edges/K edges with its "
                             "own seed and id prefix, as devices compute in parallel")
    parser.add_argument("--split-cores", action="store_true",
                        help="the simulated fleet on the last CPU, the federation and the clients on the others: "
                             "devices have CPUs of their own, and on one small box the fleet's hundreds of threads "
                             "otherwise take the federation's")
    parser.add_argument("--isolate", action="store_true", help="each hostile act alone, with two probes")
    parser.add_argument("--skip", action="append", default=[], choices=ACTS, metavar="ACT",
                        help=f"leave out a hostile act ({', '.join(ACTS)})")
    parser.add_argument("--report", metavar="DIR", help="write report.json and the logs there")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stack-samples", metavar="DIR", help="sample the simulator processes' stacks into "
                        "DIR/stacks-PID.json (bench/stack_sampler)")
    return parser.parse_args(argv)


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def spawn_clients(work: Path, name: str, config: dict, cpus: set[int] | None = None) -> tuple[subprocess.Popen, Path]:
    path = work / f"clients-{name}.json"
    config = {**config, "result": str(work / f"result-{name}.json"), "work": str(work)}
    path.write_text(json.dumps(config))
    log = open(work / f"clients-{name}.log", "w")
    proc = subprocess.Popen([sys.executable, str(HERE / "soak_clients.py"), str(path)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=pinned(cpus))
    return proc, Path(config["result"])


def read_result(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run(args: argparse.Namespace, work: Path) -> tuple[dict, list[str]]:
    """The run: (the report, the reasons the goal was missed). Raises FleetDidNotStart."""
    n_well = max(1, round(args.clients * 0.7))
    n_abandon = max(1, round(args.clients * 0.2)) if args.clients >= 3 else 0
    n_hostile = max(1, args.clients - n_well - n_abandon) if args.clients >= 3 else 0
    cores = split_cores() if args.split_cores else None
    fleet = SoakFleet(work, args.edges, args.rss_cap_mb, edges_nice=args.edges_nice, edge_procs=args.edge_procs,
                      stack_samples=args.stack_samples, cores=cores)
    servers = cores[0] if cores else None
    procs: list[subprocess.Popen] = []
    report: dict = {"machine": machine(), "options": vars(args), "load_before": machine_load()}
    try:
        started_up = time.monotonic()
        fleet.start()
        report["startup_s"] = round(time.monotonic() - started_up, 1)
        read = fleet.tokens("read", n_well + n_abandon + n_hostile + 1)
        deploy = fleet.tokens("deploy", 1)[0]
        common = {"url": fleet.url, "port": fleet.port, "duration": args.duration, "seed": args.seed,
                  "federation_pid": fleet.procs["federation"].pid}
        begun = time.monotonic()
        well, well_result = spawn_clients(work, "well", {**common, "group": "well",
                                                         "tokens": read[:0 if args.isolate else n_well],
                                                         "think": args.think}, servers)
        bad, bad_result = spawn_clients(work, "bad", {
            **common, "group": "bad", "abandon_tokens": read[n_well:n_well + n_abandon],
            "hostile_tokens": read[n_well + n_abandon:n_well + n_abandon + n_hostile], "probe_token": read[-1],
            "deploy_token": deploy, "heavy": args.heavy, "skip": args.skip, "isolate": args.isolate,
            "private_key": str(fleet.private_key)}, servers)
        procs = [well, bad]
        fleet.sampler.watch("clients-well", well)
        fleet.sampler.watch("clients-bad", bad)
        if args.isolate:   # the acts one after the other, then the process ends by itself
            try:
                bad.wait(90 * len(ACTS))
            except subprocess.TimeoutExpired:
                pass
        # the well-behaved clients end by themselves after --duration (what is in flight finishes)
        try:
            well.wait(args.duration + 46)
        except subprocess.TimeoutExpired:
            well.terminate()
            try:
                well.wait(5)
            except subprocess.TimeoutExpired:
                well.kill()
        report["clients_s"] = round(time.monotonic() - begun, 1)
        report["load_during"] = machine_load()
        report["busy_others"] = busy_processes(exclude={p.pid for p in (*fleet.procs.values(), well, bad)})
        fleet.prober.stop.set()
        fleet.prober.join(10)    # no poll may see the federation stopping
        report["federation_before_sigterm"] = {
            "alive": fleet.procs["federation"].poll() is None, "online": fleet.online()}
        # SIGTERM while the abandoning and hostile clients are still connected
        sigterm_s, code = fleet.stop_federation(12.0)
        report["sigterm"] = {"seconds": round(sigterm_s, 2), "exit": code}
        bad.terminate()
        try:
            bad.wait(2)
        except subprocess.TimeoutExpired:
            bad.kill()
        fleet.sampler.stop.set()
        report["well"] = read_result(well_result)
        report["bad"] = read_result(bad_result)
        report["processes"] = fleet.sampler.summary()
        report["healthz"] = {"answered": len(fleet.prober.health_ms), "unanswered": fleet.prober.unanswered,
                             "p99_ms": round(percentile(fleet.prober.health_ms, 99) or 0, 1),
                             "max_ms": round(max(fleet.prober.health_ms, default=0), 1)}
        report["edges"] = {"reconnections": int(fleet.prober.delta("streamql_edge_connections_total").get(
            'streamql_edge_connections_total{result="accepted"}', 0)), "seen_offline": sorted(fleet.prober.dropped),
            "min_online": fleet.prober.min_online}
        report["peaks"] = dict(fleet.prober.peaks)
        report["http"] = {k: v for k, v in fleet.prober.delta("streamql_http_limited_total").items()}
        report["warnings"] = fleet.warnings()
        report["load_after"] = machine_load()
        groups = groups_by_principal(fleet.token_ids.get("read", []), n_well, n_abandon, n_hostile)
        report["fleet_cpu"] = fleet_cpu([path for name, path in fleet.logs.items() if name.startswith("edges")],
                                        groups)
        report["federation_lanes"] = federation_lanes(fleet.logs["federation"], groups)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        fleet.close()
    return report, goal(report, args)


def goal(report: dict, args: argparse.Namespace) -> list[str]:
    reasons = []
    errors = sum((report.get("well") or {}).get("errors", {}).values())
    if not report.get("well"):
        reasons.append("the well-behaved clients reported nothing")
    if errors:
        reasons.append(f"{errors} errors seen by well-behaved clients")
    sigterm = report.get("sigterm") or {}
    if sigterm.get("exit") != 0 or sigterm.get("seconds", 99) > SIGTERM_LIMIT_S:
        reasons.append(f"SIGTERM: exit {sigterm.get('exit')} after {sigterm.get('seconds')} s (≤ 10 s, exit 0)")
    for name, figures in (report.get("processes") or {}).items():
        if figures.get("killed_at_mb"):
            reasons.append(f"{name} killed past the RSS cap at {figures['killed_at_mb']:.0f} MB")
    if not (report.get("federation_before_sigterm") or {}).get("alive", False):
        reasons.append("the federation was not running at the end")
    leaks = sum(n for key, n in ((report.get("bad") or {}).get("statuses") or {}).items()
                if key.startswith("passwd: ") and "LEAKED" in key)
    if leaks:   # a hard failure: a read token must never get the host's files
        reasons.append(f"/etc/passwd lines returned to a read token {leaks} times")
    if report.get("edges", {}).get("reconnections"):
        reasons.append(f"edges dropped their link {report['edges']['reconnections']} times")
    return reasons


def summary(report: dict) -> str:
    well = report.get("well") or {}
    latency = well.get("latency") or {}
    retried = well.get("retried") or {}
    rows = []
    for kind in ("select1", "aggregate", "battery", "edges", "stream_post", "stream_post admission", "stream_ws",
                 "stream_ws admission"):
        values = latency.get(kind, [])
        errors = sum(v for k, v in (well.get("errors") or {}).items() if k.startswith(kind + ":"))
        retries = sum(v for k, v in retried.items() if k.startswith(kind + ":"))
        rows.append((kind, (well.get("counts") or {}).get(kind, len(values)), errors, retries,
                     ms(percentile(values, 50)), ms(percentile(values, 95)), ms(percentile(values, 99)),
                     ms(max(values, default=None))))
    out = [table("well-behaved clients", rows, ("request", "done", "errors", "429/503 retries", "p50", "p95", "p99",
                                                "max"))]
    if well.get("errors"):
        out.append("errors: " + ", ".join(f"{k} ×{v}" for k, v in sorted(well["errors"].items())))
    procs = report.get("processes") or {}
    out.append(table("\nprocesses", [(n, f"{p['rss_start_mb']:.0f} MB", f"{p['rss_max_mb']:.0f} MB",
                                      f"{p['hwm_mb']:.0f} MB", f"{p['cpu_mean_pct']:.0f} %",
                                      f"{p['cpu_p95_pct']:.0f} %", p["killed_at_mb"] or "")
                                     for n, p in procs.items()] or [("-",) * 7],
                     ("process", "RSS at start", "RSS max", "VmHWM", "CPU mean", "CPU p95", "killed at")))
    bad = report.get("bad") or {}
    statuses = bad.get("statuses") or {}
    if statuses:
        out.append(table("\nabandoning and hostile clients", sorted(statuses.items()) or [("-", "-")],
                         ("act: answer", "times")))
    for item in bad.get("isolated") or []:
        out.append(f"  isolated {item['act']}: {item['seconds']} s, {item['status']}; select 1 "
                   f"{item['select1_ms_before']} → {item['select1_ms_worst']} ms, battery "
                   f"{item['battery_ms_before']} → {item['battery_ms_worst']} ms, probe errors "
                   f"{item['probe_errors']}, federation RSS +{item['rss_growth_mb']} MB")
    edges = report.get("edges") or {}
    out.append(f"\nedges: {edges.get('reconnections')} reconnections, {len(edges.get('seen_offline') or [])} seen "
               f"offline, at least {edges.get('min_online')} online")
    health = report.get("healthz") or {}
    out.append(f"/healthz: {health.get('answered')} answered (p99 {health.get('p99_ms')} ms, max "
               f"{health.get('max_ms')} ms), {health.get('unanswered')} unanswered")
    out.append(f"limited (429): {report.get('http')}; peaks: {report.get('peaks')}; threads: "
               f"{ {n: p.get('threads_max') for n, p in procs.items()} }; runnable threads mean/max: "
               f"{ {n: (p.get('runnable_mean'), p.get('runnable_max')) for n, p in procs.items()} }")
    fleet_hwm = sum(p.get("hwm_mb", 0) for n, p in procs.items() if n.startswith("edges"))
    fleet_n = sum(1 for n in procs if n.startswith("edges"))
    out.append(f"edge processes: {fleet_n}, peak RSS (VmHWM) {fleet_hwm:.0f} MB in all, "
               f"{fleet_hwm / max(1, (report.get('options') or {}).get('edges', 1)):.1f} MB per simulated edge")
    out.append(fleet_cpu_text(report.get("fleet_cpu") or {}))
    out.append(lanes_text(report.get("federation_lanes") or {}))
    sigterm = report.get("sigterm") or {}
    out.append(f"SIGTERM: stopped in {sigterm.get('seconds')} s, exit {sigterm.get('exit')}")
    for name, groups in (report.get("warnings") or {}).items():
        if groups:
            out.append(f"{name} log, warnings grouped:")
            out += [f"  {count:5d}  {line}" for line, count in groups[:8]]
    out.append(f"machine: {report.get('machine')}; {report.get('load_before')} before, "
               f"{report.get('load_during')} at the end of the clients; others busy: {report.get('busy_others')}")
    if (report.get("options") or {}).get("split_cores"):
        out.append("cores split: the simulated fleet on the last CPU, the federation and the clients on the others")
    return "\n".join(out)


def main(argv=None) -> int:
    args = options(argv)
    work = Path(tempfile.mkdtemp(prefix="streamql-soak-"))
    try:
        try:
            report, reasons = run(args, work)
        except FleetDidNotStart as exc:
            print(f"the fleet did not start: {exc}", file=sys.stderr)
            return 2
        print(summary(report))
        report["goal_missed"] = reasons
        if args.report:
            out = Path(args.report)
            out.mkdir(parents=True, exist_ok=True)
            (out / "report.json").write_text(json.dumps(report, indent=1))
            for log in work.glob("*.log"):
                shutil.copy(log, out / log.name)
        if reasons:
            print("\ngoal missed:\n  " + "\n  ".join(reasons))
            return 1
        print("\ngoal met")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Scale benchmark: thousands of simulated edges, on the embedded hub and on NATS with two nodes.

    PYTHONPATH=. python bench/bench_scale.py --edges 1000,10000 [--transport embedded,nats]
                                             [--nats-registry postgresql|sqlite] [--json FILE]

For each fleet size and transport (side by side in one run): the federation — `streamql
federation` (embedded), or two `streamql federation --nats … --nats-node A|B` nodes on one
nats-server sharing a registry (bench/scale_nats.py: PostgreSQL and a secured nats-server by
default, the scale-out configuration; `--nats-registry sqlite`: one SQLite file) — and `streamql
edge --simulate N --processes K` (real processes on loopback; the simulator provisions its tokens
in batches through node A's HTTP API; with NATS its edges link over NATS only), then
1. connect time: from the simulator's start (provisioning included) until every edge is online
   (on NATS: on both nodes);
2. the federation's resident memory per connected edge (RSS with the fleet connected minus RSS
   before the simulator started, over N; on NATS both nodes', each) and its CPU while the fleet
   idles (heartbeats only), in percent of one core per node;
3. fan-out: `select id(e), signal_value('battery')@e from Edge e;` sent to node A — first row and
   all rows, every value checked against the simulation function (an oracle; a wrong value or a
   missing edge fails the run);
4. a grouped cross-edge aggregate (`… where signal_value('battery')@e < 20 group by region(e)`),
   its counts checked against the oracle's bounds per region;
5. deployment of a signed 100 KB bundle to every edge (`deploy model … over waves of 100 percent`);
6. graceful stop: SIGTERM with every edge connected (on NATS: both nodes at once), seconds until
   the federation exited, and the registry after it; then the simulator's stop.

The heartbeat is the federation's default (5 s) unless `--heartbeat` says otherwise. Every figure
carries the load average when it was taken: the box is shared.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
import threading
import traceback
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine, table  # noqa: E402
from scale_fleet import ScaleFleet, low_battery_bounds, oracle_battery  # noqa: E402

TRANSPORTS = ("embedded", "nats")
FIGURES = ("connect", "rss", "idle cpu", "fan-out", "aggregate", "deploy", "stop", "simulator stop")
FIGURE_NAMES = {
    "setup": "federation",
    "error": "FAILED",
    "run": "run (UTC)",
    "connect": "connect, all online (provisioning included)",
    "rss": "federation RSS per connected edge",
    "idle cpu": "federation CPU, fleet idle (heartbeats)",
    "fan-out": "fan-out signal_value@e of every edge",
    "aggregate": "grouped aggregate across the fleet",
    "deploy": "deploy a 100 KB bundle to every edge",
    "stop": "graceful stop (SIGTERM, all connected)",
    "simulator stop": "simulator stop (SIGTERM)",
}


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def make_fleet(transport: str, edges: int, args, work: Path, public) -> ScaleFleet:
    # a simulator process per 2,500 edges, at most 4: with 8 at 10,000 (fewer fragment threads per
    # process) the fleet's processes took the node's CPU instead (its loop held 7.5 s, on the CPU
    # 0.8 s of it) and the fan-out lost 2,584 edges instead of 52 (bench/README.md, scale)
    processes = args.processes or max(1, min(4, edges // 2500 + 1))
    options = dict(edges=edges, processes=processes, heartbeat_s=args.heartbeat, seed=args.seed, trusted_key=public,
                   simulator_nice=args.simulator_nice,
                   federation_args=["--device-timeout", str(args.device_timeout), "--log-level", "warning"])
    if transport == "nats":
        from scale_nats import NatsScaleFleet

        return NatsScaleFleet(work / "fleet", registry=args.nats_registry, **options)
    return ScaleFleet(work / "fleet", **options)


class CpuShare:
    """CPU of the federation's and the simulator's processes over a phase, in % of one core: a
    loop that lags while its process got little CPU was starved (the box is shared with the
    simulated fleet), one that lags at a full core was busy."""

    def __init__(self, fleet: ScaleFleet):
        self.fleet = fleet
        self.began = time.monotonic()
        self.federation = self._federation()
        self.simulator = self._simulator()

    def _federation(self) -> float:
        return sum(cpu_seconds(pid) for pid in federation_pids(self.fleet).values())

    def _simulator(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.fleet.simulator_pids())

    def __str__(self) -> str:
        took = max(1e-6, time.monotonic() - self.began)
        return (f"CPU federation {100 * (self._federation() - self.federation) / took:.0f} % / simulator "
                f"{100 * (self._simulator() - self.simulator) / took:.0f} %")


def federation_pids(fleet: ScaleFleet) -> dict[str, int]:
    nodes = getattr(fleet, "nodes", None)
    if nodes:
        return {name: process.pid for name, process in nodes.items()}
    return {"": fleet.federation.pid}


class LagProbe:
    """`GET /healthz` on node A every half second from a thread: the worst answer time of a phase
    is how long the federation's event loop kept everything waiting (a pong to an edge included)."""

    def __init__(self, url: str):
        self.url, self.samples = url, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=60) as response:
                    response.read()
            except (urllib.error.URLError, OSError):
                pass
            self.samples.append((began, time.monotonic() - began))
            self._stop.wait(0.5)

    def mark(self) -> float:
        return time.monotonic()

    def worst(self, since: float) -> str:
        seen = [lag for at, lag in self.samples if at >= since]
        return f"loop lag max {max(seen):.1f} s" if seen else "loop lag: no sample"

    def stop(self) -> None:
        self._stop.set()


def node_urls(fleet: ScaleFleet) -> list[str]:
    """Every federation node's URL (node A first)."""
    others = [f"http://127.0.0.1:{port}" for port in getattr(fleet, "ports", {}).values()]
    return [fleet.url, *[url for url in others if url != fleet.url]]


def metric_of(url: str, name: str) -> float:
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return 0.0
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


class SilentCloses:
    """Edges the nodes closed for silence (streamql_edges_closed_silent_total) over a phase: the
    node's side of a lost edge, which its log keeps below the bench's level."""

    NAME = "streamql_edges_closed_silent_total"

    def __init__(self, fleet: ScaleFleet):
        self.urls = node_urls(fleet)
        self.before = [metric_of(url, self.NAME) for url in self.urls]

    def __str__(self) -> str:
        closed = [metric_of(url, self.NAME) - before for url, before in zip(self.urls, self.before)]
        return f"{' / '.join(f'{n:,.0f}' for n in closed)} edges closed as silent by the node{'s' * (len(closed) > 1)}"


def link_drops(fleet: ScaleFleet) -> int:
    """Simulated edges that gave up on a silent federation (3 heartbeats without a frame)."""
    log = fleet.dir / "simulator.log"
    try:
        return log.read_text(errors="replace").count("no frame from the federation")
    except OSError:
        return 0


def run_column(transport: str, edges: int, args, work: Path, out: dict[str, tuple[str, str]]) -> None:
    """Fills `out`, figure → (value, notes), for one transport and fleet size (what it got before a failure too)."""
    from edge_engine.simulate import fleet_identities
    from scale_fleet import rss_kb
    from streamql.models import keygen

    private, public = keygen(work / "release")
    fleet = make_fleet(transport, edges, args, work, public)
    identities = fleet_identities(edges, args.seed)
    probe, others = None, {}
    try:
        fleet.start_federation()
        probe = LagProbe(fleet.url)
        others = {name: LagProbe(f"http://127.0.0.1:{port}") for name, port in getattr(fleet, "ports", {}).items()
                  if f"http://127.0.0.1:{port}" != fleet.url}   # node B's loop (probe: node A's)
        out["setup"] = (getattr(fleet, "description", "one node, embedded hub, SQLite registry"), "")
        time.sleep(1.0)
        pids = federation_pids(fleet)
        empty = {name: rss_kb(pid) or 0 for name, pid in pids.items()}
        began = time.monotonic()
        fleet.start_simulator()
        seconds = fleet.wait_connected(args.connect_timeout, since=began)
        if seconds is None:
            out["connect"] = (f"NOT in {args.connect_timeout:.0f} s", f"{fleet.connected():,} online; "
                              f"{fleet.processes} simulator processes; {probe.worst(began)}{lag_of(others, began)}; "
                              f"{callout_refusals(fleet)}load {load()}")
            return
        out["connect"] = (f"{seconds:.1f} s", f"{edges / seconds:,.0f} edges/s; {fleet.processes} simulator "
                          f"processes; {probe.worst(began)}{lag_of(others, began)}; {link_drops(fleet)} links "
                          f"dropped; {callout_refusals(fleet)}load {load()}")
        before_cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        idle_began = time.monotonic()
        time.sleep(args.settle)
        idle = time.monotonic() - idle_began
        cpu = {name: 100.0 * (cpu_seconds(pid) - before_cpu[name]) / idle for name, pid in pids.items()}
        still = fleet.connected()
        connected = {name: rss_kb(pid) or 0 for name, pid in pids.items()}
        per_edge = {name: (connected[name] - empty[name]) / edges for name in pids}
        out["rss"] = (" / ".join(f"{(name + ' ') if name else ''}{value:.1f} KiB" for name, value in per_edge.items()),
                      "; ".join(f"{(name + ': ') if name else ''}{connected[name] / 1024:.0f} MiB connected, "
                                f"{empty[name] / 1024:.0f} MiB empty" for name in pids) + f"; heartbeat {args.heartbeat:g} s")
        out["idle cpu"] = (" / ".join(f"{(name + ' ') if name else ''}{value:.0f} %" for name, value in cpu.items()),
                           f"over {idle:.0f} s idle; {still:,} still online after it; {probe.worst(idle_began)}"
                           f"{lag_of(others, idle_began)}; "
                           f"{link_drops(fleet)} links dropped so far; load {load()}")
        if still < edges:
            out["idle cpu"] = (out["idle cpu"][0], out["idle cpu"][1] + f"; {edges - still:,} edges DROPPED")

        problems = []   # measured on: the figures after a failed check still say what the fleet does
        if "fan-out" not in args.skip:
            fan_out(fleet, identities, probe, out, problems)
        if "aggregate" not in args.skip:
            aggregate(fleet, identities, out, problems)
        if "deploy" not in args.skip:
            phase = probe.mark()
            profiler = start_profiler(args.profile_deploy, pids)
            try:
                value, notes, cpu = deploy(fleet, work, private, args)
            finally:
                stop_profiler(profiler)
            out["deploy"] = (value, f"{notes}; {probe.worst(phase)}; {cpu}; {link_drops(fleet)} links dropped so far")
            if not value.endswith(", done") or "'failed': 0" not in notes:   # every edge must install it
                problems.append(f"deploy: {value}, not installed on every edge")

        at_stop = fleet.connected()
        seconds, code = fleet.stop_federation(timeout=60)
        state = fleet.registry_state()
        out["stop"] = ("killed after 60 s" if seconds is None else f"{seconds:.2f} s",
                       f"{at_stop:,} connected at SIGTERM; exit {code}; registry {state}; load {load()}")
        seconds, code = fleet.stop_simulator(timeout=60)
        out["simulator stop"] = ("killed" if seconds is None else f"{seconds:.2f} s", f"exit {code}")
        if problems:
            raise SystemExit(f"{transport} {edges}: " + "; ".join(problems))
    finally:
        if probe is not None:
            probe.stop()
        for other in others.values():
            other.stop()
        fleet.close()


def start_profiler(path: str | None, pids: dict[str, int]):
    """`py-spy record` of node A for the deployment (--profile-deploy FILE: a speedscope file)."""
    if not path:
        return None
    import subprocess

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    pid = next(iter(pids.values()))
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--idle", "--threads", "--rate", "50",
                             "--format", "speedscope", "--output", path, "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(profiler) -> None:
    import signal
    import subprocess

    if profiler is None:
        return
    profiler.send_signal(signal.SIGINT)   # py-spy writes its file on SIGINT
    try:
        profiler.wait(30)
    except subprocess.TimeoutExpired:
        profiler.kill()


def fan_out(fleet: ScaleFleet, identities, probe: LagProbe, out: dict, problems: list) -> None:
    phase, cpu, silent = probe.mark(), CpuShare(fleet), SilentCloses(fleet)
    t0 = time.time()
    first, answer, total, status = fleet.query("select id(e), signal_value('battery')@e from Edge e;")
    t1 = time.time()
    possible = oracle_battery(identities, t0, t1)
    wrong = sum(1 for edge, value in answer if value not in possible.get(edge, ()))
    missing = len(possible.keys() - {edge for edge, _ in answer})
    counts = status.get("status", {}).get("counts")
    out["fan-out"] = (f"first {first * 1000:,.0f} ms, all {total * 1000:,.0f} ms",
                      f"{len(answer):,} rows, {wrong} differ from the oracle, {missing} edges missing; {counts}; "
                      f"{unanswered_reasons(status)}; "
                      f"{probe.worst(phase)}; {cpu}; {silent}; {link_drops(fleet)} links dropped so far; load {load()}")
    if wrong or missing:
        problems.append(f"fan-out: {wrong} values differ from the oracle, {missing} edges missing")


def unanswered_reasons(status: dict, top: int = 4) -> str:
    """Why devices did not answer (the status's reasons and errors, counted): tells a link the
    node dropped from one never connected, or a fragment that timed out."""
    from collections import Counter

    found = Counter()
    for outcome in (status.get("status", {}).get("devices") or {}).values():
        if outcome.get("outcome") == "answered":
            continue
        why = outcome.get("reason") or (outcome.get("error") or {}).get("message") or ""
        found[f"{outcome.get('outcome')}: {re.sub(r'[0-9.]+ s', 'N s', str(why))[:90]}"] += 1
    return ("unanswered: " + "; ".join(f"{n:,} {why}" for why, n in found.most_common(top))) if found else ""


def aggregate(fleet: ScaleFleet, identities, out: dict, problems: list) -> None:
    t0, cpu, silent = time.time(), CpuShare(fleet), SilentCloses(fleet)
    _, groups, total, status = fleet.query("select region(e), count(e) from Edge e "
                                           "where signal_value('battery')@e < 20 group by region(e);")
    t1 = time.time()
    # a device that did not answer (offline, timed out: its outcome is in the status) is counted
    # by nobody; the oracle counts over the devices that answered
    unanswered = {d for d, o in (status.get("status", {}).get("devices") or {}).items() if o.get("outcome") != "answered"}
    answered = [identity for identity in identities if identity.id not in unanswered]
    bounds = low_battery_bounds(answered, oracle_battery(answered, t0, t1))
    counted = dict((region, count) for region, count in groups)
    outside = [r for r, (low, high) in bounds.items() if not low <= counted.get(r, 0) <= high]
    out["aggregate"] = (f"{total * 1000:,.0f} ms",
                        f"{len(groups)} groups, {sum(counted.values())} low batteries; oracle "
                        f"{'agrees' if not outside else 'DISAGREES: ' + ', '.join(outside)}; "
                        f"{status.get('status', {}).get('counts')}; {unanswered_reasons(status)}; {cpu}; {silent}; "
                        f"load {load()}")
    if outside:
        problems.append(f"the grouped aggregate differs from the oracle in {outside}")


def lag_of(probes: dict, since: float) -> str:
    return "".join(f"; node {name}: {probe.worst(since)}" for name, probe in probes.items())


def callout_refusals(fleet: ScaleFleet) -> str:
    """Connections refused for want of a timely callout answer (nats-server's authentication errors)
    and the requests the nodes dropped past their expiry (their logs), where there are such logs."""
    servers = list(fleet.dir.glob("infra/**/*.log"))
    if not servers:
        return ""
    refused = sum(1 for path in servers for line in path.read_text(errors="replace").splitlines()
                  if "[ERR]" in line and "uthentication" in line)
    dropped = 0
    for path in fleet.dir.glob("federation-*.log"):
        found = re.findall(r"dropped (\d+) expired authorization requests", path.read_text(errors="replace"))
        dropped += int(found[-1]) if found else 0
    return f"{refused:,} connects refused by nats-server (authentication), {dropped:,} expired requests dropped; "


def deploy(fleet: ScaleFleet, work: Path, private, args) -> tuple[str, str, str]:
    from federation.testing import make_bundle

    data = make_bundle(work / "bundles", "scalebench", "1.0.0", private_key=private, padding=100_000)
    status, answer = fleet.request("POST", "/v1/models", data, content_type="application/octet-stream")
    if status >= 300:
        return f"upload failed: HTTP {status}", str(answer)[:200], ""
    began, cpu, silent = time.monotonic(), CpuShare(fleet), SilentCloses(fleet)
    _, _, _, result = fleet.query("deploy model 'scalebench' version '1.0.0' to Edge e over waves of 100 percent;")
    deployment = result.get("deployment_id")
    progress = {}
    while deployment is not None and time.monotonic() - began < args.deploy_timeout:
        _, progress = fleet.request("GET", f"/v1/deployments/{deployment}?wait=5&device_limit=0")
        if progress.get("state") in ("done", "failed", "aborted", "cancelled", "rolled_back"):
            break
    seconds = time.monotonic() - began
    return (f"{seconds:.1f} s, {progress.get('state')}",
            f"{len(data) / 1024:.0f} KB bundle; {progress.get('counts')}{failed_reasons(fleet, deployment, progress)}; "
            f"{silent}; load {load()}", str(cpu))


def failed_reasons(fleet: ScaleFleet, deployment, progress: dict, top: int = 3) -> str:
    """The failed targets' reasons, counted (a timeout tells an answer lost from an install that failed)."""
    from collections import Counter

    if deployment is None or not (progress.get("counts") or {}).get("failed"):
        return ""
    try:
        _, failed = fleet.request("GET", f"/v1/deployments/{deployment}?device_state=failed&device_limit=10000")
    except (urllib.error.URLError, OSError, ValueError):
        return ""
    found = Counter(re.sub(r"[0-9.]+ s", "N s", str(d.get("reason")))[:90] for d in failed.get("devices") or [])
    return "; failed: " + "; ".join(f"{n:,} {why}" for why, n in found.most_common(top))


def cell(entry: tuple[str, str] | None) -> str:
    """A figure with the 1-minute load average its notes give."""
    if entry is None:
        return "-"
    value, notes = entry
    found = re.search(r"load (\d+\.\d)", notes)
    return f"{value} (load {found.group(1)})" if found else value


def side_by_side(results: dict[str, dict[str, tuple[str, str]]]) -> str:
    columns = list(results)
    rows = [(FIGURE_NAMES[f], *(cell(results[c].get(f)) for c in columns)) for f in ("setup", "error", *FIGURES, "run")
            if any(f in results[c] for c in columns)]
    return table("Side by side (load: 1-minute average when the figure was taken)", rows, ("figure", *columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", default="1000,10000", help="fleet sizes, comma-separated")
    parser.add_argument("--transport", default="embedded,nats", help="embedded, nats or both (comma-separated)")
    parser.add_argument("--nats-registry", choices=("postgresql", "sqlite"), default=None,
                        help="the NATS column's shared registry (default: postgresql when its binaries are here)")
    parser.add_argument("--processes", type=int, default=0, help="simulator processes (default: by size)")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="the federation's heartbeat (s; default 5)")
    parser.add_argument("--device-timeout", type=float, default=60.0)
    parser.add_argument("--connect-timeout", type=float, default=600.0)
    parser.add_argument("--deploy-timeout", type=float, default=600.0)
    parser.add_argument("--settle", type=float, default=15.0, help="seconds of idle fleet (memory, heartbeat CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--simulator-nice", type=int, default=0,
                        help="nice of the simulated fleet's processes (the federation's stays 0): the fleet stands "
                             "for devices with CPUs of their own")
    parser.add_argument("--no-deploy", action="store_true", help="same as --skip deploy")
    parser.add_argument("--skip", default="", help="phases to leave out: fan-out, aggregate, deploy (comma-separated)")
    parser.add_argument("--profile-deploy", metavar="FILE",
                        help="py-spy record node A during the deployment into FILE (speedscope)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    args.skip = {p.strip() for p in args.skip.split(",") if p.strip()} | ({"deploy"} if args.no_deploy else set())
    if args.skip - {"fan-out", "aggregate", "deploy"}:
        parser.error(f"--skip: fan-out, aggregate and/or deploy, not {sorted(args.skip)}")
    transports = [t.strip() for t in args.transport.split(",") if t.strip()]
    unknown = [t for t in transports if t not in TRANSPORTS]
    if unknown or not transports:
        parser.error(f"--transport: embedded and/or nats, not {unknown}")
    if "nats" in transports and args.nats_registry is None:
        from scale_nats import postgresql_available

        args.nats_registry = "postgresql" if postgresql_available() else "sqlite"
    print(f"StreamQL scale benchmark — {machine()}; transports {', '.join(transports)}"
          f"{f' (NATS registry: {args.nats_registry})' if 'nats' in transports else ''}; heartbeat "
          f"{args.heartbeat:g} s; simulator nice {args.simulator_nice}; load {load()}", flush=True)
    results: dict[str, dict[str, tuple[str, str]]] = {}
    failed = []
    for edges in [int(n) for n in args.edges.split(",") if n.strip()]:
        for transport in transports:
            column = f"{'embedded' if transport == 'embedded' else 'NATS, 2 nodes'} {edges:,}"
            work = Path(tempfile.mkdtemp(prefix=f"bench-scale-{transport}-{edges}-"))
            started = time.strftime("%H:%M:%S", time.gmtime())
            results[column] = {}
            try:
                run_column(transport, edges, args, work, results[column])
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - the other columns still run
                failed.append(f"{column}: {exc}")
                traceback.print_exc()
                results[column]["error"] = (str(exc)[:300], "")
            finally:
                if not args.keep:
                    shutil.rmtree(work, ignore_errors=True)
            results[column]["run"] = (f"{started}–{time.strftime('%H:%M:%S', time.gmtime())} UTC", "")
            rows = [(column, FIGURE_NAMES.get(f, f), value, notes) for f, (value, notes) in results[column].items()]
            print(table(f"{column} (load now {load()})", rows, ("column", "what", "figure", "notes")), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))
    print(side_by_side(results))
    if failed:
        raise SystemExit("failed: " + "; ".join(failed))


if __name__ == "__main__":
    main()

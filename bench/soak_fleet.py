"""The soak benchmark's processes: a federation and a simulated fleet on loopback, watched.

    fleet = SoakFleet(work_dir, edges=100, rss_cap_mb=3000)
    fleet.start()                      # raises FleetDidNotStart (the bench exits 2)
    fleet.tokens("read", 200)          # POST /v1/tokens with admin.token
    fleet.stop_federation()            # SIGTERM: (seconds, exit code)
    fleet.close()                      # kills whatever still runs; always called

A `Sampler` thread reads VmRSS and CPU of both processes every 0.5 s and kills a process past
the RSS cap; a `Prober` thread (separate, so a stalled federation cannot stop the sampling) times
`/healthz` and reads `/metrics` (edge connections by how they ended).
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


class FleetDidNotStart(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def set_autogroup_nice(pid: int, nice: int) -> bool:
    """Lower the CPU weight of a process started in a session of its own. With the kernel's
    autogroups (sched_autogroup_enabled) CPU is shared between sessions first, and a thread's
    niceness only counts inside its session: four fleet processes at nice 10 would still take four
    shares to the federation's one (at nice 10 each, 4 × 110 to its 1024). Raising a session's nice
    needs no privilege."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))
        return True
    except OSError:
        return False


def runnable_threads(pid: int) -> int | None:
    """Threads of a process that are running or waiting for a CPU now (state R)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    count = 0
    for task in tasks:
        try:
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R":
                count += 1
        except (OSError, IndexError):
            pass
    return count


def machine_load() -> str:
    """The load average and the busiest other processes (the machine is shared)."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def busy_processes(exclude: set[int], top: int = 4) -> list[str]:
    """Other processes' CPU over one second, the busiest first (for the report's context)."""
    def snapshot() -> dict[int, tuple[float, str]]:
        out = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in exclude:
                continue
            seconds = cpu_seconds(int(entry.name))
            if seconds is None:
                continue
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            out[int(entry.name)] = (seconds, name)
        return out
    before = snapshot()
    time.sleep(1.0)
    after = snapshot()
    busy = sorted(((after[p][0] - before[p][0], after[p][1], p) for p in after if p in before), reverse=True)
    return [f"{name}[{pid}] {share * 100:.0f}%" for share, name, pid in busy[:top] if share >= 0.05]


def split_cores() -> tuple[set[int], set[int]]:
    """(the federation's and clients' CPUs, the simulated fleet's): the last CPU for the fleet."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--split-cores needs at least two CPUs")
    return set(cpus[:-1]), {cpus[-1]}


def pinned(cpus: set[int] | None):
    """A preexec_fn that keeps the child (and every thread it starts) on these CPUs."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


class SoakFleet:
    def __init__(self, work: Path, edges: int, rss_cap_mb: float, log_level: str = "warning", edges_nice: int = 0,
                 edge_procs: int = 1, stack_samples: str | None = None,
                 cores: tuple[set[int], set[int]] | None = None):
        self.work, self.edges, self.rss_cap_mb, self.edges_nice = work, edges, rss_cap_mb, edges_nice
        self.cores = cores    # (the federation's CPUs, the fleet's) or None: every process anywhere
        self.edge_procs = max(1, min(edge_procs, edges))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = work / "fed"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if stack_samples:   # the simulators sample their stacks (bench/stack_sampler/sitecustomize.py)
            Path(stack_samples).mkdir(parents=True, exist_ok=True)
            self.env.update(PYTHONPATH=os.pathsep.join([str(ROOT / "bench" / "stack_sampler"), str(ROOT)]),
                            STREAMQL_STACK_SAMPLES=str(Path(stack_samples).resolve()))
        self.log_level = log_level
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.admin = ""
        self.token_ids: dict[str, list] = {}
        self.sampler: Sampler | None = None
        self.prober: Prober | None = None
        self.launcher: subprocess.Popen | None = None

    # ------------------------------------------------------------------------------ processes
    def _spawn(self, name: str, *args: str, nice: int = 0, cpus: set[int] | None = None) -> subprocess.Popen:
        path = self.work / f"{name}.log"
        self.logs[name] = path
        pin = pinned(cpus)

        def prepare() -> None:
            if nice:
                os.nice(nice)
            if pin:
                pin()
        with open(path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "streamql.cli", *args], cwd=ROOT, env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=prepare if nice or pin else None)
        if nice:
            set_autogroup_nice(proc.pid, nice)
        self.procs[name] = proc
        return proc

    def _spawn_session(self, commands: dict[str, tuple], nice: int) -> None:
        """The fleet's processes in one session of their own, started by a small launcher (a
        session can only be joined by forking inside it). With the kernel's autogroups CPU is
        shared between sessions first: the whole fleet then weighs what the federation weighs
        (one session each), however many processes it has; `nice` is the session's own nice."""
        specs = []
        for name, args in commands.items():
            self.logs[name] = self.work / f"{name}.log"
            specs.append({"args": [sys.executable, "-m", "streamql.cli", *args], "log": str(self.logs[name])})
        launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, json.dumps(specs)], cwd=ROOT, env=self.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=pinned(self.cores[1] if self.cores else None))
        self.launcher = launcher
        if nice:
            set_autogroup_nice(launcher.pid, nice)
        pids = json.loads(launcher.stdout.readline() or "[]")
        if len(pids) != len(commands):
            raise FleetDidNotStart("the fleet's launcher did not start its processes")
        for name, pid in zip(commands, pids):
            self.procs[name] = Adopted(pid)

    def start(self, startup_s: float = 120.0) -> None:
        from streamql.models import keygen
        self.private_key, self.public_key = keygen(self.work / "keys" / "release")
        self._spawn("federation", "federation", "--data", str(self.data), "--port", str(self.port),
                    "--trusted-key", str(self.public_key), "--log-level", self.log_level,
                    cpus=self.cores[0] if self.cores else None)
        self._wait(self.healthy, 30, "the federation to listen")
        self.admin = (self.data / "admin.token").read_text().strip()
        # the fleet in several processes (`edges-1` … `edges-K`), each its own seed and id prefix: a
        # real fleet's devices compute in parallel, and one interpreter holding every fragment of
        # every edge as a thread of one GIL measures the simulation, not the federation
        commands = {}
        for k, n in enumerate(self.edge_split(), start=1):
            name = "edges" if self.edge_procs == 1 else f"edges-{k}"
            extra = () if self.edge_procs == 1 else ("--seed", str(k), "--id-prefix", f"p{k}-")
            commands[name] = ("edge", "--simulate", str(n), "--federation", self.url, "--provision-token-file",
                              str(self.data / "admin.token"), "--store", str(self.work / name),
                              "--log-level", self.log_level, *extra)
        self._spawn_session(commands, self.edges_nice)
        self._wait(lambda: self.online() >= self.edges, startup_s, f"{self.edges} edges to connect")
        self.sampler = Sampler(self)
        self.prober = Prober(self)
        self.sampler.start()
        self.prober.start()

    def edge_split(self) -> list[int]:
        """How many edges each fleet process runs (as even as can be)."""
        base, extra = divmod(self.edges, self.edge_procs)
        return [base + (1 if k < extra else 0) for k in range(self.edge_procs)]

    def edge_names(self) -> list[str]:
        return [name for name in self.procs if name.startswith("edges")]

    def _wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise FleetDidNotStart(f"{name} exited ({proc.returncode}) waiting for {what}: "
                                           f"{self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise FleetDidNotStart(f"timed out waiting for {what}")
            time.sleep(0.2)

    def log_tail(self, name: str, chars: int = 2000) -> str:
        try:
            return self.logs[name].read_text(errors="replace")[-chars:]
        except (OSError, KeyError):
            return ""

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    # ------------------------------------------------------------------------------ HTTP
    def request(self, method: str, path: str, body: dict | None = None, token: str | None = None,
                timeout: float = 10.0) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {token or self.admin}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def online(self) -> int:
        try:
            status, body = self.request("GET", "/v1/edges?online=true&limit=1", timeout=5)
            return json.loads(body)["total"] if status == 200 else -1
        except (OSError, ValueError, KeyError):
            return -1

    def tokens(self, role: str, n: int) -> list[str]:
        """n new tokens of `role`; their ids (what edges see as the principal `token-ID`) are kept,
        in order, in `token_ids[role]`."""
        out = []
        for i in range(n):
            status, body = self.request("POST", "/v1/tokens", {"role": role, "label": f"soak-{role}-{i}"})
            if status != 201:
                raise FleetDidNotStart(f"POST /v1/tokens answered {status}: {body[:200]!r}")
            made = json.loads(body)
            out.append(made["token"])
            self.token_ids.setdefault(role, []).append(made.get("id"))
        return out

    # ------------------------------------------------------------------------------ the end
    def stop_federation(self, limit_s: float = 15.0) -> tuple[float, int | None]:
        """SIGTERM to the federation: (seconds until it exited, exit code; None if killed after limit_s)."""
        proc = self.procs["federation"]
        if proc.poll() is not None:
            return 0.0, proc.returncode
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(limit_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
        return time.monotonic() - started, code

    def close(self) -> None:
        for thread in (self.sampler, self.prober):
            if thread is not None:
                thread.stop.set()
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.launcher is not None:
            try:
                self.launcher.wait(5)
            except subprocess.TimeoutExpired:
                self.launcher.kill()
                self.launcher.wait()

    # ------------------------------------------------------------------------------ logs
    def warnings(self) -> dict[str, list[tuple[int, str]]]:
        """Warnings and errors of each log, grouped (numbers, ids and addresses masked), most first."""
        out = {}
        for name, path in self.logs.items():
            groups: Counter = Counter()
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                if not re.search(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b", line):
                    continue
                key = re.sub(r"^\S+ \S+ ", "", line)                         # the time stamp
                key = re.sub(r"\b(wl|dt|ex)-\d+\b", "<edge>", key)
                key = re.sub(r"0x[0-9a-f]+|\d+(\.\d+)?", "N", key)[:160]
                groups[key] += 1
            out[name] = groups.most_common(12)
        return out


# the fleet's launcher: its processes in its session, their pids on stdout, signals passed on, reaped
LAUNCHER = r"""
import json, signal, subprocess, sys
specs = json.loads(sys.argv[1])
procs = [subprocess.Popen(spec["args"], stdout=open(spec["log"], "w"), stderr=subprocess.STDOUT) for spec in specs]
print(json.dumps([p.pid for p in procs]), flush=True)
signal.signal(signal.SIGTERM, lambda signum, frame: [p.send_signal(signum) for p in procs])
for p in procs:
    p.wait()
"""


class Adopted:
    """A process of the fleet's launcher, handled like a Popen from here (its exit code is the
    launcher's to know: 0 once it is gone)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                state = "gone"
            if state in ("gone", "Z", "X"):
                self.returncode = 0
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except OSError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.05)
        return self.returncode


class Sampler(threading.Thread):
    """VmRSS and CPU of every process each 0.5 s; a process past the RSS cap is killed (counted)."""

    def __init__(self, fleet: SoakFleet, interval: float = 0.5):
        super().__init__(daemon=True, name="soak-sampler")
        self.fleet, self.interval = fleet, interval
        self.stop = threading.Event()
        self.samples: dict[str, list[tuple[float, float, float]]] = {n: [] for n in fleet.procs}  # (t, MB, cpu %)
        self.killed: dict[str, float] = {}
        self.hwm_mb: dict[str, float] = {}
        self.threads: dict[str, int] = {}      # the most threads seen
        self.runnable: dict[str, list[int]] = {}   # threads in state R, every 2 s
        self.others: dict[str, subprocess.Popen] = {}

    def watch(self, name: str, proc: subprocess.Popen) -> None:
        """Sample another process too (the client processes)."""
        self.others[name] = proc
        self.samples.setdefault(name, [])

    def run(self) -> None:
        last: dict = {}
        ticks = 0
        while not self.stop.wait(self.interval):
            ticks += 1
            for name, proc in {**self.fleet.procs, **self.others}.items():
                if name not in last:
                    last[name] = (time.monotonic(), cpu_seconds(proc.pid) or 0.0)
                    continue
                if proc.poll() is not None:
                    continue
                if ticks % 4 == 0:
                    runnable = runnable_threads(proc.pid)
                    if runnable is not None:
                        self.runnable.setdefault(name, []).append(runnable)
                threads = proc_status_kb(proc.pid, "Threads")
                if threads is not None:
                    self.threads[name] = max(self.threads.get(name, 0), threads)
                rss = proc_status_kb(proc.pid, "VmRSS")
                hwm = proc_status_kb(proc.pid, "VmHWM")
                cpu = cpu_seconds(proc.pid)
                if rss is None or cpu is None:
                    continue
                now = time.monotonic()
                t0, c0 = last[name]
                last[name] = (now, cpu)
                self.samples[name].append((now, rss / 1024, 100 * (cpu - c0) / max(1e-6, now - t0)))
                if hwm is not None:
                    self.hwm_mb[name] = hwm / 1024
                if name in self.fleet.procs and rss / 1024 > self.fleet.rss_cap_mb and name not in self.killed:
                    self.killed[name] = rss / 1024
                    proc.kill()

    def summary(self, since: float | None = None) -> dict:
        out = {}
        for name, samples in self.samples.items():
            kept = [s for s in samples if since is None or s[0] >= since]
            if not kept:
                continue
            cpus = sorted(s[2] for s in kept)
            out[name] = {"rss_start_mb": round(kept[0][1], 1), "rss_end_mb": round(kept[-1][1], 1),
                         "rss_max_mb": round(max(s[1] for s in kept), 1),
                         "hwm_mb": round(self.hwm_mb.get(name, 0.0), 1),
                         "cpu_mean_pct": round(sum(cpus) / len(cpus), 1),
                         "cpu_p95_pct": round(cpus[int(0.95 * (len(cpus) - 1))], 1),
                         "threads_max": self.threads.get(name), "killed_at_mb": self.killed.get(name),
                         "runnable_mean": round(sum(r := self.runnable.get(name) or [0]) / len(r), 1),
                         "runnable_max": max(self.runnable.get(name) or [0])}
        return out


class Prober(threading.Thread):
    """Times GET /healthz and reads /metrics every second, in a thread of its own."""

    def __init__(self, fleet: SoakFleet, interval: float = 1.0, timeout: float = 2.0):
        super().__init__(daemon=True, name="soak-prober")
        self.fleet, self.interval, self.timeout = fleet, interval, timeout
        self.stop = threading.Event()
        self.health_ms: list[float] = []
        self.unanswered = 0
        self.metrics: dict[str, float] = {}
        self.first_metrics: dict[str, float] | None = None
        self.peaks: dict[str, float] = {}    # the highest value seen of a few gauges
        self.dropped: set[str] = set()       # edges seen offline at some poll
        self.min_online: int | None = None

    def poll_edges(self) -> None:
        status, body = self.fleet.request("GET", "/v1/edges?limit=10000", timeout=self.timeout)
        if status != 200:
            return
        edges = json.loads(body)["edges"]
        online = [e["id"] for e in edges if e.get("online")]
        self.dropped |= {e["id"] for e in edges if not e.get("online")}
        self.min_online = len(online) if self.min_online is None else min(self.min_online, len(online))

    def run(self) -> None:
        ticks = 0
        while not self.stop.wait(self.interval):
            ticks += 1
            if ticks % 5 == 0:
                try:
                    self.poll_edges()
                except (OSError, ValueError, KeyError):
                    pass
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.fleet.url + "/healthz", timeout=self.timeout) as resp:
                    resp.read()
                self.health_ms.append((time.monotonic() - started) * 1000)
            except OSError:
                if self.stop.is_set():
                    return
                self.unanswered += 1
            try:
                with urllib.request.urlopen(self.fleet.url + "/metrics", timeout=self.timeout) as resp:
                    self.metrics = parse_metrics(resp.read().decode())
                    for gauge in ("streamql_fragments_running", "streamql_queries_running"):
                        self.peaks[gauge] = max(self.peaks.get(gauge, 0.0), self.metrics.get(gauge, 0.0))
                    if self.first_metrics is None:
                        self.first_metrics = dict(self.metrics)
            except OSError:
                pass

    def delta(self, prefix: str) -> dict[str, float]:
        """Counters starting with prefix: their growth since the first read."""
        first = self.first_metrics or {}
        return {k: v - first.get(k, 0.0) for k, v in self.metrics.items() if k.startswith(prefix)
                and v - first.get(k, 0.0)}


def parse_metrics(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        try:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
        except ValueError:
            continue
    return out

"""A federation and a simulated fleet as the user runs them, for the scale benchmark and test:
`streamql federation` and `streamql edge --simulate N --processes K`, on loopback.

    fleet = ScaleFleet(work_dir, edges=400, processes=2)
    fleet.start()                        # federation, then the simulator (which provisions in batches)
    seconds = fleet.wait_connected(120)  # until every edge is online (None: not in time)
    first, rows, total, status = fleet.query("select count(e) from Edge e;")
    fleet.stop_federation()              # SIGTERM: (seconds, exit code)
    fleet.close()                        # kills whatever still runs; always called

`oracle_battery(identities, t0, t1)` recomputes, from the simulation function alone, the values
each edge's `signal_value('battery')` can have had between two times.
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ScaleFleet:
    def __init__(self, work_dir: Path, *, edges: int, processes: int = 1, heartbeat_s: float = 5.0, seed: int = 0,
                 trusted_key: Path | None = None, federation_args: list[str] = (), ramp_s: float | None = None,
                 simulator_nice: int = 0):
        self.dir = Path(work_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.edges, self.processes, self.heartbeat_s, self.seed = edges, processes, heartbeat_s, seed
        self.trusted_key = trusted_key
        self.federation_args = list(federation_args)
        self.ramp_s = ramp_s
        # the simulated fleet stands for devices with CPUs of their own: niced, it takes what the
        # federation leaves of this box's cores instead of an equal share (its processes are in
        # the federation's session, where a process's nice counts)
        self.simulator_nice = simulator_nice
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = self.dir / "federation"
        self.store = self.dir / "edges"
        self.federation: subprocess.Popen | None = None
        self.simulator: subprocess.Popen | None = None
        self.admin = ""

    def _spawn(self, name: str, *args: str, nice: int = 0) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}

        def prepare() -> None:
            _die_with_parent()
            if nice:
                os.nice(nice)

        return subprocess.Popen([PYTHON, "-m", "streamql.cli", *args], cwd=str(ROOT), env=env, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=prepare)

    # --- starting ------------------------------------------------------------------------------
    def start(self) -> "ScaleFleet":
        self.start_federation()
        self.start_simulator()
        return self

    def start_federation(self, timeout: float = 60.0) -> None:
        args = ["federation", "--data", str(self.data), "--port", str(self.port), "--heartbeat", str(self.heartbeat_s),
                *self.federation_args]
        if self.trusted_key is not None:
            args += ["--trusted-key", str(self.trusted_key)]
        self.federation = self._spawn("federation", *args)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.federation.poll() is not None:
                raise RuntimeError(f"the federation exited ({self.federation.returncode}); see {self.dir}/federation.log")
            token = self.data / "admin.token"
            if token.exists() and self._healthy():
                self.admin = token.read_text().strip()
                return
            time.sleep(0.1)
        raise RuntimeError("the federation did not start in time")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start_simulator(self, *extra: str) -> None:
        args = ["edge", "--simulate", str(self.edges), "--processes", str(self.processes),
                "--federation", f"ws://127.0.0.1:{self.port}", "--provision-token-file", str(self.data / "admin.token"),
                "--store", str(self.store), "--seed", str(self.seed), "--log-level", "warning", *extra]
        if self.ramp_s is not None:
            args += ["--ramp", str(self.ramp_s)]
        if self.trusted_key is not None:
            args += ["--trusted-key", str(self.trusted_key)]
        self.simulator = self._spawn("simulator", *args, nice=self.simulator_nice)

    def simulator_pids(self) -> list[int]:
        """The simulator's processes: the parent and, with --processes K > 1, its K children."""
        if self.simulator is None:
            return []
        children = Path(f"/proc/{self.simulator.pid}/task/{self.simulator.pid}/children")
        try:
            kids = [int(p) for p in children.read_text().split()]
        except OSError:
            kids = []
        return [self.simulator.pid, *kids]

    # --- watching ------------------------------------------------------------------------------
    def metric(self, name: str) -> float | None:
        try:
            with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError):
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def connected(self) -> int:
        return int(self.metric("streamql_edges_connected") or 0)

    def wait_connected(self, timeout: float, since: float | None = None) -> float | None:
        """Seconds from `since` (default now) until every edge is online; None if not in time."""
        since = time.monotonic() if since is None else since
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.simulator is not None and self.simulator.poll() is not None:
                raise RuntimeError(f"the simulator exited ({self.simulator.returncode}); see {self.dir}/simulator.log")
            if self.connected() >= self.edges:
                return time.monotonic() - since
            time.sleep(0.25)
        return None

    def federation_rss_kb(self) -> int | None:
        return rss_kb(self.federation.pid) if self.federation is not None else None

    def request(self, method: str, path: str, body: dict | bytes | None = None, content_type: str = "application/json",
                timeout: float = 120.0) -> tuple[int, dict]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                         headers={"Authorization": f"Bearer {self.admin}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def query(self, text: str, timeout: float = 300.0) -> tuple[float, list, float, dict]:
        """POST /v1/query as NDJSON: (first row s, rows, all rows s, the status line)."""
        request = urllib.request.Request(f"{self.url}/v1/query", data=json.dumps({"query": text}).encode(),
                                         method="POST", headers={"Authorization": f"Bearer {self.admin}",
                                                                 "Content-Type": "application/json",
                                                                 "Accept": "application/x-ndjson"})
        start = time.monotonic()
        first, rows, status = None, [], {}
        with urllib.request.urlopen(request, timeout=timeout) as response:
            for line in response:
                if first is None:
                    first = time.monotonic() - start
                item = json.loads(line)
                if isinstance(item, list):
                    rows.append(item)
                else:
                    status = item
        return first or 0.0, rows, time.monotonic() - start, status

    # --- stopping ------------------------------------------------------------------------------
    @staticmethod
    def _stop(process: subprocess.Popen | None, timeout: float) -> tuple[float | None, int | None]:
        if process is None or process.poll() is not None:
            return None, None if process is None else process.returncode
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
            return None, None
        return time.monotonic() - start, code

    def stop_federation(self, timeout: float = 30.0) -> tuple[float | None, int | None]:
        """SIGTERM the federation: (seconds until it exited, exit code); (None, None) if it had to be killed."""
        return self._stop(self.federation, timeout)

    def stop_simulator(self, timeout: float = 30.0) -> tuple[float | None, int | None]:
        return self._stop(self.simulator, timeout)

    def registry_state(self) -> dict:
        """The registry after a stop: devices, how many marked online, SQLite's integrity check."""
        with sqlite3.connect(self.data / "registry.sqlite3") as conn:
            count, online = conn.execute("SELECT count(*), coalesce(sum(online), 0) FROM devices").fetchone()
            tokens = conn.execute("SELECT count(*) FROM tokens WHERE role = 'device' AND revoked IS NULL").fetchone()[0]
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        return {"devices": count, "online": online, "device_tokens": tokens, "integrity": integrity}

    def close(self) -> None:
        for process in (self.simulator, self.federation):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
        for pid in self.simulator_pids()[1:]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


# == the oracle ===================================================================================
def oracle_battery(identities, t0: float, t1: float) -> dict[str, set[float]]:
    """For each edge, every value `signal_value('battery')` can have read between t0 and t1: the
    battery model's grid readings from the one at or before t0 to the one at or before t1."""
    from edge_engine.simulation import SimModel

    out = {}
    for identity in identities:
        spec = next(s for s in identity.signals if s["name"] == "battery")
        model = SimModel.from_spec(spec)
        first, last = math.floor(t0 * model.rate_hz), math.floor(t1 * model.rate_hz)
        times = [k / model.rate_hz for k in range(first, last + 1)]
        out[identity.id] = {float(v) for v in model.values_at(times)}
    return out


def low_battery_bounds(identities, possible: dict[str, set[float]], below: float = 20.0) -> dict[str, tuple[int, int]]:
    """Per region, the fewest and most edges whose battery read below `below` (an edge whose
    possible values straddle it may count either way)."""
    bounds: dict[str, list[int]] = {}
    for identity in identities:
        values = possible[identity.id]
        low, high = bounds.setdefault(identity.metadata["region"], [0, 0])
        bounds[identity.metadata["region"]] = [low + all(v < below for v in values),
                                               high + any(v < below for v in values)]
    return {region: (low, high) for region, (low, high) in bounds.items()}

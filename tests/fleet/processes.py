"""A federation and edges as the user runs them — `streamql federation` and one `streamql edge`
process per device, on 127.0.0.1 — with constant signals, so every fleet answer has an oracle
computed from this file alone.

    fleet = ConstantFleet(tmp_path).start()
    rows, last = fleet.post("select avg(signal_value('outside_temperature')@e) from Edge e;")
    fleet.stop()
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from streamql.process_limits import die_with_parent
from tests.loopback import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Device:
    id: str
    region: str
    kind: str
    temperature: float         # outside_temperature: a constant
    battery: float             # battery: a constant
    online: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def metadata(self) -> dict:
        return {"region": self.region, "kind": self.kind, **self.extra}


DEVICES = [
    Device("wl-0031", "US", "wheel loader", -25.0, 80.0),
    Device("wl-0032", "EU", "wheel loader", 5.0, 60.0),
    Device("dt-0005", "EU", "dumper", -30.0, 40.0),
    Device("dt-0006", "AU", "dumper", -22.0, 90.0),
    Device("ex-0001", "US", "excavator", -40.0, 20.0),
    Device("ex-0002", "SE", "excavator", -35.0, 70.0),
    Device("wl-0033", "US", "wheel loader", -50.0, 33.0),
    Device("dt-0007", "EU", "dumper", -21.0, 55.0, online=False),   # provisioned, never connected
]


class ConstantFleet:
    def __init__(self, directory: Path, devices: list[Device] = DEVICES, federation_args: list[str] = ()):
        self.dir = Path(directory)
        self.devices = list(devices)
        self.federation_args = list(federation_args)
        self.procs: dict[str, subprocess.Popen] = {}
        self.tokens: dict[str, str] = {}     # device id → its token
        self._env: dict[str, dict] = {}
        self.url = self.admin = self.read = ""

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        env.update(self._env.pop(name, {}))
        proc = subprocess.Popen([sys.executable, "-m", "streamql.cli", *args], cwd=self.dir, env=env,
                                stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> "ConstantFleet":
        self.dir.mkdir(parents=True, exist_ok=True)
        data = self.dir / "fed"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_federation()
        self.admin = (data / "admin.token").read_text().strip()
        self.read = self.api("POST", "/v1/tokens", {"role": "read", "label": "fleet tests"})["token"]
        for device in self.devices:
            made = self.api("POST", "/v1/edges", {"id": device.id, "metadata": device.metadata,
                                                   "capabilities": {"ram_kb": 65536}})
            self.tokens[device.id] = made["token"]
            if device.online:
                self.start_edge(device)
        self.wait(lambda: self.online() >= {d.id for d in self.devices if d.online}, 60, "the edges to connect")
        return self

    def start_federation(self) -> None:
        fed = self.spawn("federation", "federation", "--data", str(self.dir / "fed"), "--port", str(self.port),
                         "--heartbeat", "2", "--log-level", "warning", *self.federation_args)
        self.wait(self.healthy, 90, "the federation to listen", fed, "federation")

    def restart_federation(self) -> None:
        """Stop the federation (SIGTERM) and start it again on the same data and port; the edges
        reconnect by themselves."""
        federation = self.procs.pop("federation")
        federation.terminate()
        federation.wait(15)
        self.start_federation()
        self.wait(lambda: self.online() >= {d.id for d in self.devices if d.online}, 60, "the edges to reconnect")

    def start_edge(self, device: Device) -> subprocess.Popen:
        self._env[device.id] = {"STREAMQL_EDGE_TOKEN": self.tokens[device.id]}
        return self.spawn(device.id, "edge", "--id", device.id, "--federation", self.url,
                          "--store", str(self.dir / "edges" / device.id), "--heartbeat", "2",
                          "--log-level", "warning", "--reconnect-initial", "0.2", "--reconnect-max", "1",
                          "--signal", f"name=outside_temperature,shape=constant,offset={device.temperature},rate_hz=5",
                          "--signal", f"name=battery,shape=constant,offset={device.battery},rate_hz=2",
                          "--signal", f"name=load,shape=constant,offset={device.battery / 10},rate_hz=200")

    # --- the HTTP API --------------------------------------------------------------------------------
    def api(self, method: str, path: str, body: dict | None = None, token: str | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {token or self.admin}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def post(self, statement: str, **fields) -> tuple[int, list, dict]:
        """POST /v1/query with the read token: (HTTP status, rows, the last line or the error)."""
        body = json.dumps({"query": statement, **fields}).encode()
        request = urllib.request.Request(self.url + "/v1/query", data=body, method="POST", headers={
            "Authorization": f"Bearer {self.read}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                lines = [json.loads(line) for line in response.read().decode().splitlines() if line.strip()]
                return response.status, [l for l in lines if isinstance(l, list)], lines[-1]
        except urllib.error.HTTPError as exc:
            return exc.code, [], json.loads(exc.read())

    def online(self) -> set[str]:
        return {e["id"] for e in self.api("GET", "/v1/edges")["edges"] if e.get("online")}

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def wait(self, predicate, timeout: float, what: str, proc=None, name: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n{self.log(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}:\n{self.log('federation')[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(list(self.procs.values())):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()


# the embedded default; NATS with nodes sharing one SQLite file; the real scale-out configuration
# (two nodes with their own data dirs, PostgreSQL, a secured nats-server: tests/nats/scaleout_fleet.py)
TRANSPORTS = ["websocket", "nats", "scale-out"]


def start_fleet(directory, transport: str = "websocket", devices=DEVICES, *, federation_args=(),
                two_nodes: bool = False) -> ConstantFleet:
    """The constant fleet on the embedded WebSocket hub, or on NATS (tests/nats/nats_fleet.py): one
    federation node, or with `two_nodes` nodes A and B where the edges say hello to B before A is up
    and every request goes to A. "scale-out" always runs nodes A and B (requests to A)."""
    if transport == "websocket":
        return ConstantFleet(directory, devices, list(federation_args)).start()
    sys.path.insert(0, str(ROOT / "tests" / "nats"))
    if transport == "scale-out":
        from scaleout_fleet import ScaleOutFleet

        return ScaleOutFleet(directory, devices, nodes=("A", "B"), first="B" if two_nodes else "A",
                             federation_args=list(federation_args)).start().on("A")
    from nats_fleet import NatsFleet

    if two_nodes:
        return NatsFleet(directory, devices, nodes=("A", "B"), first="B",
                         federation_args=list(federation_args)).start().on("A")
    return NatsFleet(directory, devices, nodes=("A",), federation_args=list(federation_args)).start()

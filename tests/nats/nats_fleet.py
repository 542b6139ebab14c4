"""The constant fleet of tests/fleet/processes.py on NATS: a nats-server, federation nodes
(`streamql federation --nats`, sharing one data directory and so one SQLite registry, each with its
own port and node id) and one `streamql edge --nats` process per device.

    fleet = NatsFleet(tmp_path, nodes=("A", "B"), first="B").start()
    fleet.post(statement, node="A")        # any node answers for every edge
    fleet.kill_node("A"); fleet.start_node("A")
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "fleet"))

from tests.nats_servers import NatsServer  # noqa: E402
from processes import DEVICES, ConstantFleet, Device, free_port  # noqa: E402

__all__ = ["NatsFleet", "DEVICES", "Device"]


class NatsFleet(ConstantFleet):
    def __init__(self, directory: Path, devices: list[Device] = DEVICES, *, nodes=("A", "B"), first: str | None = None,
                 lease_s: float = 3.0, federation_args: list[str] = (), edge_args: list[str] = (),
                 server: NatsServer | None = None):
        super().__init__(directory, devices, federation_args)
        self.edge_args = list(edge_args)
        self.node_names = list(nodes)
        self.first = first or self.node_names[0]
        self.lease_s = lease_s
        self.server = server
        self.own_server = server is None
        self.ports: dict[str, int] = {}

    def flow_numbers(self, node: str, flow: str, edges) -> dict[str, list[int]]:
        """edge → every number node `node` keeps in the flow, in the order of its log (all pages)."""
        self.on(node)
        out: dict[str, list[int]] = {d.id: [] for d in edges}
        after = 0
        while True:
            page = self.api("GET", f"/v1/flows/{flow}?after={after}&limit=10000")
            for record in page["records"]:
                out[record["edge"]] += [int(r) for r in record["rows"]]
            if not page["records"]:
                return out
            after = page["next"]

    # --- processes -------------------------------------------------------------------------------
    def start(self) -> "NatsFleet":
        try:
            return self._start()
        except BaseException:
            self.stop()      # nothing left running when the start fails
            raise

    def _start(self) -> "NatsFleet":
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.server is None:
            self.server = NatsServer(self.dir).start()
        self.ports = {name: free_port() for name in self.node_names}
        self.port = self.ports[self.first]
        self.url = self.node_url(self.first)
        self.start_node(self.first)
        self.admin = (self.dir / "fed" / "admin.token").read_text().strip()
        self.read = self.api("POST", "/v1/tokens", {"role": "read", "label": "fleet tests"})["token"]
        for device in self.devices:
            made = self.api("POST", "/v1/edges", {"id": device.id, "metadata": device.metadata,
                                                   "capabilities": {"ram_kb": 65536}})
            self.tokens[device.id] = made["token"]
            if device.online:
                self.start_edge(device)
        want = {d.id for d in self.devices if d.online}
        self.wait(lambda: self.online() >= want, 180, "the edges to connect")
        for name in self.node_names:
            if name != self.first:
                self.start_node(name)
                self.wait(lambda: self.online(name) >= want, 90, f"node {name} to know the edges")
        return self

    def node_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start_federation(self) -> None:   # ConstantFleet.restart_federation: the first node
        self.start_node(self.first)

    def start_node(self, name: str) -> None:
        proc = self.spawn(f"node-{name}", "federation", "--data", str(self.dir / "fed"), "--port",
                          str(self.ports[name]), "--heartbeat", "2", "--log-level", "warning",
                          "--nats", self.server.url, "--nats-node", name, "--nats-lease", f"{self.lease_s:g}",
                          *self.federation_args)
        self.procs["federation" if name == self.first else f"node-{name}"] = self.procs.pop(f"node-{name}")
        self.wait(lambda: self.healthy(name), 90, f"node {name} to listen", proc, f"node-{name}")

    def node_proc(self, name: str):
        return self.procs["federation" if name == self.first else f"node-{name}"]

    def kill_node(self, name: str) -> None:
        proc = self.node_proc(name)
        proc.kill()
        proc.wait(10)

    def start_edge(self, device: Device):
        self._env[device.id] = {"STREAMQL_EDGE_TOKEN": self.tokens[device.id]}
        return self.spawn(device.id, "edge", "--id", device.id, "--nats", self.server.url,
                          "--store", str(self.dir / "edges" / device.id), "--heartbeat", "2",
                          "--log-level", "warning", "--reconnect-initial", "0.2", "--reconnect-max", "1",
                          "--signal", f"name=outside_temperature,shape=constant,offset={device.temperature},rate_hz=5",
                          "--signal", f"name=battery,shape=constant,offset={device.battery},rate_hz=2",
                          "--signal", f"name=load,shape=constant,offset={device.battery / 10},rate_hz=200", *self.edge_args)

    # --- the HTTP API of one node --------------------------------------------------------------------
    def on(self, name: str) -> "NatsFleet":
        """Send the next requests to node `name`."""
        self.url = self.node_url(name)
        return self

    def post(self, statement: str, node: str | None = None, **fields):
        if node is not None:
            self.on(node)
        return super().post(statement, **fields)

    def online(self, node: str | None = None) -> set[str]:
        if node is not None:
            self.on(node)
        return super().online()

    def healthy(self, node: str | None = None) -> bool:
        if node is not None:
            self.on(node)
        return super().healthy()

    def log(self, name: str) -> str:
        if name == "federation":
            name = f"node-{self.first}"
        return super().log(name)

    def stop(self) -> None:
        super().stop()
        if self.own_server and self.server is not None:
            self.server.stop()

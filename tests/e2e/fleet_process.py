"""A federation process and a process of simulated edge daemons (`streamql edge --simulate N`) on
loopback, for end-to-end tests that need a fleet of their own (demo_process.py runs the demo)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import streamql
from federation.testing import make_bundle
from streamql.models import keygen

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Fleet:
    """A federation process and a process of simulated edges, on loopback."""

    def __init__(self, data: Path, edges: int, *, offline: list[str] = (), federation_args: list[str] = (),
                 transport: str = "websocket"):
        """transport "nats": a nats-server of its own, the federation and the edges linked through it.
        "scale-out": PostgreSQL, a nats-server secured by `streamql federation nats-config` and two
        federation nodes with data directories of their own (tests/nats/scaleout_fleet.py); the
        edges authenticate through the nodes' auth callout, every HTTP request goes to node A."""
        self.data = data
        self.nats = None
        self.infra = None
        edge_args: list[str] = []
        node_b_args: list[str] = []
        if transport in ("nats", "scale-out"):
            sys.path.insert(0, str(ROOT / "tests" / "nats"))
        if transport == "nats":
            from tests.nats_servers import NatsServer

            self.nats = NatsServer(data).start()
            federation_args = [*federation_args, "--nats", self.nats.url, "--nats-lease", "3"]
            edge_args = ["--nats", self.nats.url]
        elif transport == "scale-out":
            from scaleout_fleet import ScaleOutInfra

            self.infra = ScaleOutInfra(data, first_data=data / "fed").start()
            shared = ["--registry", self.infra.registry_url, "--nats", self.infra.nats_url, "--nats-lease", "3"]
            node_b_args = [*federation_args, *shared, "--nats-node", "B"]
            federation_args = [*federation_args, *shared, "--nats-node", "A"]
            edge_args = ["--nats", self.infra.nats_url]
        self.log = open(data / "processes.log", "w")
        self.children: list[subprocess.Popen] = []
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.key, self.pub = keygen(data / "release")
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._spawn(env, "federation", "--data", str(data / "fed"), "--port", str(port), "--trusted-key",
                    str(self.pub), *federation_args, "--log-level", "warning")
        token_file = data / "fed" / "admin.token"
        self._until(lambda: token_file.exists() and self._healthy(), 60, "the federation did not start")
        self.admin = token_file.read_text().strip()
        if node_b_args:       # the second node: its own data dir and port, the same fleet
            port_b = _free_port()
            self._spawn(env, "federation", "--data", str(self.infra.node_data("B")), "--port", str(port_b),
                        "--trusted-key", str(self.pub), *node_b_args, "--log-level", "warning")
            self.url_b = f"http://127.0.0.1:{port_b}"
            self._until(lambda: self._healthy(self.url_b), 60, "node B did not start")
        self.client = streamql.connect(self.url, self.admin)
        for device in offline:    # registered, never connected
            self.client.provision(device, {"kind": "dumper", "region": "US"}, {"ram_kb": 1 << 20})
        self._spawn(env, "edge", "--simulate", str(edges), "--federation", self.url, "--provision-token-file",
                    str(token_file), "--store", str(data / "edges"), "--seed", "5", "--trusted-key", str(self.pub),
                    "--log-level", "warning", *edge_args)
        self._until(lambda: sum(1 for e in self.client.edges() if e.get("online")) >= edges, 120,
                    "the simulated edges did not come online")
        self.online = sorted(e["id"] for e in self.client.edges() if e.get("online"))

    def _spawn(self, env, *arguments: str) -> None:
        self.children.append(subprocess.Popen([sys.executable, "-m", "streamql.cli", *arguments], stdout=self.log,
                                              stderr=self.log, stdin=subprocess.DEVNULL, env=env, cwd=str(ROOT)))

    def _healthy(self, url: str | None = None) -> bool:
        try:
            urllib.request.urlopen(f"{url or self.url}/healthz", timeout=1).read()
            return True
        except OSError:
            return False

    def _until(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if any(child.poll() is not None for child in self.children) or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{what}: see {self.data / 'processes.log'}")
            time.sleep(0.2)

    def upload(self, name: str, version: str, autostart: str) -> None:
        data = make_bundle(self.data / "bundles", name, version, private_key=self.key,
                           requirements={"signals": ["vibration"]},
                           files={"functions.sql": f"create function {name}_version() -> Charstring as '{version}';\n",
                                  f"autostart/{name}.sql": autostart})
        self.client.upload_model(data)

    def deploy(self, statement: str, timeout: float = 120) -> dict:
        result = self.client.query(statement)
        list(result)
        assert result.deployment_id, statement
        return self.client.wait_deployment(result.deployment_id, timeout)

    def running(self, name: str) -> dict:
        """device → the version of bundle `name` its own engine runs (asked of each device)."""
        result = self.client.query(f"select id(e), {name}_version()@e from Edge e where online(e);")
        return {**{d: None for d in self.online}, **dict(result)}

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        if self.nats is not None:
            self.nats.stop()
        if self.infra is not None:
            self.infra.stop()
        self.log.close()

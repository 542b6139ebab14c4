"""The scale benchmark's second column: two federation nodes on one nats-server, as the user runs them.

    fleet = NatsScaleFleet(work_dir, edges=1000, processes=1, registry="postgresql")
    fleet.start_federation()       # PostgreSQL + a secured nats-server (or nats-server + one SQLite file), nodes A and B
    fleet.start_simulator()        # `streamql edge --simulate N --nats URL` (provisioned through A's HTTP API)
    fleet.wait_connected(600)      # until both nodes count every edge
    fleet.query(...)               # to node A

`registry="postgresql"` is the scale-out configuration of docs/operations.md: each node its own
data directory, the registry in PostgreSQL, a nats-server secured by `streamql federation
nats-config` (every edge authenticated with its device token through the nodes' auth callout).
`registry="sqlite"`: both nodes on one data directory (one SQLite registry), an open nats-server.
The servers come from tests/pg_server.py and tests/nats (the fixtures the tests use).
"""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from scale_fleet import ROOT, ScaleFleet, free_port, rss_kb

for _path in (str(ROOT), str(ROOT / "tests" / "nats")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

NODES = ("A", "B")


def postgresql_available() -> bool:
    from tests.pg_server import find_bin_dir

    return find_bin_dir() is not None


class NatsScaleFleet(ScaleFleet):
    """ScaleFleet with two federation nodes on NATS; `url` is node A's (queries go there)."""

    def __init__(self, work_dir: Path, *, registry: str = "postgresql", **options):
        super().__init__(work_dir, **options)
        if registry not in ("postgresql", "sqlite"):
            raise ValueError(f"registry {registry!r}: postgresql or sqlite")
        self.registry = registry
        self.ports = {name: (self.port if name == NODES[0] else free_port()) for name in NODES}
        self.nodes: dict = {}
        self.infra = None       # ScaleOutInfra (postgresql) or NatsServer (sqlite)
        self.nats_url = ""

    @property
    def description(self) -> str:
        return ("two nodes, PostgreSQL registry, secured nats-server (auth callout)" if self.registry == "postgresql"
                else "two nodes on one SQLite registry, open nats-server")

    def node_data(self, name: str) -> Path:
        if name == NODES[0] or self.registry == "sqlite":
            return self.data
        return self.infra.node_data(self.dir / f"federation-{name}")

    def start_federation(self, timeout: float = 90.0) -> None:
        if self.registry == "postgresql":
            from scaleout_fleet import ScaleOutInfra

            self.infra = ScaleOutInfra(self.dir / "infra", first_data=self.data).start()
            self.nats_url = self.infra.nats_url
            extra = ["--registry", self.infra.registry_url]
        else:
            from tests.nats_servers import NatsServer

            self.infra = NatsServer(self.dir / "infra").start()
            self.nats_url = self.infra.url
            extra = []
        for name in NODES:   # A first: it creates the admin token (and the NATS storage)
            args = ["federation", "--data", str(self.node_data(name)), "--port", str(self.ports[name]),
                    "--heartbeat", str(self.heartbeat_s), "--nats", self.nats_url, "--nats-node", name, *extra,
                    *self.federation_args]
            if self.trusted_key is not None:
                args += ["--trusted-key", str(self.trusted_key)]
            self.nodes[name] = self._spawn(f"federation-{name}", *args)
            self._wait_node(name, timeout)
        self.federation = self.nodes[NODES[0]]
        self.admin = (self.data / "admin.token").read_text().strip()

    def _wait_node(self, name: str, timeout: float) -> None:
        url, deadline = self.url, time.monotonic() + timeout
        self.url = f"http://127.0.0.1:{self.ports[name]}"
        try:
            while time.monotonic() < deadline:
                if self.nodes[name].poll() is not None:
                    raise RuntimeError(f"node {name} exited ({self.nodes[name].returncode}); "
                                       f"see {self.dir}/federation-{name}.log")
                if (self.data / "admin.token").exists() and self._healthy():
                    return
                time.sleep(0.2)
            raise RuntimeError(f"node {name} did not start in time")
        finally:
            self.url = url

    def start_simulator(self, *extra: str) -> None:
        # tokens provisioned through node A's HTTP API; the edges link over NATS only
        super().start_simulator("--nats", self.nats_url, *extra)

    # --- watching ------------------------------------------------------------------------------
    def connected_per_node(self) -> dict[str, int]:
        url, counts = self.url, {}
        try:
            for name in NODES:
                self.url = f"http://127.0.0.1:{self.ports[name]}"
                counts[name] = int(self.metric("streamql_edges_connected") or 0)
        finally:
            self.url = url
        return counts

    def connected(self) -> int:
        """Edges both nodes hold (every hello goes to every node)."""
        return min(self.connected_per_node().values())

    def node_rss_kb(self) -> dict[str, int]:
        return {name: rss_kb(process.pid) or 0 for name, process in self.nodes.items()}

    def federation_rss_kb(self) -> int | None:
        return sum(self.node_rss_kb().values())

    # --- stopping ------------------------------------------------------------------------------
    def stop_federation(self, timeout: float = 30.0) -> tuple[float | None, int | None]:
        """SIGTERM both nodes at once: (seconds until the last exited, the worst exit code)."""
        running = [p for p in self.nodes.values() if p.poll() is None]
        start = time.monotonic()
        for process in running:
            process.send_signal(signal.SIGTERM)
        codes = []
        for process in running:
            try:
                codes.append(process.wait(max(0.1, timeout - (time.monotonic() - start))))
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: killed below
                for other in running:
                    if other.poll() is None:
                        other.kill()
                        other.wait(5)
                return None, None
        return time.monotonic() - start, max(codes, key=abs) if codes else None

    def registry_state(self) -> dict:
        if self.registry == "sqlite":
            return super().registry_state()
        import psycopg

        with psycopg.connect(self.infra.registry_url) as conn:
            count, online = conn.execute("SELECT count(*), count(*) FILTER (WHERE online) FROM devices").fetchone()
            tokens = conn.execute("SELECT count(*) FROM tokens WHERE role = 'device' AND revoked IS NULL").fetchone()[0]
        return {"devices": count, "online": online, "device_tokens": tokens}

    def close(self) -> None:
        super().close()
        for process in self.nodes.values():
            if process.poll() is None:
                process.kill()
                process.wait(10)
        if self.infra is not None:
            self.infra.stop()
            self.infra = None

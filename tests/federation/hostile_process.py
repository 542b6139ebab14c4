"""A federation and a simulated fleet as real processes, for the hostile-client tests.

    with Deployment(tmp_path, edges=21) as fleet:
        await fleet.alive(session)          # `select 1;` answered, every edge still connected
        fleet.peak_rss_mb()                 # the federation's peak resident memory (VmHWM)
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from streamql.models import keygen
from tests.loopback import free_port

REPO = Path(__file__).resolve().parents[2]


def status_of(pid: int, field: str) -> int:
    """A `/proc/<pid>/status` field in kB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class Deployment:
    """`streamql federation` and `streamql edge --simulate N` as child processes."""

    def __init__(self, tmp_path: Path, edges: int = 21, federation_flags: tuple = ()):
        self.dir, self.edges = tmp_path, edges
        self.private, self.public = keygen(tmp_path / "keys" / "release")
        self.data = tmp_path / "fed"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.logs = {}
        self.fleet = None
        self.federation = self._spawn("federation", "federation", "--data", str(self.data), "--port", str(self.port),
                                      "--trusted-key", str(self.public), "--heartbeat", "2", "--log-level", "warning",
                                      *federation_flags)
        try:
            self._wait(self._healthy, 30, "the federation to listen")
            self.admin = (self.data / "admin.token").read_text().strip()
            self.fleet = self._spawn("fleet", "edge", "--simulate", str(edges), "--federation", self.url,
                                     "--provision-token-file", str(self.data / "admin.token"), "--store",
                                     str(tmp_path / "edges"), "--heartbeat", "2", "--reconnect-initial", "0.2",
                                     "--reconnect-max", "1", "--log-level", "warning")
            self._wait(lambda: self.online() == edges, 60, f"{edges} edges to connect")
            self.edge_ids = self.online_ids()
        except BaseException:
            self.close()
            raise

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "w")
        self.logs[name] = log
        return subprocess.Popen([sys.executable, "-m", "streamql.cli", *args], cwd=REPO, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT)

    def log(self, name: str) -> str:
        self.logs[name].flush()
        return (self.dir / f"{name}.log").read_text()

    def _wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            for name, proc in (("federation", self.federation), ("fleet", self.fleet)):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}) waiting for {what}:\n{self.log(name)[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def online(self) -> int:
        request = urllib.request.Request(self.url + "/v1/edges?online=true&limit=1",
                                         headers={"Authorization": f"Bearer {self.admin}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                import json
                return json.loads(resp.read())["total"]
        except OSError:
            return -1

    def online_ids(self) -> set[str]:
        import json
        request = urllib.request.Request(self.url + "/v1/edges?online=true&limit=10000",
                                         headers={"Authorization": f"Bearer {self.admin}"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            return {e["id"] for e in json.loads(resp.read())["edges"]}

    def peak_rss_mb(self) -> float:
        return status_of(self.federation.pid, "VmHWM") / 1024

    def rss_mb(self) -> float:
        return status_of(self.federation.pid, "VmRSS") / 1024

    def header(self, token: str | None = None) -> dict:
        return {"Authorization": f"Bearer {token or self.admin}"}

    async def alive(self, session, token: str | None = None) -> None:
        """After each hostile act: `select 1;` answered over POST /v1/query, every edge connected."""
        async with session.post(self.url + "/v1/query", json={"query": "select 1;"},
                                headers=self.header(token)) as resp:
            assert resp.status == 200, await resp.text()
            lines = (await resp.text()).splitlines()
        assert lines[0] == "[1]", lines
        async with session.get(self.url + "/v1/edges?online=true&limit=10000", headers=self.header()) as resp:
            online = {e["id"] for e in (await resp.json())["edges"]}
        assert self.edge_ids <= online, f"edges gone: {sorted(self.edge_ids - online)}"

    def stop(self, proc: subprocess.Popen, timeout: float = 15.0) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took)."""
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        return code, time.monotonic() - started

    def close(self) -> None:
        for proc in (self.fleet, self.federation):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in self.logs.values():
            log.close()

    def __enter__(self) -> "Deployment":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""A real federation and a real simulated fleet, as processes on 127.0.0.1, for the dashboard tests.

    fleet = DashboardFleet(tmp_path).start()
    fleet.url, fleet.admin, fleet.read          # the federation and tokens
    fleet.deploy_bundle("vib-anomaly", "1.0.0", requirements={"ram_kb": 200000})
    fleet.stop()

The fleet: `streamql federation` (a release key trusted), four simulated edges of seed 2 that trust
the key (EDGES: a wheel loader, a dumper, an excavator, a wheel loader, with the regions and RAM
the simulation gives them), one more simulated edge that trusts no key (UNTRUSTING: it refuses
every bundle) and one device provisioned but never connected (OFFLINE, in the region of EDGES[1]).
Tests read the metadata from the registry rather than assuming the simulation's choices.
`python -m tests.dashboard.fleet` runs the same fleet until Ctrl-C and prints the dashboard's
address, for working on the page by hand.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from edge_engine.simulate import fleet_identities
from streamql.process_limits import die_with_parent
from tests.loopback import free_port

ROOT = Path(__file__).resolve().parents[2]
SEED = 2
EDGES = [identity.id for identity in fleet_identities(4, SEED)]
UNTRUSTING = fleet_identities(1, SEED, prefix="x-")[0].id
OFFLINE = "spare-0099"


class DashboardFleet:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.procs: list[subprocess.Popen] = []
        self.url = ""
        self.admin = self.read = ""

    # --- processes ---------------------------------------------------------------------------------
    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "streamql.cli", *args], cwd=self.dir, env=env,
                                stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        log.close()
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> "DashboardFleet":
        from streamql.models import keygen

        self.dir.mkdir(parents=True, exist_ok=True)
        self.private, self.public = keygen(self.dir / "keys" / "release")
        data = self.dir / "fed"
        for attempt in range(3):
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            fed = self._spawn("federation", "federation", "--data", str(data), "--port", str(port),
                              "--trusted-key", str(self.public), "--heartbeat", "2", "--log-level", "warning")
            try:
                self._wait(lambda: self._healthy(), 20, "the federation to listen", fed, "federation")
                break
            except RuntimeError:
                if attempt == 2 or "address already in use" not in self.log("federation").lower():
                    raise
                self.procs.remove(fed)
        self.admin = (data / "admin.token").read_text().strip()
        self.read = self.api("POST", "/v1/tokens", {"role": "read", "label": "dashboard tests"})["token"]
        common = ["--federation", self.url, "--provision-token-file", str(data / "admin.token"), "--heartbeat", "2",
                  "--log-level", "warning",
                  "--reconnect-initial", "0.2", "--reconnect-max", "2"]
        self._spawn("edges", "edge", "--simulate", str(len(EDGES)), "--seed", str(SEED), "--store",
                    str(self.dir / "edges"), "--trusted-key", str(self.public), *common)
        self._spawn("untrusting", "edge", "--simulate", "1", "--seed", str(SEED), "--id-prefix", "x-", "--store",
                    str(self.dir / "untrusting"), *common)
        self._wait(lambda: self.online() >= set(EDGES) | {UNTRUSTING}, 40, "the edges to come online")
        region = self.edges()[EDGES[1]]["metadata"]["region"]
        self.api("POST", "/v1/edges", {"id": OFFLINE, "metadata": {"region": region, "kind": "dumper", "site": "depot"},
                                        "capabilities": {"ram_kb": 524288}})
        return self

    def edges(self) -> dict[str, dict]:
        """Every registered device by id, as GET /v1/edges has it."""
        return {e["id"]: e for e in self.api("GET", "/v1/edges")["edges"]}

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def _wait(self, predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, name: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n{self.log(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}:\n" + "\n".join(
                    f"--- {n}\n{self.log(n)[-3000:]}" for n in ("federation", "edges", "untrusting")))
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()  # SIGTERM: SIGINT may be ignored by processes started in the background
        for proc in reversed(self.procs):
            try:
                proc.wait(8)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()

    # --- the API -----------------------------------------------------------------------------------
    def api(self, method: str, path: str, body=None, *, token: str | None = None, raw: bytes | None = None,
            content_type: str = "application/json"):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {token or self.admin}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read().decode()}") from None
        if "ndjson" in resp.headers.get("Content-Type", ""):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text)

    def online(self) -> set[str]:
        try:
            return {e["id"] for e in self.api("GET", "/v1/edges?online=true")["edges"]}
        except (AssertionError, OSError):
            return set()

    def deploy_bundle(self, name: str, version: str, *, requirements: dict | None = None) -> str:
        """Upload a signed bundle and deploy it to every edge, in one wave (the device that refuses it
        must not stop a staged rollout before the others are sent); the deployment's id."""
        from federation.testing import make_bundle

        data = make_bundle(self.dir / "bundles", name, version, private_key=self.private, requirements=requirements)
        self.api("POST", "/v1/models", raw=data, content_type="application/octet-stream")
        lines = self.api("POST", "/v1/query",
                         {"query": f"deploy model '{name}' version '{version}' to Edge e over 1 waves;"})
        return str(lines[-1]["deployment_id"])


def main() -> int:
    def interrupted(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    directory = Path(tempfile.mkdtemp(prefix="streamql-dashboard-"))
    fleet = DashboardFleet(directory).start()
    print(f"dashboard: {fleet.url}/?token={fleet.read}\nadmin token: {fleet.admin}\ndata: {directory}", flush=True)
    try:
        fleet.deploy_bundle("vib-anomaly", "1.0.0", requirements={"ram_kb": 200000})
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fleet.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Staged rollouts on real processes: a `streamql federation` and nine simulated edges (`streamql
edge --simulate 9`, each a full edge daemon). A bundle whose autostart query fails on its first
data, deployed `over 3 waves abort above 10 percent rollback on abort`, stops after the first
wave: those devices go back to the version they ran, the others are never sent anything. A good
bundle goes through every wave. A device that is offline does not hold its wave past the timeout."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import streamql
from federation.testing import make_bundle
from streamql.models import keygen

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
EDGES = 9
OFFLINE = "aa-offline"    # provisioned before the fleet: the first device the registry lists
GOOD = "select stream of x from Real x where x in signal_stream('vibration') and x > 1e9;\n"
# windows of two readings: w[3] is out of range when the first window comes (a run-time error)
BAD = "select stream of w[3] from Vector of Real w where w in winagg(signal_stream('vibration'), 2, 2);\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    return json.loads(urllib.request.urlopen(request, timeout=5).read())


class Fleet:
    """A federation process and a process of simulated edges, on loopback."""

    def __init__(self, data: Path):
        self.data = data
        self.log = open(data / "processes.log", "w")
        self.children: list[subprocess.Popen] = []
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.key, self.pub = keygen(data / "release")
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._spawn(env, "federation", "--data", str(data / "fed"), "--port", str(port), "--trusted-key",
                    str(self.pub), "--deploy-settle", "1", "--log-level", "warning")
        token_file = data / "fed" / "admin.token"
        self._until(lambda: token_file.exists() and self._healthy(), 60, "the federation did not start")
        self.admin = token_file.read_text().strip()
        self.client = streamql.connect(self.url, self.admin)
        self.client.provision(OFFLINE, {"kind": "dumper", "region": "US"}, {"ram_kb": 1 << 20})
        self._spawn(env, "edge", "--simulate", str(EDGES), "--federation", self.url, "--provision", self.admin,
                    "--store", str(data / "edges"), "--seed", "5", "--trusted-key", str(self.pub),
                    "--log-level", "warning")
        self._until(lambda: sum(1 for e in self.client.edges() if e.get("online")) >= EDGES, 120,
                    "the simulated edges did not come online")
        self.online = sorted(e["id"] for e in self.client.edges() if e.get("online"))

    def _spawn(self, env, *arguments: str) -> None:
        self.children.append(subprocess.Popen([sys.executable, "-m", "streamql.cli", *arguments], stdout=self.log,
                                              stderr=self.log, stdin=subprocess.DEVNULL, env=env, cwd=str(ROOT)))

    def _healthy(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.url}/healthz", timeout=1).read()
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
        self.log.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    running = Fleet(tmp_path_factory.mktemp("rollouts"))
    try:
        yield running
    finally:
        running.stop()


def test_a_bad_bundle_stops_after_the_first_wave_and_is_rolled_back(fleet):
    fleet.upload("canary", "1.0.0", GOOD)
    fleet.upload("canary", "2.0.0", BAD)
    where = f"where id(e) != '{OFFLINE}'"
    assert fleet.deploy(f"deploy model 'canary' version '1.0.0' to Edge e {where} over 1 waves;")["state"] == "done"
    assert set(fleet.running("canary").values()) == {"1.0.0"}

    progress = fleet.deploy(f"deploy model 'canary' version '2.0.0' to Edge e {where} "
                            "over 3 waves abort above 10 percent rollback on abort;")
    assert progress["state"] == "aborted", progress
    waves = progress["waves"]
    assert waves["sizes"] == [3, 3, 3] and [w["state"] for w in waves["list"]] == ["aborted", "skipped", "skipped"]
    by_wave: dict[int, list] = {}
    for device in progress["devices"]:
        by_wave.setdefault(device["wave"], []).append(device)
    # the first wave installed it, saw its autostart query fail, and went back to 1.0.0
    for device in by_wave[1]:
        assert device["state"] == "rolled_back", device
        assert "autostart query canary:autostart/canary.sql#1 failed" in device["reason"], device
        assert device["reason"].endswith("rolled back to 1.0.0"), device
    # the others were never sent anything
    for device in by_wave[2] + by_wave[3]:
        assert device["state"] == "skipped" and "rollout aborted after wave 1" in device["reason"], device
    assert progress["abort"]["rollback"] == "done" and progress["abort"]["rolled_back"] == 3
    assert "3 of 3 devices failed, more than 10 percent" in progress["abort"]["reason"]
    assert set(fleet.running("canary").values()) == {"1.0.0"}      # every device's own engine says so
    versions = dict(fleet.client.query("select id(e), model_version(e, 'canary') from Edge e where online(e);"))
    assert set(versions.values()) == {"1.0.0"}


def test_a_good_bundle_goes_through_every_wave(fleet):
    fleet.upload("probe", "1.0.0", GOOD)
    started = time.monotonic()
    progress = fleet.deploy(f"deploy model 'probe' to Edge e where id(e) != '{OFFLINE}' "
                            "over 3 waves abort above 10 percent;")
    assert progress["state"] == "done" and progress["counts"]["done"] == EDGES, progress
    assert [w["state"] for w in progress["waves"]["list"]] == ["done"] * 3
    assert all(w["failed_share"] == 0.0 and w["done"] == 3 for w in progress["waves"]["list"])
    assert time.monotonic() - started >= 3          # three waves, each waiting for its devices to settle
    assert set(fleet.running("probe").values()) == {"1.0.0"}


def test_an_offline_device_does_not_hold_its_wave_past_the_timeout(fleet):
    fleet.upload("late", "1.0.0", GOOD)
    started = time.monotonic()
    result = fleet.client.query(f"deploy model 'late' to Edge e where id(e) in ('{OFFLINE}', '{fleet.online[0]}') "
                                "over waves of 1 wave timeout 4 seconds;")
    list(result)
    progress = fleet.client.wait_deployment(result.deployment_id, 60)
    elapsed = time.monotonic() - started
    assert progress["settled"] and progress["state"] == "running" and progress["waiting_for_offline"] == 1, progress
    first = progress["waves"]["list"][0]
    states = {d["id"]: d["state"] for d in progress["devices"]}
    assert states == {OFFLINE: "pending", fleet.online[0]: "done"}
    # the offline device comes first (by registration and by id): its wave waited out its timeout, then
    # went on, finishing nobody (so nothing to abort), and the next wave went
    assert first["offline"] == [OFFLINE] and first["devices"] == 1 and first["failed_share"] is None, first
    assert 4 <= elapsed < 20, elapsed
    assert first["state"] == "done" and progress["waves"]["list"][1]["state"] == "done"
    assert fleet.running("late")[fleet.online[0]] == "1.0.0"

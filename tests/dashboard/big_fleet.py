"""A federation with 10,000 registered devices (registry rows written before it starts: no live
edges needed) and a few live simulated edges, for the console's scale test and its benchmark.

    fleet = BigFleet(directory, n=10_000, live=3).start()
    fleet.url, fleet.admin, fleet.read, fleet.registry_file
    fleet.stop()

The rows are a pure function of their index: region, kind and site, RAM, a health report (CPU,
memory, battery, link reconnects, buffer drops, errors), restarts, when each was last seen (from
1–40 minutes ago, offline, or 80 minutes to 3 hours ago, missing), and for some a model version.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

from tests.dashboard.fleet import DashboardFleet, free_port

REGIONS = ("US", "EU", "AU", "CA", "CL", "ZA")
KINDS = ("wheel loader", "dumper", "excavator")
LIVE_SEED = 9


def populate(path: Path, n: int, *, now: float | None = None) -> None:
    """Write n devices, their health and model versions into a new registry at `path`."""
    from federation.auth import hash_token
    from federation.registry import Heartbeat, Registry

    now = time.time() if now is None else now
    rng = random.Random(15)
    with Registry(path) as registry:
        devices = []
        for i in range(n):
            region = REGIONS[i % len(REGIONS)]
            devices.append((f"big-{i:05d}", {"region": region, "kind": KINDS[i % 3], "site": f"{region.lower()}-{i % 17}",
                                             "model_year": 2012 + i % 13},
                            {"ram_kb": (131072, 262144, 524288, 1048576)[i % 4]}, hash_token(f"sqf_big_{i}")))
        registry.add_devices(devices)
        beats = []
        for i in range(n):
            health = {"time": now - 60, "cpu_percent": round(rng.uniform(1, 90), 2),
                      "memory_kb": rng.randrange(20_000, 300_000), "uptime_s": rng.uniform(60, 86_400),
                      "battery": {"percent": round(rng.uniform(5, 19) if i % 16 == 0 else rng.uniform(25, 98), 1)},
                      "link": {"connected": True, "reconnects": 2 if i % 40 == 0 else 0},
                      "buffer": {"records": 0, "bytes": 0, "dropped": 7 if i % 97 == 0 else 0},
                      "errors": [{"kind": "RuntimeError", "message": "sensor timeout", "time": now - 90}] if i % 500 == 0 else []}
            # seen 1–40 minutes ago (offline) or 80 minutes to 3 hours ago (missing): nowhere near the
            # hour after which an offline device counts as missing, so no count changes during a test
            ago = rng.uniform(60, 2400) if rng.random() < 0.35 else rng.uniform(4800, 3 * 3600)
            beats.append(Heartbeat(f"big-{i:05d}", now - ago, health, 5 if i % 50 == 0 else i % 3))
        registry.record_heartbeats(beats)
        with registry.transaction() as conn:
            conn.executemany("INSERT INTO device_models (device_id, model, version, previous_version, updated) "
                             "VALUES (?, 'vib-anomaly', ?, NULL, ?)",
                             [(f"big-{i:05d}", "1.1.0" if i % 7 == 0 else "1.0.0", now) for i in range(0, n, 3)])


class BigFleet(DashboardFleet):
    def __init__(self, directory: Path, n: int = 10_000, live: int = 3):
        super().__init__(directory)
        self.n, self.live = n, live
        self.registry_file = self.dir / "fed" / "registry.sqlite3"

    def start(self) -> "BigFleet":
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "fed").mkdir(mode=0o700, exist_ok=True)
        populate(self.registry_file, self.n)
        data = self.dir / "fed"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        fed = self._spawn("federation", "federation", "--data", str(data), "--port", str(port), "--heartbeat", "2",
                          "--log-level", "warning", "--allow-unsigned-bundles")
        self._wait(lambda: self._healthy(), 40, "the federation to listen", fed, "federation")
        self.admin = (data / "admin.token").read_text().strip()
        self.read = self.api("POST", "/v1/tokens", {"role": "read", "label": "scale tests"})["token"]
        if self.live:
            self._spawn("edges", "edge", "--simulate", str(self.live), "--seed", str(LIVE_SEED), "--id-prefix", "live-",
                        "--store", str(self.dir / "edges"), "--federation", self.url,
                        "--provision-token-file", str(data / "admin.token"), "--heartbeat", "2", "--log-level", "warning")
            self._wait(lambda: len(self.online()) >= self.live, 60, "the live edges to come online")
        return self

    def online(self) -> set[str]:
        try:
            return {e["id"] for e in self.api("GET", "/v1/edges?status=online&fields=compact")["edges"]}
        except (AssertionError, OSError):
            return set()

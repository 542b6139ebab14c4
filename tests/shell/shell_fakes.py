"""A fake federation client with the interface FederationSession expects (see shell/federation.py)."""
from __future__ import annotations

import io
import threading

import streamql

EDGES = [
    {"id": "wl-1", "metadata": {"region": "US", "kind": "wheel loader"}, "online": True, "last_seen": 1795295614.3,
     "signals": ["vibration", "outside_temperature"]},
    {"id": "wl-2", "metadata": {"region": "EU", "kind": "wheel loader"}, "online": False,
     "signals": ["vibration"]},
    {"id": "d-7", "metadata": {"region": "AU", "kind": "dumper"}, "online": True, "signals": ["vibration"]},
]


def progress_records(devices=("wl-1", "wl-2", "d-7")):
    """A rollout in four snapshots: all pending, then settling one device at a time."""
    states = {d: {"state": "pending"} for d in devices}
    base = {"action": "deploy", "model": "vib-anomaly", "version": "1.2.0", "deployment": "d-1"}
    yield {**base, "devices": {k: dict(v) for k, v in states.items()}}
    states["wl-1"] = {"state": "done"}
    yield {**base, "devices": {k: dict(v) for k, v in states.items()}}
    states["wl-2"] = {"state": "skipped", "reason": "needs ram_kb 512, has 256"}
    yield {**base, "devices": {k: dict(v) for k, v in states.items()}}
    states["d-7"] = {"state": "failed", "reason": "checksum mismatch"}
    yield {**base, "devices": {k: dict(v) for k, v in states.items()}, "complete": True}


class DeploymentStarted:
    """What `streamql.client.Federation.execute` returns for a fleet statement: kind
    'deployment', the id as the one row and as `deployment_id`."""
    kind = "deployment"
    columns = ["deployment"]
    types = ["Charstring"]

    def __init__(self, message, deployment_id):
        self.message = message
        self.deployment_id = deployment_id

    def __iter__(self):
        return iter([self.deployment_id])

    def close(self):
        pass


class FakeClient:
    """Queries run on a local engine; fleet statements start a fake rollout."""

    def __init__(self, records=progress_records):
        self.engine = streamql.Engine()
        self.records = records
        self.closed = False
        self.progress_watched = threading.Event()

    def query(self, text):
        return self.engine.query(text)

    def execute(self, text):
        lowered = text.lower()
        if any(word in lowered for word in ("deploy model", "rollback model", "undeploy model")):
            return [DeploymentStarted("deployment d-1 started", "d-1")]
        return self.engine.execute(text)

    def deployment_progress(self, deployment_id, stop=None):
        self.progress_watched.set()
        return self.records()

    def functions(self):
        return self.engine.functions()

    def edges(self):
        return EDGES

    def models(self):
        return [{"name": "vib-anomaly", "version": "1.2.0"}]

    def close(self):
        self.closed = True


class TtyStringIO(io.StringIO):
    """Captured output that claims to be a terminal (for live redraws)."""

    def isatty(self) -> bool:
        return True

"""`streamql federation --registry postgresql://…` as a user runs it: real federation and edge
processes on a real PostgreSQL. A fleet query answers exactly what an oracle computes from the
simulated fleet's identities; a second federation process on the same database sees the same
fleet (registered, online) without being told; the registry's state is in PostgreSQL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import psycopg
import pytest

import streamql
from edge_engine.simulate import fleet_identities

from fleet_process import ROOT, Fleet, _free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EDGES, SEED = 6, 5   # fleet_process.Fleet simulates with seed 5


def _cold_oracle(identities, now: float, margin: float = 0.5) -> tuple[set, set]:
    """(devices colder than -20 °C now, devices too close to -20 °C to be sure either way)."""
    from edge_engine.simulation import SimModel

    sure, unsure = set(), set()
    for edge_id, identity in identities.items():
        spec = next(s for s in identity.signals if s["name"] == "outside_temperature")
        _, temperature = SimModel.from_spec({k: v for k, v in spec.items() if k not in ("name", "kind")}).latest_at(now)
        if temperature < -20 - margin:
            sure.add(edge_id)
        elif temperature < -20 + margin:
            unsure.add(edge_id)
    return sure, unsure


def _second_node(tmp_path, url: str, log) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    config = tmp_path / "node2.toml"
    config.write_text(f'registry = "{url}"\nport = {port}\n')   # the config file says the same as the flag
    node = subprocess.Popen([sys.executable, "-m", "streamql.cli", "federation", "--data", str(tmp_path / "node2"),
                             "--config", str(config), "--log-level", "warning"],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, cwd=str(ROOT))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=1).read()
            return node, base
        except OSError:
            assert node.poll() is None and time.monotonic() < deadline, "the second node did not start"
            time.sleep(0.2)


def test_a_federation_on_postgresql_answers_like_the_oracle_and_a_second_node_sees_the_fleet(pg_server, tmp_path):
    url = pg_server.new_database()
    fleet = Fleet(tmp_path, EDGES, federation_args=["--registry", url])
    node2 = None
    try:
        identities = {i.id: i for i in fleet_identities(EDGES, SEED)}
        assert fleet.online == sorted(identities)
        # metadata selection (the in-memory index loaded from PostgreSQL) and values the edges compute
        rows = sorted(tuple(r) for r in fleet.client.query("select id(e), region(e), kind(e) from Edge e where online(e);"))
        assert rows == sorted((i, ident.metadata["region"], ident.metadata["kind"]) for i, ident in identities.items())
        region = identities[fleet.online[0]].metadata["region"]
        selected = sorted(fleet.client.query(f"select id(e) from Edge e where region(e) = '{region}';"))
        assert selected == sorted(i for i, ident in identities.items() if ident.metadata["region"] == region)
        counted = dict(fleet.client.query("select kind(e), count(e) from Edge e group by kind(e);"))
        expected: dict[str, int] = {}
        for ident in identities.values():
            expected[ident.metadata["kind"]] = expected.get(ident.metadata["kind"], 0) + 1
        assert counted == expected
        # a condition each edge computes from its own simulated signal, against the simulation itself
        started = time.time()
        cold = set(fleet.client.query("select id(e) from Edge e where signal_value('outside_temperature')@e < -20;"))
        sure, unsure = _cold_oracle(identities, started)
        assert cold - unsure == sure

        # the state is in PostgreSQL, not in the data directory
        assert not (tmp_path / "fed" / "registry.sqlite3").exists()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM devices WHERE online").fetchone()[0] == EDGES
            assert conn.execute("SELECT count(*) FROM tokens WHERE role = 'device'").fetchone()[0] == EDGES

        # a second node on the same database: the same fleet, its edges online (held by the first)
        node2, base2 = _second_node(tmp_path, url, fleet.log)
        admin2 = (tmp_path / "node2" / "admin.token")
        token = admin2.read_text().strip() if admin2.exists() else fleet.admin  # the first node made the admin
        other = streamql.connect(base2, token)
        seen = {e["id"]: e.get("online") for e in other.edges()}
        assert seen == {i: True for i in identities}
        # a device provisioned on the first node reaches the second at once (LISTEN/NOTIFY)
        fleet.client.provision("late-1", {"region": "XX", "kind": "dumper"}, {"ram_kb": 1024})
        deadline = time.monotonic() + 5
        while "late-1" not in {e["id"] for e in other.edges()}:
            assert time.monotonic() < deadline, "the second node did not hear of the new device"
            time.sleep(0.1)

        # PostgreSQL restarted under both nodes: they carry on without a restart of their own
        pg_server.restart()
        deadline = time.monotonic() + 30
        while True:
            try:
                fleet.client.provision("late-2", {"region": "XX", "kind": "dumper"}, {"ram_kb": 1024})
                break
            except Exception:   # an error or two while the pool finds its connections dead
                assert time.monotonic() < deadline, "the federation did not reconnect to PostgreSQL"
                time.sleep(0.5)
        rows = sorted(tuple(r) for r in fleet.client.query("select id(e), region(e) from Edge e where online(e);"))
        assert rows == sorted((i, ident.metadata["region"]) for i, ident in identities.items())
        deadline = time.monotonic() + 15
        while "late-2" not in {e["id"] for e in other.edges()}:
            assert time.monotonic() < deadline, "the second node's watcher did not reconnect"
            time.sleep(0.2)
    finally:
        if node2 is not None and node2.poll() is None:
            node2.send_signal(signal.SIGTERM)
            try:
                node2.wait(30)
            except subprocess.TimeoutExpired:
                node2.kill()
        fleet.stop()

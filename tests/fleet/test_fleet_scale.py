"""Hundreds of simulated edges on one federation, as the user runs them: `streamql federation` and
`streamql edge --simulate 400 --processes 2` (which provisions its tokens in batches). Every edge
connects, fleet answers equal an oracle computed from the simulation function alone, SIGTERM
stops the federation gracefully and quickly with its registry intact, and the simulator too.

The 10,000-edge figures are a benchmark (bench/bench_scale.py), not a test.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from scale_fleet import ScaleFleet, low_battery_bounds, oracle_battery  # noqa: E402

from edge_engine.simulate import fleet_identities  # noqa: E402

EDGES = 400
SEED = 11

pytestmark = pytest.mark.timeout(600)


def test_hundreds_of_simulated_edges_in_two_processes(tmp_path):
    # generous for a busy CI machine: every device has a minute to answer
    fleet = ScaleFleet(tmp_path, edges=EDGES, processes=2, seed=SEED, heartbeat_s=5.0,
                       federation_args=["--device-timeout", "60"])
    identities = fleet_identities(EDGES, SEED)
    try:
        fleet.start()
        assert fleet.wait_connected(300) is not None, f"only {fleet.connected()} of {EDGES} edges connected"
        assert len(fleet.simulator_pids()) >= 3     # the parent and its two shards (and spawn's tracker)

        # every edge answers with its own battery reading, a value the model had in that window
        t0 = time.time()
        _, rows, _, status = fleet.query("select id(e), signal_value('battery')@e from Edge e;")
        t1 = time.time()
        assert status["status"]["counts"] == {"answered": EDGES} and status["complete"], status["status"]["counts"]
        assert len(rows) == EDGES and {r[0] for r in rows} == {i.id for i in identities}
        possible = oracle_battery(identities, t0, t1)
        wrong = [(edge, value) for edge, value in rows if value not in possible[edge]]
        assert not wrong, f"{len(wrong)} edges read a value their model never had then, e.g. {wrong[:3]}"

        # a grouped aggregate across the fleet, against the oracle's counts per region
        t0 = time.time()
        _, rows, _, status = fleet.query("select region(e), count(e) from Edge e "
                                         "where signal_value('battery')@e < 20 group by region(e);")
        t1 = time.time()
        assert status["status"]["counts"] == {"answered": EDGES}, status["status"]["counts"]
        bounds = low_battery_bounds(identities, oracle_battery(identities, t0, t1))
        counted = {region: count for region, count in rows}
        assert sum(counted.values()) > 0             # about 1 edge in 16 runs low
        for region, (low, high) in bounds.items():
            assert low <= counted.get(region, 0) <= high, (region, counted.get(region), low, high)
        assert set(counted) <= set(bounds)

        # SIGTERM with every edge connected: a graceful stop, well within the 10 s a supervisor gives
        seconds, code = fleet.stop_federation(timeout=30)
        assert code == 0 and seconds is not None and seconds < 9.5, (seconds, code)
        state = fleet.registry_state()
        assert state == {"devices": EDGES, "online": 0, "device_tokens": EDGES, "integrity": "ok"}, state

        seconds, code = fleet.stop_simulator(timeout=30)
        assert code == 0 and seconds is not None and seconds < 15, (seconds, code)
    finally:
        fleet.close()

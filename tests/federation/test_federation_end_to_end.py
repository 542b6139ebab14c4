"""End to end on loopback: the Python client → POST /v1/query → the fleet query service → the hub →
real edge daemons (in-process) and back; the motivating query of LANGUAGE.md §8 selects exactly
the devices whose metadata and live temperature say so."""
from __future__ import annotations

import argparse
import asyncio

import numpy as np
import pytest

import streamql
from federation.auth import Role, create_token, provision
from federation.config import FederationConfig
from federation.keys import HUB, REGISTRY
from tests.federation.test_federation_client import Served

edge_config = pytest.importorskip("edge_engine.config")
edge_daemon = pytest.importorskip("edge_engine.daemon")

pytestmark = pytest.mark.timeout(90)

MOTIVATING = """select stream of id(e), w
from Edge e, Vector of Real w
where region(e) in ('US', 'EU', 'AU')
  and kind(e) in ('wheel loader', 'dumper')
  and signal_value('outside_temperature')@e < -20
  and w in winagg(signal_stream('vibration'), 256, 256)@e;"""

FLEET = [("wl-us", "wheel loader", "US", -25), ("du-eu", "dumper", "EU", -30), ("tr-us", "truck", "US", -40),
         ("du-au", "dumper", "AU", 10)]


def test_the_motivating_query_end_to_end(tmp_path):
    fed = Served(FederationConfig(data_dir=tmp_path / "fed", announce=False, heartbeat_s=1.0))
    daemons = []

    async def start_edges():
        for edge_id, kind, region, temperature in FLEET:
            args = argparse.Namespace(
                id=edge_id, federation=fed.url, store=str(tmp_path / edge_id),
                token=provision(fed.app[REGISTRY], edge_id).token, trusted_key=[], ram_kb=1024, flash_kb=8192,
                signal=["name=vibration,shape=sine,rate_hz=200,noise=0.1,seed=3",
                        f"name=outside_temperature,shape=walk,rate_hz=20,offset={temperature},amplitude=1,seed=4"],
                cpu="cortex-a53", meta=[f"kind={kind}", f"region={region}"], heartbeat_s=1.0,
                reconnect_initial_s=0.05, reconnect_max_s=0.3, log_level="warning")
            daemons.append(await edge_daemon.EdgeDaemon(edge_config.load_config(None, args)).start())
        for _ in range(200):
            if len(fed.app[HUB].online_ids()) == len(FLEET):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the edges did not connect")

    async def stop_edges():
        for daemon in daemons:
            await daemon.stop()

    try:
        fed.call(start_edges())
        fleet = streamql.connect(fed.url, create_token(fed.app[REGISTRY], Role.READ)[1])
        listed = fleet.query("select id(e), region(e), kind(e) from Edge e;")
        assert sorted(listed) == sorted((e, r, k) for e, k, r, _ in FLEET)
        result = fleet.query(MOTIVATING)
        assert result.columns == ["id(e)", "w"] and result.kind == "stream"
        seen = set()
        for row in result:
            assert isinstance(row[1], np.ndarray) and row[1].shape == (256,)
            seen.add(row[0])
            if seen == {"wl-us", "du-eu"}:
                break
        result.close()
        assert seen == {"wl-us", "du-eu"}
        with pytest.raises(streamql.QueryNameError) as caught:
            fleet.query("select nosuch(e) from Edge e;")
        assert (caught.value.line, caught.value.column) == (1, 8)
    finally:
        fed.call(stop_edges())
        fed.stop()

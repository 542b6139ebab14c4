"""Simulated fleets: deterministic identities, tokens, provisioning, many edges on one loop."""
import ast
import asyncio
import json
import random
from pathlib import Path

import numpy as np

from edge_engine.config import load_config
from edge_engine.signals import SimModel
from edge_engine.simulate import MEMORY_KB, REGION_WEIGHTS, REGIONS, SimulatedFleet, fleet_identities, load_tokens, \
    low_battery, simulated_load
from edge_engine.testing import FakeFederation


def test_identities_are_a_deterministic_mix():
    fleet = fleet_identities(60, seed=7)
    assert fleet == fleet_identities(60, seed=7)
    assert fleet[:10] == fleet_identities(10, seed=7)             # edge i does not depend on the fleet size
    assert fleet != fleet_identities(60, seed=8)
    assert len({e.id for e in fleet}) == 60 and fleet[0].id == "wl-0001" and fleet[1].id == "dt-0002"
    assert {e.metadata["kind"] for e in fleet} == {"wheel loader", "dumper", "excavator"}
    assert {e.metadata["region"] for e in fleet} >= {"US", "EU", "AU"}
    assert len({e.capabilities.ram_kb for e in fleet}) >= 4 and len({e.seed for e in fleet}) == 60
    names = {s["name"] for s in fleet[0].signals}
    assert names == {"vibration", "outside_temperature", "engine_speed", "battery"}
    # the motivating query has answers: cold machines in the US, EU or AU
    cold = [e for e in fleet if e.metadata["region"] in ("US", "EU") and
            next(s for s in e.signals if s["name"] == "outside_temperature")["offset"] < -20]
    assert cold


def test_tokens_files(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"wl-0001": "t1"}))
    (tmp_path / "b.json").write_text(json.dumps([{"id": "wl-0001", "token": "t1"}]))
    (tmp_path / "c.txt").write_text("# id token\nwl-0001 t1\ndt-0002,t2\n")
    assert load_tokens(tmp_path / "a.json") == load_tokens(tmp_path / "b.json") == {"wl-0001": "t1"}
    assert load_tokens(tmp_path / "c.txt") == {"wl-0001": "t1", "dt-0002": "t2"}


async def test_a_provisioned_fleet_on_one_loop(tmp_path):
    fed = FakeFederation(tokens={}, admin_token="admin", heartbeat_s=0.5)
    await fed.start()
    import argparse
    base = load_config(None, argparse.Namespace(id="sim", federation=fed.url, heartbeat_s=0.5))
    fleet = SimulatedFleet(8, base, store_root=tmp_path / "sim", seed=2, admin_token="admin")
    try:
        await fleet.start()
        assert await fleet.wait_connected(15) == 8
        assert set(fed.provisioned) == {e.id for e in fleet.identities}
        assert fed.provisioned["wl-0001"]["metadata"] == fleet.identities[0].metadata
        tokens = json.loads((tmp_path / "sim" / "tokens.json").read_text())
        assert set(tokens) == set(fed.provisioned)
        assert (tmp_path / "sim" / "tokens.json").stat().st_mode & 0o077 == 0
        # each edge answers from its own signals, which the oracle can recompute
        edge = fleet.identities[3]
        conn = await fed.connection(edge.id)
        # its health has its own CPU and memory: simulated_load of the fleet seed, its id and the time
        beat = await conn.next("health", timeout=10)
        assert {"cpu_percent": beat["cpu_percent"], "memory_kb": beat["memory_kb"]} == \
            simulated_load(2, edge.id, beat["time"])
        assert conn.hello["capabilities"]["ram_kb"] == edge.capabilities.ram_kb
        await asyncio.sleep(0.3)
        rows, end = await conn.run_query("select stream of tv from Timeval tv "
                                         "where tv in ts_signal_stream('engine_speed') limit 5;")
        assert end["outcome"] == "ok" and len(rows) == 5
        spec = next(s for s in edge.signals if s["name"] == "engine_speed")
        times = np.array([tv.time.seconds for tv in rows])
        assert np.allclose(SimModel.from_spec(spec).values_at(times), [tv.value for tv in rows])
        stores = sorted(p.name for p in (tmp_path / "sim").iterdir() if p.is_dir())
        assert stores == sorted(e.id for e in fleet.identities)
    finally:
        await fleet.stop()
    # a second run reuses the kept tokens instead of provisioning again
    fleet = SimulatedFleet(8, base, store_root=tmp_path / "sim", seed=2, admin_token="admin")
    try:
        await fleet.start()
        assert await fleet.wait_connected(15) == 8
        assert all(d.deployments is not None for d in fleet.daemons)
        assert fleet.daemons[0].monitor.restarts == 1
    finally:
        await fleet.stop()
        await fed.stop()


def test_the_edge_engine_never_imports_the_federation():
    """edge_engine and federation talk only over the wire (ARCHITECTURE.md)."""
    for path in (Path(__file__).resolve().parents[2] / "edge_engine").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "federation" or n.startswith("federation.") for n in names), path.name


def _old_identity_draws(i: int, seed: int) -> tuple:
    """The values the identity of edge i had before low batteries were simulated (the oracle)."""
    rng = random.Random(f"streamql-fleet:{seed}:{i}")
    region = rng.choices([r for r, _ in REGION_WEIGHTS], [w for _, w in REGION_WEIGHTS])[0]
    base_temperature, sites = REGIONS[region]
    ram = rng.choice(MEMORY_KB)
    flash = rng.choice((524288, 1048576, 2097152, 4194304, 8388608))
    edge_seed = rng.randrange(1 << 31)
    site, year = rng.choice(sites), rng.randrange(2012, 2025)
    frequency = round(rng.uniform(8.0, 16.0), 2)
    temperature = round(base_temperature + rng.uniform(-6.0, 6.0), 1)
    battery = round(rng.uniform(55.0, 90.0), 1)
    return region, ram, flash, edge_seed, site, year, frequency, temperature, battery


def test_about_one_edge_in_16_has_a_low_battery_and_nothing_else_changed():
    fleet = fleet_identities(1600, seed=3)
    low = [e for i, e in enumerate(fleet, 1) if low_battery(3, i)]
    assert 60 <= len(low) <= 140            # 1 in 16 of 1600 is 100
    for i, edge in enumerate(fleet, 1):
        region, ram, flash, edge_seed, site, year, frequency, temperature, battery = _old_identity_draws(i, 3)
        assert (edge.metadata["region"], edge.capabilities.ram_kb, edge.capabilities.flash_kb, edge.seed,
                edge.metadata["site"], edge.metadata["model_year"]) == (region, ram, flash, edge_seed, site, year)
        signals = {s["name"]: s for s in edge.signals}
        assert signals["vibration"]["frequency_hz"] == frequency
        assert signals["outside_temperature"]["offset"] == temperature
        spec = signals["battery"]
        values = SimModel.from_spec(spec).values_at(np.arange(0.0, 4 * 3600.0, 60.0))
        if edge in low:
            assert spec["offset"] < 20 and values.max() < 20, edge.id
        else:
            assert spec["offset"] == battery and values.min() > 20, edge.id


def test_simulated_load_is_a_pure_plausible_function_of_seed_id_and_time():
    ids = [e.id for e in fleet_identities(50, seed=1)]
    t = 1_760_000_000.0
    assert [simulated_load(1, i, t) for i in ids] == [simulated_load(1, i, t) for i in ids]
    loads = [simulated_load(1, i, t) for i in ids]
    assert len({x["cpu_percent"] for x in loads}) >= 45 and len({x["memory_kb"] for x in loads}) >= 45
    assert all(0 < x["cpu_percent"] <= 100 and 4096 <= x["memory_kb"] <= 256 * 1024 for x in loads)
    assert simulated_load(2, ids[0], t) != simulated_load(1, ids[0], t)
    over_an_hour = [simulated_load(1, ids[0], t + s)["cpu_percent"] for s in range(0, 3600, 5)]
    assert max(over_an_hour) - min(over_an_hour) > 2        # it moves, …
    assert max(abs(a - b) for a, b in zip(over_an_hour, over_an_hour[1:])) < 15   # … smoothly


def test_a_simulated_fleet_computes_readings_when_read():
    """In a simulated fleet a signal nobody reads costs nothing: `signal_value` (latest) computes
    the grid reading at or before now from the model, and only an open reader makes the pump push
    readings — from the one at or before it opened, exactly the pure form — until it closes."""
    from edge_engine.signals import SimulatedDriver, build_drivers
    from edge_engine.sim_signals import OnDemandSignal, SignalPump, on_demand
    from edge_engine.simulation import SimModel
    from streamql.clock import FakeClock

    clock = FakeClock(1000.0)
    pump = SignalPump(clock)
    drivers = on_demand(build_drivers([{"name": "v", "kind": "simulated", "shape": "walk", "seed": 5,
                                        "rate_hz": 100.0, "batch_interval_s": 0.25}], clock=clock), pump, clock)
    driver = drivers.drivers[0]
    signal = drivers.signals["v"]
    assert isinstance(driver, SimulatedDriver) and isinstance(signal, OnDemandSignal) and driver.signal is signal
    model = SimModel.from_spec({"shape": "walk", "seed": 5, "rate_hz": 100.0})
    clock.advance(12.345)
    assert pump.poll() == 0 and driver.pushed == 0            # unread: nothing computed, nothing pushed
    assert signal.latest() == model.latest_at(clock.now())[1] and signal.latest_time() == 1012.34
    reader = signal.open()
    clock.advance(0.5)
    assert pump.poll() == 51 and pump.active == 1              # 1012.34 … 1012.84, every reading
    assert driver.pushed == 51
    times = np.arange(101234, 101285) / 100.0
    got = next(iter(reader))
    assert np.array_equal(got.times, times) and np.array_equal(got.values, model.values_at(times))
    reader.close()
    clock.advance(1.0)
    assert pump.poll() == 0 and pump.active == 0               # closed: the driver leaves the pump


def test_a_simulated_fleet_hands_the_interpreter_lock_round_less_often_than_one_edge():
    """Hundreds of fragment threads in one simulator process each wake once per switch interval
    while they wait for the lock: at an edge daemon's 1 ms they starved the holder (bench/README.md,
    soak, twelfth session). One edge keeps 1 ms: its loop gets the lock back quickly."""
    from edge_engine.cli import SIMULATOR_SWITCH_INTERVAL_S, SWITCH_INTERVAL_S, build_parser, switch_interval

    assert switch_interval(build_parser().parse_args([])) == SWITCH_INTERVAL_S == 0.001
    simulated = build_parser().parse_args(["--simulate", "25", "--federation", "http://127.0.0.1:1"])
    assert switch_interval(simulated) == SIMULATOR_SWITCH_INTERVAL_S >= 0.02

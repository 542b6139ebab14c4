"""A small fleet in one process for the planner's tests: every device a local Engine with
signals whose values are known (constants and replayed arrays), so every answer has an oracle."""
from __future__ import annotations

import pytest

import streamql
from streamql.local_fleet import LocalFleet

from fleet_support import FLEET, vibration


def make_fleet() -> LocalFleet:
    fleet = LocalFleet()
    for i, (device, meta, caps, temperature, offset) in enumerate(FLEET):
        engine = streamql.Engine(seed=i)
        engine.add_signal("vibration", vibration(offset), type="Real")
        engine.add_signal("outside_temperature", [temperature], type="Real")
        if meta["kind"] == "dumper":
            engine.add_signal("mode", ["hauling" if temperature < -30 else "idle"], type="Charstring")
        fleet.add(device, engine, meta, caps, online=device != "d-3")
    return fleet


@pytest.fixture
def fleet():
    return make_fleet()


@pytest.fixture
def federation():
    """The federation's own engine (where functions defined at the federation live)."""
    return streamql.Engine(name="federation")

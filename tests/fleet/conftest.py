"""A small fleet for planner tests: a real registry and index, and a fake hub whose devices are
local engines with deterministic signals."""
from __future__ import annotations

import numpy as np
import pytest

import streamql
from federation.fleet import QueryService
from federation.index import SelectionIndex
from federation.registry import Registry

from fleet_fakes import FakeHub
from fleet_support import FLEET, vibration

@pytest.fixture
def fleet(tmp_path):
    registry = Registry(tmp_path / "registry.sqlite")
    engines = {}
    for i, (device, meta, caps, temperature, offset) in enumerate(FLEET):
        registry.add_device(device, meta, caps, token_hash=f"hash-{i}")
        engine = streamql.Engine(seed=i)
        engine.add_signal("vibration", vibration(offset))
        engine.add_signal("outside_temperature", [temperature])
        engines[device] = engine
    index = SelectionIndex()
    index.reset(registry.iter_devices())
    hub = FakeHub(engines, offline={"d-3"})
    service = QueryService(streamql.Engine(), registry, index, hub, fragment_timeout=2.0)
    return service, hub, engines

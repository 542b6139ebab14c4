"""SimModel.value_at, the one-reading path of health samples and signal_value, against values_at:
the same float, bit for bit, for any time and any walk (and the other shapes through values_at)."""
from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings, strategies as st

from edge_engine.simulate import fleet_identities
from edge_engine.simulation import SimModel


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**62), rate=st.sampled_from([0.2, 1.0, 10.0, 100.0]),
       reversion=st.floats(0.01, 1e5), offset=st.floats(-1e4, 1e4), amplitude=st.floats(0, 1e3),
       bounds=st.sampled_from([(None, None), (0.0, 100.0), (None, 19.0), (-5.0, None)]),
       t=st.one_of(st.floats(-1e9, 4e9), st.integers(0, 10**10).map(float)))
def test_one_reading_of_a_walk_is_values_at_bit_for_bit(seed, rate, reversion, offset, amplitude, bounds, t):
    model = SimModel(shape="walk", seed=seed, rate_hz=rate, reversion_s=reversion, offset=offset,
                     amplitude=amplitude, min=bounds[0], max=bounds[1])
    assert _same(model.value_at(t), float(model.values_at(np.array([t]))[0]))


def test_every_simulated_signal_of_a_fleet_reads_as_values_at():
    draw = random.Random(7)
    for identity in fleet_identities(40, seed=3):
        for spec in identity.signals:
            model = SimModel.from_spec({k: v for k, v in spec.items() if k not in ("name", "kind")})
            for _ in range(25):
                t = draw.uniform(1.6e9, 1.9e9)
                grid_t, value = model.latest_at(t)
                assert _same(value, float(model.values_at(np.array([grid_t]))[0])), spec["name"]
                assert value == model.value_at(grid_t)

"""Fixtures for the model tests."""
from __future__ import annotations

import numpy as np
import pytest

from model_fakes import FakeEngine


@pytest.fixture
def fake_engine():
    return FakeEngine()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

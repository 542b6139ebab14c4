"""End-to-end fixtures: the demo as a real process (see demo_process.py)."""
from __future__ import annotations

import pytest

from demo_process import Demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    running = Demo(tmp_path_factory.mktemp("demo") / "data")
    try:
        yield running
    finally:
        running.stop()

"""The fleet the planner tests run against, and small helpers."""
from __future__ import annotations

import numpy as np

# id, metadata, capabilities, outside temperature, vibration offset
FLEET = [
    ("wl-1", {"region": "US", "kind": "wheel loader", "site": "north"}, {"ram_kb": 512, "limit": -20}, -25.0, 0),
    ("wl-2", {"region": "EU", "kind": "wheel loader", "site": "south"}, {"ram_kb": 1024, "limit": -30}, 5.0, 10000),
    ("d-1", {"region": "AU", "kind": "dumper", "site": "north"}, {"ram_kb": 1536, "limit": -20}, -30.0, 20000),
    ("x-1", {"region": "US", "kind": "excavator", "site": "west"}, {"ram_kb": 2048, "limit": -20}, -40.0, 30000),
    ("d-2", {"region": "SE", "kind": "dumper"}, {"ram_kb": 2560, "limit": -20}, -35.0, 40000),
    ("d-3", {"region": "EU", "kind": "dumper", "site": "south"}, {"ram_kb": 3072, "limit": -20}, -22.0, 50000),
]
VIBRATION = 1024


def vibration(offset: int) -> np.ndarray:
    return np.arange(VIBRATION, dtype=float) + offset


async def rows_of(service, text):
    result = await service.run(text)
    rows = [row async for row in result.rows()]
    return rows, result

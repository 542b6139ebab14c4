"""The fleet the planner tests run against, its oracle, and small helpers."""
from __future__ import annotations

import threading
import time

import numpy as np

# id, metadata, capabilities, outside temperature (a constant signal), vibration offset
FLEET = [
    ("wl-1", {"region": "US", "kind": "wheel loader", "site": "north"}, {"ram_kb": 512, "limit": -20}, -25.0, 0),
    ("wl-2", {"region": "EU", "kind": "wheel loader", "site": "south"}, {"ram_kb": 1024, "limit": -30}, 5.0, 10000),
    ("d-1", {"region": "AU", "kind": "dumper", "site": "north"}, {"ram_kb": 1536, "limit": -20}, -30.0, 20000),
    ("x-1", {"region": "US", "kind": "excavator", "site": "west"}, {"ram_kb": 2048, "limit": -20}, -40.0, 30000),
    ("d-2", {"region": "SE", "kind": "dumper"}, {"ram_kb": 2560, "limit": -20}, -35.0, 40000),
    ("d-3", {"region": "EU", "kind": "dumper", "site": "south"}, {"ram_kb": 3072, "limit": -20}, -22.0, 50000),
]
OFFLINE = {"d-3"}
VIBRATION = 1024


def vibration(offset: int) -> np.ndarray:
    return np.arange(VIBRATION, dtype=float) + offset


def online():
    """The devices that answer: (id, metadata, capabilities, temperature, offset)."""
    return [d for d in FLEET if d[0] not in OFFLINE]


def mode(meta: dict, temperature: float) -> str | None:
    return ("hauling" if temperature < -30 else "idle") if meta["kind"] == "dumper" else None


def take(result, count: int, timeout: float = 20.0) -> list:
    """The first `count` rows of a (standing) stream, read in a thread; then the result is closed."""
    rows, _ = read_until(result, lambda rows: len(rows) >= count, timeout)
    result.close()
    return rows


def read_until(result, enough, timeout: float = 20.0) -> tuple[list, bool]:
    """Rows of a (standing) stream read in a thread until `enough(rows)` or `timeout`: (the rows,
    whether enough came). The result stays open."""
    rows: list = []
    done = threading.Event()
    met = []

    def read():
        try:
            for row in result:
                rows.append(row)
                if enough(rows):
                    met.append(True)
                    break
        except Exception:  # noqa: BLE001 - closed from outside
            pass
        finally:
            done.set()

    threading.Thread(target=read, daemon=True).start()
    done.wait(timeout)
    return rows, bool(met)


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False

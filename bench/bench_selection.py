"""Selection by metadata among 100,000 registered devices (target: ≤ 5 ms).

Registers the devices in a real registry (SQLite file in a temporary directory), loads the
selection index from it, and times a few typical predicates three ways in the same run:
the index, a hand-written brute-force Python loop over the devices, and an SQLite query with
`json_extract` on the registry's own table. Every way must select the same devices.

    /work/venv/bin/python bench/bench_selection.py [--devices 100000] [--repeat 200] [--seed 7]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from federation.auth import provision_many  # noqa: E402
from federation.index import SelectionIndex  # noqa: E402
from federation.registry import Registry  # noqa: E402
from streamql.selection import ONLINE, And, Compare, Eq, In, Like, Not, Or, capability, meta  # noqa: E402

REGIONS = ["US", "EU", "AU", "SE", "CN", "BR", "IN", "ZA"]
KINDS = ["wheel loader", "dumper", "excavator", "hauler", "crusher", "drill"]
RAM = [64, 128, 256, 512, 1024, 2048]


def make_fleet(n: int, rng: random.Random) -> list[tuple[str, dict, dict]]:
    fleet = []
    for i in range(n):
        metadata = {"region": rng.choice(REGIONS), "kind": rng.choice(KINDS), "site": f"site-{rng.randrange(1000)}",
                    "firmware": f"3.{rng.randrange(12)}.{rng.randrange(4)}"}
        if rng.random() < 0.9:  # some devices never said how old they are
            metadata["year"] = rng.randrange(2008, 2025)
        capabilities = {"ram_kb": rng.choice(RAM), "flash_kb": rng.choice(RAM) * 4, "battery": round(rng.random(), 3)}
        fleet.append((f"edge-{i:06d}", metadata, capabilities))
    return fleet


# (name, predicate, brute-force test of (metadata, capabilities, online), SQLite WHERE clause)
CASES = [
    ("region in 3 and kind in 2 (motivating query)",
     And((In(meta("region"), ("US", "EU", "AU")), In(meta("kind"), ("wheel loader", "dumper")))),
     lambda m, c, o: m.get("region") in ("US", "EU", "AU") and m.get("kind") in ("wheel loader", "dumper"),
     "json_extract(metadata, '$.region') IN ('US', 'EU', 'AU') AND "
     "json_extract(metadata, '$.kind') IN ('wheel loader', 'dumper')"),
    ("region = 'SE'", Eq(meta("region"), "SE"),
     lambda m, c, o: m.get("region") == "SE",
     "json_extract(metadata, '$.region') = 'SE'"),
    ("ram_kb > 512 and online", And((Compare(capability("ram_kb"), ">", 512), Eq(ONLINE, True))),
     lambda m, c, o: c.get("ram_kb", -1) > 512 and o,
     "json_extract(capabilities, '$.ram_kb') > 512 AND online = 1"),
    ("site like 'site-1%' and year >= 2020",
     And((Like(meta("site"), "site-1%"), Compare(meta("year"), ">=", 2020))),
     lambda m, c, o: m["site"].startswith("site-1") and m.get("year", 0) >= 2020,
     "json_extract(metadata, '$.site') LIKE 'site-1%' AND json_extract(metadata, '$.year') >= 2020"),
    ("not kind = 'dumper' or battery < 0.1",
     Or((Not(Eq(meta("kind"), "dumper")), Compare(capability("battery"), "<", 0.1))),
     lambda m, c, o: m.get("kind") != "dumper" or c["battery"] < 0.1,
     "json_extract(metadata, '$.kind') IS NOT 'dumper' OR json_extract(capabilities, '$.battery') < 0.1"),
]


def timed(function, repeat: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return times, result


def p95(times: list[float]) -> float:
    return sorted(times)[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=200, help="runs of each index selection")
    parser.add_argument("--baseline-repeat", type=int, default=5, help="runs of each brute-force/SQLite query")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    fleet = make_fleet(args.devices, rng)

    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp) / "registry.sqlite3")
        start = time.perf_counter()
        provision_many(registry, fleet)
        register_s = time.perf_counter() - start
        online = [device_id for device_id, _, _ in fleet if rng.random() < 0.7]
        with registry.transaction() as conn:
            conn.executemany("UPDATE devices SET online = 1 WHERE id = ?", [(i,) for i in online])
        index = SelectionIndex()
        start = time.perf_counter()
        registry.add_listener(index)  # loads every device from the registry
        load_s = time.perf_counter() - start
        devices = list(registry.iter_devices())
        conn = registry._conn

        print(f"{args.devices:,} devices registered in {register_s:.2f} s (one transaction, tokens hashed); "
              f"index loaded from the registry in {load_s:.2f} s")
        print(f"{'predicate':48} {'selected':>8} {'index median':>13} {'p95':>8} {'python loop':>12} "
              f"{'ratio':>7} {'sqlite':>9} {'ratio':>7}")
        worst_p95 = 0.0
        for name, predicate, brute, where in CASES:
            index_times, selected = timed(lambda: index.select(predicate), args.repeat)
            py_times, py_ids = timed(lambda: [d.id for d in devices if brute(d.metadata, d.capabilities, d.online)],
                                     args.baseline_repeat)
            sql_times, sql_rows = timed(lambda: conn.execute(f"SELECT id FROM devices WHERE {where}").fetchall(),
                                        args.baseline_repeat)
            assert sorted(selected) == sorted(py_ids) == sorted(r[0] for r in sql_rows), name
            med, py_med, sql_med = (statistics.median(t) for t in (index_times, py_times, sql_times))
            worst_p95 = max(worst_p95, p95(index_times))
            print(f"{name:48} {len(selected):>8,} {med * 1e3:>10.3f} ms {p95(index_times) * 1e3:>5.2f} ms "
                  f"{py_med * 1e3:>9.1f} ms {py_med / med:>6.0f}x {sql_med * 1e3:>6.1f} ms {sql_med / med:>6.0f}x")
        print(f"worst p95 of the index: {worst_p95 * 1e3:.2f} ms (target ≤ 5 ms) — "
              f"{'met' if worst_p95 <= 0.005 else 'NOT met'}")
        registry.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The registry on PostgreSQL with 100,000 devices: registering them, a node's start (loading the
selection index and the fleet table from the database), selection (target ≤ 5 ms: the in-memory
index answers; SQL on JSONB beside it for comparison), a change on one node reaching another
node's index, and the token lookup every request makes.

Starts its own PostgreSQL on loopback (tests/pg_server.py; Debian's binaries) unless --url is given.

    PYTHONPATH=. python bench/bench_registry_pg.py [--devices 100000] [--url postgresql://…]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_selection import CASES, make_fleet, p95, timed  # noqa: E402
from federation.auth import hash_token, provision_many  # noqa: E402
from federation.fleet_table import FleetTable  # noqa: E402
from federation.index import SelectionIndex  # noqa: E402
from federation.registry_pg import PgRegistry  # noqa: E402
from streamql.selection import Eq, meta  # noqa: E402

# the same selections as SQL on the JSONB columns (what an index-less node would have to run)
SQL_CASES = [
    "metadata ->> 'region' IN ('US', 'EU', 'AU') AND metadata ->> 'kind' IN ('wheel loader', 'dumper')",
    "metadata @> '{\"region\": \"SE\"}'",
    "(capabilities ->> 'ram_kb')::numeric > 512 AND online",
    "metadata ->> 'site' LIKE 'site-1%' AND (metadata ->> 'year')::numeric >= 2020",
    "metadata ->> 'kind' IS DISTINCT FROM 'dumper' OR (capabilities ->> 'battery')::numeric < 0.1",
]


def run(url: str, count: int, repeat: int, seed: int) -> None:
    rng = random.Random(seed)
    fleet = make_fleet(count, rng)
    writer = PgRegistry(url)
    start = time.perf_counter()
    provision_many(writer, fleet)
    register_s = time.perf_counter() - start
    online = [device_id for device_id, _, _ in fleet if rng.random() < 0.7]
    with writer.transaction() as conn:
        # online through the writer node (alive: its edges stay online while it holds its node lock)
        conn.execute("UPDATE devices SET online = true, online_node = %s WHERE id = ANY(%s)", (writer.node_key, online))
        conn.execute("ANALYZE devices")

    # a node starting: open (migrations checked), the index and the fleet table loaded, as registry_ctx does
    start = time.perf_counter()
    node = PgRegistry(url)
    open_s = time.perf_counter() - start
    index, table = SelectionIndex(), FleetTable()
    devices = list(node.iter_devices())
    loaded_s = time.perf_counter() - start
    node.add_listener(index, devices)
    node.add_listener(table, devices)
    table.load_models(node.model_versions())
    start_s = time.perf_counter() - start
    print(f"{count:,} devices registered in {register_s:.2f} s (one transaction); a node starts in "
          f"{start_s:.2f} s (open {open_s:.2f} s, devices read {loaded_s - open_s:.2f} s, index and fleet "
          f"table built {start_s - loaded_s:.2f} s)")

    print(f"{'predicate':48} {'selected':>8} {'index median':>13} {'p95':>8} {'SQL (JSONB)':>12}")
    worst = 0.0
    with node.transaction() as conn:
        for (name, predicate, _, _), where in zip(CASES, SQL_CASES):
            times, selected = timed(lambda: index.select(predicate), repeat)
            sql_times, rows = timed(lambda: conn.execute(f"SELECT id FROM devices WHERE {where}").fetchall(), 5)
            assert sorted(selected) == sorted(r[0] for r in rows), name
            worst = max(worst, p95(times))
            print(f"{name:48} {len(selected):>8,} {statistics.median(times) * 1e3:>10.3f} ms "
                  f"{p95(times) * 1e3:>5.2f} ms {statistics.median(sql_times) * 1e3:>9.1f} ms")
    print(f"worst p95 of the index: {worst * 1e3:.2f} ms (target ≤ 5 ms) — {'met' if worst <= 0.005 else 'NOT met'}")

    # a metadata change on one node reaching the other's index: woken by NOTIFY, then the feed
    arrived = threading.Event()
    node.watch(lambda what: what == "devices" and (node.poll_external_changes(), arrived.set()))
    delays = []
    for i in range(50):
        device_id = fleet[i][0]
        arrived.clear()
        start = time.perf_counter()
        writer.update_device(device_id, metadata={"region": "ZZ", "n": i})
        while not (arrived.wait(2) and device_id in index.select(Eq(meta("n"), i))):
            pass
        delays.append(time.perf_counter() - start)
    print(f"a change on one node in the other's index: median {statistics.median(delays) * 1e3:.1f} ms, "
          f"p95 {p95(delays) * 1e3:.1f} ms (50 changes)")

    hashes = [hash_token(f"nobody-{i}") for i in range(200)]
    times, _ = timed(lambda: [node.token_by_hash(h) for h in hashes], 3)
    print(f"token lookup (each request): {statistics.median(times) / len(hashes) * 1e6:.0f} µs per call")
    node.close()
    writer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=200, help="runs of each index selection")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--url", help="an empty PostgreSQL database to use (default: start one)")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.url:
        run(args.url, args.devices, args.repeat, args.seed)
    else:
        from tests.pg_server import PgServer
        with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp, PgServer(tmp) as server:
            run(server.new_database(), args.devices, args.repeat, args.seed)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

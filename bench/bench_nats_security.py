"""The NATS auth callout: edges connecting through it, and revocation to disconnection.

    python bench/bench_nats_security.py [--edges 1000] [--revoke 100]

One nats-server with the generated security block (federation/nats_config.py), one federation
node's auth service (federation/nats_auth.py) on a SQLite registry, and N edge connections opened
from this same process (50 at a time; the client side's cost is in the figure). Then `--revoke`
tokens are revoked as DELETE /v1/tokens does it (registry, then Sessions.revoke) one after the
other, and the time until all of their connections are gone is measured. Prints the load average.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats  # noqa: E402

from federation.auth import provision_many  # noqa: E402
from federation.nats_auth import NatsAuthService  # noqa: E402
from federation.nats_config import AccountLimits, NatsSecurity, security_block  # noqa: E402
from federation.registry import Registry  # noqa: E402
from federation.sessions import Sessions  # noqa: E402
from tests.nats_servers import NatsServer  # noqa: E402


async def run(edges: int, revoke: int, workdir: Path) -> None:
    security = NatsSecurity.generate(limits=AccountLimits(max_file="64M", max_mem="16M"))
    server = NatsServer(workdir / "nats", config=security_block(security) + "max_connections: 100000\n").start()
    registry = Registry(workdir / "registry.sqlite3")
    conns = []
    try:
        tokens = provision_many(registry, [(f"edge-{i:05d}", None, None) for i in range(edges)])
        service = NatsAuthService(registry, security, sessions=Sessions())
        await service.connect([server.url])
        gate = asyncio.Semaphore(50)

        async def quiet(error) -> None:   # a kicked client's end-of-file is the point, not news
            pass

        async def connect(token: str):
            async with gate:
                return await nats.connect(server.url, token=token, allow_reconnect=False, connect_timeout=30,
                                          error_cb=quiet)

        started = time.monotonic()
        conns = await asyncio.gather(*(connect(token) for _, token in tokens))
        elapsed = time.monotonic() - started
        print(f"{edges} edges connected through the callout in {elapsed:.2f} s "
              f"({edges / elapsed:.0f}/s, client side included)")
        ids = [registry.list_tokens(device_id=device)[0].id for device, _ in tokens[:revoke]]
        started = time.monotonic()
        for token_id in ids:
            registry.revoke_token(token_id)
            await service.sessions.revoke(token_id)
        while any(c.is_connected for c in conns[:revoke]) and time.monotonic() - started < 10:
            await asyncio.sleep(0.002)
        gone = sum(not c.is_connected for c in conns[:revoke])
        print(f"{revoke} revocations: {gone} disconnected {1000 * (time.monotonic() - started):.0f} ms after "
              f"the first (bystanders still connected: {sum(c.is_connected for c in conns[revoke:])})")
        await service.close()
    finally:
        for conn in conns:
            if not conn.is_closed:
                await conn.close()
        server.stop()
        registry.close()
    print(f"load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=1000)
    parser.add_argument("--revoke", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-nats-security-") as workdir:
        asyncio.run(run(args.edges, min(args.revoke, args.edges), Path(workdir)))


if __name__ == "__main__":
    main()

"""A simulated fleet in several processes: `streamql edge --simulate N --processes K`.

One interpreter keeps a few thousand idle edges connected; beyond that (or to use more cores) the
fleet is split: edge i goes to process (i − 1) mod K (`SimulatedFleet(shard=(k, K))`), so the
union of the processes is exactly the fleet of N, with the same ids, metadata and signals. The
parent provisions the missing tokens first (in batches; the children only read
`{store}/tokens.json`), starts the K children, and on SIGTERM or SIGINT passes the signal on and
waits for them (each stops within its own deadline); a child whose parent dies is ended too.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import signal
import time
from pathlib import Path

from streamql import process_limits

__all__ = ["raise_open_file_limit", "run_processes"]

log = logging.getLogger("streamql.edge.simulate")


def raise_open_file_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (every simulated edge holds a socket); (soft, hard)."""
    return process_limits.raise_open_file_limit(log)


def _child(args: argparse.Namespace) -> None:
    process_limits.die_with_parent()
    from .cli import run

    raise SystemExit(run(args))


def run_processes(args: argparse.Namespace, store_root: Path, admin_token: str | None, federation: str,
                  stop_deadline_s: float) -> int:
    """Provision, start `args.processes` children on shards of the fleet, wait; the exit code."""
    count = args.processes
    if admin_token is not None:
        code = asyncio.run(_provision(args, federation, store_root, admin_token))
        if code:
            return code
        args.tokens = str(store_root / "tokens.json")
    stop = {"signal": None}

    def handler(signum, frame) -> None:
        stop["signal"] = signum

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)
    context = multiprocessing.get_context("spawn")
    children = []
    for k in range(count):
        child_args = argparse.Namespace(**{**vars(args), "processes": 1, "shard": (k, count), "provision": None,
                                           "provision_token_file": None, "func": None})
        process = context.Process(target=_child, args=(child_args,), name=f"simulate-{k}", daemon=False)
        process.start()
        children.append(process)
    log.info("%d simulator processes started (%s)", count, ", ".join(str(p.pid) for p in children))
    failed = 0
    while stop["signal"] is None:
        if all(not p.is_alive() for p in children):
            break
        time.sleep(0.2)
    if stop["signal"] is not None:
        for process in children:   # all at once: each child stops its edges within its deadline
            if process.is_alive():
                process.terminate()
    deadline = time.monotonic() + stop_deadline_s + 3.0
    for process in children:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in children:
        if process.is_alive():
            log.warning("simulator process %d did not stop in time: killed", process.pid)
            process.kill()
            process.join(1.0)
            failed += 1
        elif process.exitcode not in (0, -signal.SIGTERM):
            failed += 1
    return 1 if failed else 0


async def _provision(args: argparse.Namespace, federation: str, store_root: Path, admin_token: str) -> int:
    import aiohttp

    from .simulate import fleet_identities, provision_tokens

    identities = fleet_identities(args.simulate, args.seed, prefix=args.id_prefix, rate_scale=args.rate_scale)
    async with aiohttp.ClientSession() as session:
        try:
            await provision_tokens(identities, federation, admin_token, store_root, session)
        except Exception as exc:  # noqa: BLE001 - one line, not a traceback
            log.error("provisioning the simulated fleet failed: %s", exc)
            return 1
    return 0

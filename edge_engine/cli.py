"""`streamql edge …`: run an edge engine daemon, or a fleet of simulated ones.

    streamql edge --config edge.toml                  one device (every setting also a flag)
    streamql edge --config edge.toml --watchdog       the same, guarded (edge_engine/guard.py)
    streamql edge --id wl-1 --federation ws://127.0.0.1:8080 --signal name=vibration,rate_hz=100
    streamql edge --simulate 100 --federation URL --provision-token-file admin.token [--seed 7] [--store DIR]
    STREAMQL_ADMIN_TOKEN=… streamql edge --simulate 100 --federation URL --provision
    streamql edge --simulate 100 --federation URL --tokens tokens.json
    streamql edge --simulate 10000 --processes 4 --federation URL --provision-token-file admin.token
    streamql edge --config edge.toml --print-config   the effective settings, as JSON

Secrets never travel as flag values (`ps` shows them to everyone): the device token comes from
`--token-file`, $STREAMQL_EDGE_TOKEN or edge.toml, the admin token of `--provision` from
`--provision-token-file` or $STREAMQL_ADMIN_TOKEN.

`python -m edge_engine …` runs the same command on its own. SIGINT or SIGTERM stops gracefully
within 10 s: the link closes with 1001, queries stop, the buffer is flushed; whatever still runs
after STOP_DEADLINE_S is abandoned (edge_engine/guard.py). Exit codes: 0 stopped, 2 a configuration error, 1 anything else.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from streamql.gc_pauses import GcPauses

from .config import SECRET_ON_COMMAND_LINE, ConfigError, add_arguments, load_config, read_secret_file
from .guard import STOP_DEADLINE_S, guard_state, install_stop_handlers, supervise

__all__ = ["register", "build_parser", "main", "ADMIN_TOKEN_ENV"]

ADMIN_TOKEN_ENV = "STREAMQL_ADMIN_TOKEN"


def _add(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_arguments(parser)
    sim = parser.add_argument_group("simulated fleet")
    sim.add_argument("--simulate", type=int, metavar="N", help="run N simulated edges in this process")
    sim.add_argument("--tokens", metavar="FILE", help="device tokens of the simulated edges (JSON or 'id token' lines)")
    sim.add_argument("--provision", nargs="?", const=True, default=None, metavar="",
                     help=f"register the simulated edges on the federation with the admin token of "
                          f"--provision-token-file or ${ADMIN_TOKEN_ENV}")
    sim.add_argument("--provision-token-file", metavar="PATH",
                     help="a file holding the admin token for --provision (implies --provision)")
    sim.add_argument("--seed", type=int, default=0, help="the fleet's seed: ids, metadata, signals (default 0)")
    sim.add_argument("--id-prefix", default="", help="prefix of the simulated edges' ids")
    sim.add_argument("--rate-scale", type=float, default=1.0, help="multiply the simulated signal rates")
    sim.add_argument("--processes", type=int, default=1, metavar="K",
                     help="split the simulated fleet over K processes (edge i in process (i-1) mod K; default 1)")
    sim.add_argument("--ramp", type=float, default=None, metavar="SECONDS", dest="ramp_s",
                     help="spread the edges' first connects over this long (default N/500 s)")
    sim.add_argument("--shard", type=_shard, default=(0, 1), help=argparse.SUPPRESS)   # k/K: set by --processes
    parser.add_argument("--print-config", action="store_true", help="print the effective configuration and exit")
    parser.set_defaults(func=run)
    return parser


def _shard(text: str) -> tuple[int, int]:
    k, _, count = text.partition("/")
    try:
        shard = int(k), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected k/K, got {text!r}") from None
    if not 0 <= shard[0] < shard[1]:
        raise argparse.ArgumentTypeError(f"shard {text} does not exist")
    return shard


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "edge", help="run an edge engine daemon (or a simulated fleet)",
        description="Run an edge engine: its signals, deployed bundles and link to the federation.")
    return _add(parser)


def build_parser() -> argparse.ArgumentParser:
    return _add(argparse.ArgumentParser(prog="streamql edge", description="Run an edge engine daemon."))


def _logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _warm_parser() -> None:
    """Build the statement parser now, in the background (a quarter of a second or more), rather
    than inside the first fragment the federation sends."""
    from streamql.syntax import parse

    threading.Thread(target=parse, args=("select 1;",), daemon=True, name="warm-parser").start()


SWITCH_INTERVAL_S = 0.001   # fragments compute in threads: the link's event loop gets the lock back within 1 ms
# A process simulating many edges holds hundreds of fragment threads, and each one waiting for the
# interpreter's lock wakes once per switch interval to ask for it. At 1 ms, while one thread held
# the lock without running (preempted, or at nice 19), those wake-ups took the CPU from it: a
# collection of 0.26 s of CPU held a simulator 39 s, its edges' links dropped. bench/README.md,
# soak, "Twelfth session": 1 ms → 50 ms, 425–514 → 73 errors, no link dropped.
SIMULATOR_SWITCH_INTERVAL_S = 0.05


def switch_interval(args: argparse.Namespace) -> float:
    """The interpreter's thread switch interval for this process: an edge daemon's, or a simulated
    fleet's (see SIMULATOR_SWITCH_INTERVAL_S)."""
    return SWITCH_INTERVAL_S if args.simulate is None else SIMULATOR_SWITCH_INTERVAL_S


def run(args: argparse.Namespace) -> int:
    sys.setswitchinterval(switch_interval(args))
    _warm_parser()
    if args.simulate is not None:
        return _simulate(args)
    try:
        config = load_config(args.config, args)
    except ConfigError as exc:
        print(f"streamql edge: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2, default=str))
        return 0
    _logging(config.log_level)
    if config.guard.enabled and guard_state() is None:  # this process guards; its child runs the daemon
        return supervise(max_rss_mb=config.guard.max_rss_mb, check_interval_s=config.guard.check_interval_s)
    from .daemon import run_daemon
    try:
        return asyncio.run(run_daemon(config))
    except ConfigError as exc:
        print(f"streamql edge: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback, for a failed start
        logging.getLogger("streamql.edge").exception("the edge daemon failed")
        print(f"streamql edge: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _simulate(args: argparse.Namespace) -> int:
    if args.simulate < 1:
        print("streamql edge: --simulate needs at least 1 edge", file=sys.stderr)
        return 2
    if args.processes < 1 or args.processes > args.simulate:
        print("streamql edge: --processes must be between 1 and the number of simulated edges", file=sys.stderr)
        return 2
    if getattr(args, "watchdog", None):
        print("streamql edge: --watchdog guards one daemon; it does not apply to --simulate", file=sys.stderr)
        return 2
    try:
        admin_token = _admin_token(args)
    except ConfigError as exc:
        print(f"streamql edge: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "id", None) is None:
        args.id = "sim"      # each simulated edge gets its own id; the template needs one
    try:
        base = load_config(args.config, args)
    except ConfigError as exc:
        print(f"streamql edge: {exc}", file=sys.stderr)
        return 2
    if not base.federation and not base.nats:
        print("streamql edge: --simulate needs --federation URL (or --nats URL)", file=sys.stderr)
        return 2
    store_root = Path(args.store) if args.store else Path("edge-sim")
    tokens = {}
    if args.tokens:
        from .simulate import load_tokens
        try:
            tokens = load_tokens(args.tokens)
        except (OSError, ValueError, KeyError) as exc:
            print(f"streamql edge: --tokens: {exc}", file=sys.stderr)
            return 2
    _logging(base.log_level)
    from .sim_processes import raise_open_file_limit, run_processes

    raise_open_file_limit()   # every simulated edge holds a socket
    if args.processes > 1:
        return run_processes(args, store_root, admin_token, base.federation, STOP_DEADLINE_S)
    return asyncio.run(_run_fleet(args, base, store_root, tokens, admin_token))


def _admin_token(args: argparse.Namespace) -> str | None:
    """The admin token to provision with (None without --provision): never a flag's value."""
    given = getattr(args, "provision", None)
    if isinstance(given, str):
        raise ConfigError("--provision", SECRET_ON_COMMAND_LINE.format(file_flag="--provision-token-file",
                                                                      env=ADMIN_TOKEN_ENV))
    path = getattr(args, "provision_token_file", None)
    if path:
        return read_secret_file(path, "admin token")
    if given:
        token = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
        if not token:
            raise ConfigError("--provision", f"needs the admin token: --provision-token-file PATH or ${ADMIN_TOKEN_ENV}")
        return token
    return None


async def _run_fleet(args, base, store_root: Path, tokens: dict, admin_token: str | None) -> int:
    from .simulate import SimulatedFleet

    stop = asyncio.Event()
    install_stop_handlers(asyncio.get_running_loop(), stop)
    fleet = SimulatedFleet(args.simulate, base, store_root=store_root, seed=args.seed, tokens=tokens,
                           admin_token=admin_token, prefix=args.id_prefix, rate_scale=args.rate_scale,
                           shard=args.shard, ramp_s=args.ramp_s)
    log = logging.getLogger("streamql.edge.simulate")
    # thousands of edges' engines, links and signals in one process: full collections walking them
    # all held every thread for seconds at a 10,000-edge fan-out; what survives one is frozen
    GcPauses(asyncio.get_running_loop(), freeze=True, log=log).install()
    starting = asyncio.ensure_future(fleet.start())
    stopping = asyncio.ensure_future(stop.wait())
    try:    # a SIGTERM while thousands of edges start stops at once, not after the last one started
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done() and starting.exception() is not None:
            log.error("the simulated fleet did not start: %s", starting.exception())
            return 1
        if starting.done():
            log.info("%d simulated edges started (store %s)", len(fleet.daemons), store_root)
            await stopping
        return 0
    finally:
        starting.cancel()
        stopping.cancel()
        began = time.monotonic()
        try:
            await asyncio.wait_for(fleet.stop(), STOP_DEADLINE_S)
            log.info("%d simulated edges stopped in %.1f s", len(fleet.daemons), time.monotonic() - began)
        except asyncio.TimeoutError:
            log.warning("the simulated fleet did not stop within %.0f s; leaving the rest", STOP_DEADLINE_S)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)

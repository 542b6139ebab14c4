"""Many simulated edges in one process: `streamql edge --simulate N --federation URL …`.

Each simulated edge is a full `EdgeDaemon` — its own engine, store directory, buffer, metadata,
capabilities, signals and WebSocket — but they share what can be shared: the process (the
library, the grammar, numpy), one event loop, one aiohttp session, and one `SignalPump`
(edge_engine/sim_signals.py): readings are computed when read, and only streamed signals are
polled. `--processes K` splits a fleet over K processes (edge_engine/sim_processes.py).

**Identities** are a pure function of (seed, index), so a fleet can be recreated and an oracle can
recompute every simulated value (`SimModel.values_at`):

- id `{prefix}{code}-{i:04d}`: `wl-0001` (wheel loader), `dt-0002` (dumper), `ex-0003` (excavator);
- metadata: `kind`, `region` (US, EU and AU most often, CA, CL, ZA), `site`, `model_year`, `fleet`;
- capabilities: `ram_kb` (128 MiB … 2 GiB), `flash_kb` (512 MiB … 8 GiB), `cpu` by size;
- signals: `vibration` (sine with noise, digging bursts and spikes; 100 Hz × rate scale, delivered
  in batches every 0.25 s),
  `outside_temperature` (a slow mean-reverting walk around a regional level: about half the
  US, EU and CA machines are below −20 °C, AU ones never), `engine_speed` (rpm, 10 Hz) and `battery`
  (percent, also reported in health; about 1 edge in 16, chosen by its own hash, runs low, near 10 %);
- CPU and memory in health: `simulated_load(seed, id, t)`, a pure function of the fleet seed, the
  edge's id and the time (a level of its own, a slow cycle and a little noise per 5 s step), so an
  oracle can check what the federation shows;
- store directory `{store}/{id}`; the seed of edge i is derived from the fleet seed and i.

**Tokens**: `--tokens FILE` (JSON `{id: token}` or `[{"id", "token"}]`, or lines `id token`), or
`--provision` with the admin token in `--provision-token-file PATH` or $STREAMQL_ADMIN_TOKEN (never
on the command line, where `ps` shows it), which registers the edges missing from
`{store}/tokens.json` with `POST /v1/edges` and keeps their tokens there (mode 0600) for the next run.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from streamql.clock import SYSTEM_CLOCK, Clock

from .config import Capabilities, EdgeConfig
from .daemon import EdgeDaemon
from .fragment_costs import FIRST_ROWS, FRAGMENT_COSTS, CostTotals
from .pacing import PACER
from .sim_signals import SignalPump, on_demand
from .signals import build_drivers

__all__ = ["SimIdentity", "fleet_identities", "SignalPump", "SimulatedFleet", "load_tokens", "provision_tokens",
           "simulated_load", "low_battery", "SimulatedProcess"]

log = logging.getLogger("streamql.edge.simulate")

KINDS = (("wheel loader", "wl"), ("dumper", "dt"), ("excavator", "ex"))
REGIONS = {   # region → (mean outside temperature °C, sites): mines in the north, mostly
    "US": (-21.0, ("minot", "fairbanks", "elko", "butte")),
    "EU": (-22.0, ("kiruna", "oulu", "tromso", "gallivare")),
    "AU": (14.0, ("pilbara", "kalgoorlie", "mount-isa")),
    "CA": (-26.0, ("yellowknife", "fort-mcmurray", "thompson")),
    "CL": (6.0, ("escondida", "chuquicamata")),
    "ZA": (17.0, ("rustenburg", "kathu")),
}
REGION_WEIGHTS = (("US", 3), ("EU", 3), ("AU", 2), ("CA", 1), ("CL", 1), ("ZA", 1))
MEMORY_KB = (131072, 262144, 524288, 1048576, 2097152)
CPUS = {131072: "cortex-a7", 262144: "cortex-a53", 524288: "cortex-a53", 1048576: "cortex-a72", 2097152: "x86_64"}


@dataclass(frozen=True)
class SimIdentity:
    id: str
    metadata: dict
    capabilities: Capabilities
    signals: list
    seed: int


def fleet_identities(n: int, seed: int = 0, *, prefix: str = "", rate_scale: float = 1.0) -> list[SimIdentity]:
    """The first `n` edges of the fleet of `seed` (module docstring); edge i is the same in any fleet size."""
    return [_identity(i, seed, prefix, rate_scale) for i in range(1, n + 1)]


def _identity(i: int, seed: int, prefix: str, rate_scale: float) -> SimIdentity:
    rng = random.Random(f"streamql-fleet:{seed}:{i}")
    kind, code = KINDS[(i - 1) % len(KINDS)]
    region = rng.choices([r for r, _ in REGION_WEIGHTS], [w for _, w in REGION_WEIGHTS])[0]
    base_temperature, sites = REGIONS[region]
    ram = rng.choice(MEMORY_KB)
    flash = rng.choice((524288, 1048576, 2097152, 4194304, 8388608))
    edge_seed = rng.randrange(1 << 31)
    metadata = {"kind": kind, "region": region, "site": rng.choice(sites),
                "model_year": rng.randrange(2012, 2025), "fleet": f"fleet-{seed}"}
    vibration_gain = {"wl": 1.0, "dt": 0.7, "ex": 1.3}[code]
    signals = [
        {"name": "vibration", "kind": "simulated", "shape": "sine", "seed": edge_seed,
         "rate_hz": 100.0 * rate_scale, "frequency_hz": round(rng.uniform(8.0, 16.0), 2), "batch_interval_s": 0.25,
         "amplitude": round(0.8 * vibration_gain, 3), "noise": 0.2,
         "bursts": {"every_s": 30.0, "probability": 0.5, "duration_s": 8.0,
                    "amplitude": round(2.5 * vibration_gain, 3), "frequency_hz": 45.0},
         "spikes": {"rate_per_s": 0.02, "amplitude": 6.0}},
        {"name": "outside_temperature", "kind": "simulated", "shape": "walk", "seed": edge_seed + 1,
         "rate_hz": 1.0, "offset": round(base_temperature + rng.uniform(-6.0, 6.0), 1), "amplitude": 4.0,
         "reversion_s": 1800.0,
         "level_shifts": {"every_s": 3600.0, "probability": 0.3, "duration_s": 600.0, "magnitude": 3.0}},
        {"name": "engine_speed", "kind": "simulated", "shape": "walk", "seed": edge_seed + 2,
         "rate_hz": 10.0 * rate_scale, "offset": {"wl": 1500.0, "dt": 1300.0, "ex": 1800.0}[code], "batch_interval_s": 0.25,
         "amplitude": 250.0, "reversion_s": 120.0, "noise": 15.0, "min": 600.0, "max": 2400.0},
        {"name": "battery", "kind": "simulated", "shape": "walk", "seed": edge_seed + 3, "rate_hz": 0.2,
         "offset": round(rng.uniform(55.0, 90.0), 1), "amplitude": 8.0, "reversion_s": 7200.0,
         "min": 0.0, "max": 100.0},
    ]
    if low_battery(seed, i):  # drawn apart from rng, so every other value stays what it was
        low = random.Random(f"streamql-battery:{seed}:{i}")
        signals[-1].update(offset=round(low.uniform(6.0, 12.0), 1), amplitude=2.0, max=19.0)
    return SimIdentity(f"{prefix}{code}-{i:04d}", metadata, Capabilities(ram_kb=ram, flash_kb=flash, cpu=CPUS[ram]),
                       signals, edge_seed)


def low_battery(seed: int, i: int) -> bool:
    """Whether edge i of the fleet of `seed` runs on a low battery (about 1 in 16)."""
    return random.Random(f"streamql-battery:{seed}:{i}").random() < 1 / 16


def simulated_load(seed: int, device_id: str, t: float) -> dict:
    """The CPU (percent) and resident memory (KiB) edge `device_id` of fleet `seed` reports at time t.

    A pure function: a level of its own (CPU 2–40 %, memory 24–200 MiB), a slow cycle (5–30 min)
    and noise; it changes in steps of 5 s.
    """
    t = math.floor(t / 5.0) * 5.0
    cpu_level, cpu_swing, memory_level, memory_swing, period, phase = _own_load(seed, device_id)
    step = random.Random(f"streamql-load:{seed}:{device_id}:{int(t)}")
    cycle = math.sin(2 * math.pi * t / period + phase)
    cpu = cpu_level + cpu_swing * cycle + step.uniform(-2.0, 2.0)
    memory = memory_level + memory_swing * cycle + step.uniform(-512.0, 512.0)
    return {"cpu_percent": round(min(100.0, max(0.1, cpu)), 2), "memory_kb": int(max(4096.0, memory))}


@functools.lru_cache(maxsize=1 << 16)
def _own_load(seed: int, device_id: str) -> tuple[float, ...]:
    """An edge's own load levels (simulated_load), drawn once: seeding a Random from a string
    hashes it, and every heartbeat of every simulated edge asked again."""
    own = random.Random(f"streamql-load:{seed}:{device_id}")
    cpu_level, cpu_swing = own.uniform(2.0, 40.0), own.uniform(1.0, 15.0)
    memory_level, memory_swing = own.uniform(24_576, 204_800), own.uniform(1_024, 16_384)
    period, phase = own.uniform(300.0, 1800.0), own.uniform(0.0, 2 * math.pi)
    return cpu_level, cpu_swing, memory_level, memory_swing, period, phase


class SimulatedProcess:
    """What an edge's health monitor asks of its process, answered by `simulated_load` (computed
    once per 5 s step: a heartbeat asks for CPU and memory together)."""

    def __init__(self, seed: int, device_id: str, clock: Clock = SYSTEM_CLOCK):
        self.seed, self.device_id, self.clock = seed, device_id, clock
        self._step: float | None = None
        self._load: dict = {}

    def _now(self) -> dict:
        step = math.floor(self.clock.now() / 5.0)
        if step != self._step:
            self._load, self._step = simulated_load(self.seed, self.device_id, step * 5.0), step
        return self._load

    def cpu_percent(self) -> float:
        return self._now()["cpu_percent"]

    def memory_kb(self) -> int:
        return self._now()["memory_kb"]


# == tokens ====================================================================================
def load_tokens(path: str | os.PathLike) -> dict[str, str]:
    """Device tokens by edge id from a file: JSON {id: token}, JSON [{id, token}], or lines `id token`."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except ValueError:
        tokens = {}
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.replace(",", " ").replace("\t", " ").split()
            if len(parts) != 2:
                raise ValueError(f"{path}: expected 'id token' per line, got {line!r}")
            tokens[parts[0]] = parts[1]
        return tokens
    if isinstance(data, dict):
        return {str(k): str(v) for k, v in data.items()}
    if isinstance(data, list):
        return {str(item["id"]): str(item["token"]) for item in data}
    raise ValueError(f"{path}: expected a JSON object or list of tokens")


def _http_base(federation: str) -> str:
    parts = urlsplit(federation)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


PROVISION_BATCH = 1000     # devices per POST /v1/edges (the federation's MAX_PROVISION_BATCH)


async def provision_tokens(identities: list[SimIdentity], federation: str, admin_token: str,
                           store_root: Path, session: aiohttp.ClientSession) -> dict[str, str]:
    """Tokens for every identity: kept ones from `{store_root}/tokens.json`, the others provisioned
    a thousand per request (10,000 edges: ten requests), the file rewritten after each batch."""
    path = store_root / "tokens.json"
    tokens = load_tokens(path) if path.exists() else {}
    missing = [identity for identity in identities if identity.id not in tokens]
    url = _http_base(federation) + "/v1/edges"
    headers = {"Authorization": f"Bearer {admin_token}"}
    for start in range(0, len(missing), PROVISION_BATCH):
        batch = missing[start:start + PROVISION_BATCH]
        body = {"devices": [{"id": identity.id, "metadata": identity.metadata,
                             "capabilities": {k: v for k, v in dataclasses.asdict(identity.capabilities).items()
                                              if v is not None}} for identity in batch]}
        for _ in range(30):  # the federation limits an admin token's requests: wait as it says
            async with session.post(url, json=body, headers=headers) as response:
                status, text = response.status, await response.text()
                retry_after = response.headers.get("Retry-After", "1")
            if status != 429:
                break
            await asyncio.sleep(min(10.0, float(retry_after)))
        if status == 409:
            raise RuntimeError(f"some of {batch[0].id} … {batch[-1].id} are already provisioned, but their tokens "
                               f"are not in {path}; give --tokens FILE or remove the devices from the federation "
                               f"({text.strip()[:300]})")
        if status >= 400:
            raise RuntimeError(f"provisioning {batch[0].id} … {batch[-1].id} failed: HTTP {status} {text[:500]}")
        for made in json.loads(text)["edges"]:
            tokens[made["id"]] = made["token"]
        save_tokens(path, tokens)
    return tokens


def save_tokens(path: Path, tokens: dict[str, str]) -> None:
    """Write `{id: token}` atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(tokens, handle, indent=0)
    os.replace(tmp, path)


# == the fleet =================================================================================
def _threads() -> int:
    """Threads of this process (fragments' workers are bare threads `threading` does not list)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return -1


def _warm_parser() -> None:
    from streamql.syntax import parse

    parse("select 1;")


LONG_SHARE = 0.1
"""The part of the time a simulator process's long fragments compute (edge_engine/pacing.py): the
process stands for many devices, each with a CPU of its own; `count(iota(1, 10^12))@e` on all of
them at once must leave the machine to their short fragments and links."""

# long after a tenth of a device's half second, as they compute a tenth of the time (LONG_SHARE):
# `count(iota(1, 10^12))@e` on 25 devices of one process otherwise took 12.5 CPU-seconds of it
# before taking turns, holding the compute gate's places all along
SIM_LONG_AFTER_S = 0.05
HANDSHAKES_AT_ONCE = 32     # per simulator process: hellos beyond this wait their turn
LAG_TICK_S = 0.1            # the loop-lag probe: a task that sleeps this long and records how late it wakes
LAG_STALL_S = 1.0           # a wake this late is logged
LAG_REPORT_S = 30.0         # a summary of the lags this often
CONNECTS_PER_S = 500.0       # the connect ramp: edges' first attempts spread over n / this seconds


class SimulatedFleet:
    """N simulated edges on this event loop (see the module docstring).

    `shard=(k, K)` keeps the edges i with (i − 1) mod K = k: K processes, each with its own shard,
    simulate the fleet of N together (`streamql edge --simulate N --processes K`). Readings are
    computed when read (edge_engine/sim_signals.py); first connects are spread over a ramp of
    `ramp_s` (default N / CONNECTS_PER_S) with at most HANDSHAKES_AT_ONCE handshakes at once, and
    heartbeats are jittered so that they do not beat in step.
    """

    def __init__(self, n: int, base: EdgeConfig, *, store_root: str | os.PathLike, seed: int = 0,
                 tokens: dict[str, str] | None = None, admin_token: str | None = None, prefix: str = "",
                 rate_scale: float = 1.0, clock: Clock = SYSTEM_CLOCK, shard: tuple[int, int] = (0, 1),
                 ramp_s: float | None = None, **daemon_options):
        k, count = shard
        if not 0 <= k < count:
            raise ValueError(f"shard {k} of {count} does not exist")
        self.identities = [identity for i, identity in enumerate(fleet_identities(n, seed, prefix=prefix,
                                                                                 rate_scale=rate_scale))
                           if i % count == k]
        self.seed = seed
        self.base = base
        self.store_root = Path(store_root)
        self.tokens = dict(tokens or {})
        self.admin_token = admin_token
        self.clock = clock
        self.ramp_s = n / CONNECTS_PER_S if ramp_s is None else ramp_s
        self.daemon_options = daemon_options
        self.daemons: list[EdgeDaemon] = []
        self.pump = SignalPump(clock)
        self.session: aiohttp.ClientSession | None = None
        self._watch: asyncio.Future | None = None
        self._rng = random.Random(f"streamql-ramp:{seed}:{k}")
        PACER.share = min(PACER.share, LONG_SHARE)
        PACER.long_after_s = min(PACER.long_after_s, SIM_LONG_AFTER_S)
        PACER.fair_by_edge = os.environ.get("STREAMQL_SIM_GATE_FAIR_BY") == "edge"   # measured: bench/README.md
        if PACER.gate is not None and os.environ.get("STREAMQL_SIM_GATE_WAKE_CREDIT_S"):   # ditto
            PACER.gate.wake_credit_s = float(os.environ["STREAMQL_SIM_GATE_WAKE_CREDIT_S"])

    def config_for(self, identity: SimIdentity) -> EdgeConfig:
        metadata = {**self.base.metadata, **identity.metadata}
        # the buffer of a simulated edge is not fsynced: thousands of fsyncs when the simulator
        # stops (each edge saves its buffer state) took longer than the stop may
        buffer = dataclasses.replace(self.base.buffer, fsync="never")
        return dataclasses.replace(self.base, id=identity.id, token=self.tokens.get(identity.id, self.base.token),
                                   store=self.store_root / identity.id, metadata=metadata, buffer=buffer,
                                   capabilities=identity.capabilities, signals=list(identity.signals), source=None)

    async def start(self) -> "SimulatedFleet":
        # no pool limit (every edge holds its socket), DNS cached, no per-host cap
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=0))
        if self.admin_token and self.base.federation:
            self.tokens.update(await provision_tokens(self.identities, self.base.federation, self.admin_token,
                                                      self.store_root, self.session))
        self.pump.start()
        self._watch = asyncio.ensure_future(self._watch_loop())
        # the statement parser is built once per process (a quarter of a second, seconds on a busy
        # machine): now, before any edge connects, not inside the first fragment of every edge
        await asyncio.to_thread(_warm_parser)
        gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
        for identity in self.identities:
            config = self.config_for(identity)
            drivers = on_demand(build_drivers(config.signals, clock=self.clock), self.pump, self.clock)
            link_options = {"start_delay_s": self._rng.uniform(0.0, self.ramp_s), "gate": gate,
                            "heartbeat_jitter": 0.2}
            daemon = EdgeDaemon(config, clock=self.clock, session=self.session, drivers=drivers,
                                start_drivers=False, seed=identity.seed, link_options=link_options,
                                process=SimulatedProcess(self.seed, identity.id, self.clock), **self.daemon_options)
            await daemon.start()
            self.daemons.append(daemon)
        return self

    async def _watch_loop(self, tick_s: float = LAG_TICK_S) -> None:
        """The process's event loop lag (a tick that wakes late: every edge's frames waited that
        long), logged when a wake is LAG_STALL_S late and summed up every LAG_REPORT_S."""
        loop = asyncio.get_running_loop()
        lags: list[float] = []
        reported = loop.time()
        costs_before, process_cpu = FRAGMENT_COSTS.totals(), time.process_time()
        by_key_before = FRAGMENT_COSTS.by_principal_and_statement()
        while True:
            due = loop.time() + tick_s
            await asyncio.sleep(tick_s)
            late = max(0.0, loop.time() - due)
            lags.append(late)
            if late >= LAG_STALL_S:
                log.warning("the simulator's event loop was %.1f s late (%d fragments running, %d threads)",
                            late, self.fragments_running(), _threads())
            if loop.time() - reported >= LAG_REPORT_S:
                lags.sort()
                log.warning("simulator loop lag over %.0f s: p50 %.3f s, p99 %.3f s, max %.2f s; %d fragments "
                            "running, %d threads, %d computing, %d waiting to compute (%d principals' lines); "
                            "%d unread streams gave their slot since the start; %d fragments refused for slots "
                            "(%d one-shot); %d one-shot fragments stopped at their deadline",
                            loop.time() - reported, lags[len(lags) // 2], lags[int(len(lags) * 0.99)], lags[-1],
                            self.fragments_running(), _threads(), PACER.computing, PACER.queued,
                            PACER.keys_waiting, self.slots_yielded(), *self.slots_refused(), self.past_deadline())
                costs_now = FRAGMENT_COSTS.totals()
                log.warning("fragments over %.0f s: %s; the process's CPU %.2f s", loop.time() - reported,
                            _costs_text(costs_now.minus(costs_before)), time.process_time() - process_cpu)
                log.warning("streams' first rows over %.0f s: %s", loop.time() - reported, FIRST_ROWS.take_text())
                by_key_now = FRAGMENT_COSTS.by_principal_and_statement()
                log.warning("fragment CPU by principal and statement over %.0f s: %s", loop.time() - reported,
                            json.dumps(_by_key_text(by_key_now, by_key_before)))
                lags, reported, costs_before, process_cpu = [], loop.time(), costs_now, time.process_time()
                by_key_before = by_key_now

    def slots_yielded(self) -> int:
        """Paused streams stopped to give their slot (edge_engine/fragments.py), over every edge's
        current connection."""
        return sum(d.fragments.yielded for d in self.daemons if d.fragments is not None)

    def past_deadline(self) -> int:
        """One-shot fragments stopped by their edge at the deadline the federation sent (its device
        timeout), over every edge's current connection."""
        return sum(d.fragments.past_deadline for d in self.daemons if d.fragments is not None)

    def slots_refused(self) -> tuple[int, int]:
        """Fragments refused for want of slots (all, one-shot), over every edge's current connection."""
        sets = [d.fragments for d in self.daemons if d.fragments is not None]
        return sum(f.refused_full for f in sets), sum(f.refused_one_shot for f in sets)

    def fragments_running(self) -> int:
        return sum(len(d.fragments.running) for d in self.daemons if d.fragments is not None)

    async def stop(self, close_timeout_s: float = 3.0) -> None:
        """Every edge stops at once: all links told to stop and closed with 1001 together (bounded:
        a federation that does not answer the close costs `close_timeout_s`, not that per edge),
        then the daemons stop, also together."""
        if self._watch is not None:
            self._watch.cancel()
        await self.pump.stop()
        links = [daemon.link for daemon in self.daemons if daemon.link is not None]
        closing = asyncio.gather(*(link.stop() for link in links), return_exceptions=True)
        try:
            await asyncio.wait_for(closing, close_timeout_s)
        except asyncio.TimeoutError:
            log.warning("%d edges' links did not close within %.0f s", sum(1 for link in links if link.connection),
                        close_timeout_s)
        await asyncio.gather(*(daemon.stop() for daemon in self.daemons), return_exceptions=True)
        if self.session is not None:
            await self.session.close()

    def connected(self) -> int:
        return sum(1 for d in self.daemons if d.link is not None and d.link.connected.is_set())

    async def wait_connected(self, timeout: float = 30.0) -> int:
        deadline = asyncio.get_running_loop().time() + timeout
        while self.connected() < len(self.daemons) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        return self.connected()


def _by_key_text(now: dict, before: dict) -> list:
    """[principal, statement, fragments, CPU s] that changed between two readings of the costs by
    principal and statement (a soak maps principals to its client groups: bench/bench_soak.py)."""
    out = []
    for (principal, statement), (n, cpu) in now.items():
        n0, cpu0 = before.get((principal, statement), (0, 0.0))
        if n > n0:
            out.append([principal, statement, n - n0, round(cpu - cpu0, 4)])
    return out


def _costs_text(costs: CostTotals) -> str:
    """The fragments' CPU split into compiling and running, for the simulator's summary."""
    per = max(1, costs.compiled)
    return (f"{costs.fragments} ended, {costs.compiled} compiled ({costs.plans_reused} plans reused); CPU compiling "
            f"{costs.compile_cpu_s:.2f} s ({costs.compile_cpu_s / per * 1e3:.2f} ms each, wall "
            f"{costs.compile_wall_s / per * 1e3:.1f} ms each), running {costs.run_cpu_s:.2f} s")

"""The edge daemon: one device's engine, signals, bundles, buffer and link, on one event loop.

    daemon = EdgeDaemon(load_config("edge.toml"))
    await daemon.start()          # store opened, bundles restored, signals and link running
    ...
    await daemon.stop()

Start-up: the store directory is opened (`edge_engine.store`), the restart counter bumped, the
store-and-forward buffer opened, the signal drivers built and started, the deployed bundles
restored into a fresh engine (signatures verified again) and their autostart queries started;
then the link connects (when a federation is configured) and keeps reconnecting.

What arrives over the link is dispatched here: `query`/`credit`/`cancel` to the connection's
`FragmentSet`, `deploy`/`rollback`/`undeploy` to `Deployments` (in a worker thread, one at a
time, answered with `ack`/`nack`), `publish_ack` to the `Publisher`. Many daemons can share one
event loop and one aiohttp session (`edge_engine.simulate`).

A rollout waits for devices to report healthy (docs/models.md, Rollouts): an `ack` names the
bundle's autostart queries and the models it loaded, and a `health` frame goes out right after it
and whenever an autostart query changes status, not only on the heartbeat.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import signal as _signal
import threading
from pathlib import Path
from typing import Any, Callable

import aiohttp
import numpy as np

import streamql
from streamql import wire
from streamql.clock import SYSTEM_CLOCK, Clock
from streamql.models import signing
from streamql.streams import Limits

from .autostart import AutostartSet
from .buffer import StoreForwardBuffer
from .config import ConfigError, EdgeConfig, detect_runtimes
from .deployments import Deployments
from .fragments import DuplicateQuery, FragmentSet
from .guard import STOP_DEADLINE_S, Quarantine, RunningLog, guard_state, install_stop_handlers
from .health import ErrorLogHandler, HealthMonitor, ProcessSampler, bump_restarts
from .link import Connection, Link
from .publish import Publisher
from .checkpoints import CheckpointStore, checkpoint_key, source_positions
from .signals import CsvReplayDriver, DriverSet, build_drivers
from .store import EdgeStore

__all__ = ["EdgeDaemon", "CRASH_ENV", "load_trusted_keys"]

CRASH_ENV = "STREAMQL_EDGE_CRASH_AT"
"""Fault injection for the reliability tests: the daemon SIGKILLs itself at that deployment step
(`built-scratch`, `bundle-written`, `before-switch`, `after-switch`)."""

SOFTWARE = f"streamql-edge {streamql.__version__}"
# compiled fragments kept per process: an edge answers the same fleet statements again and again,
# and a simulator process's edges share it (plans are shared only where the catalogs match:
# streamql/statement_cache.py); 512 covers a fleet's statements, bounded whatever comes in
STATEMENT_CACHE = streamql.StatementCache(512)


def load_trusted_keys(entries: list[str], base: Path | None = None) -> list:
    """Public keys from the configuration: PEM text, or key files (relative to the config file)."""
    keys = []
    for i, entry in enumerate(entries):
        source: Any = entry
        if not entry.lstrip().startswith("-----BEGIN"):
            path = Path(entry).expanduser()
            if not path.is_absolute() and base is not None and (base / path).exists():
                path = base / path
            source = path
        try:
            keys.append(signing.load_public_key(source))
        except streamql.ModelError as exc:
            raise ConfigError(f"trusted_keys[{i}]", exc.message) from None
    return keys


def _crash_hook(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), _signal.SIGKILL)


class EdgeDaemon:
    """One edge engine daemon (see the module docstring)."""

    def __init__(self, config: EdgeConfig, *, clock: Clock = SYSTEM_CLOCK,
                 session: aiohttp.ClientSession | None = None, drivers: DriverSet | None = None,
                 start_drivers: bool = True, seed: int | None = None, rng: random.Random | None = None,
                 log: logging.Logger | None = None, run_tests: bool = True,
                 callables: dict[str, Callable] | None = None, max_fragments: int | None = None,
                 process: ProcessSampler | None = None, link_options: dict | None = None):
        self.config = config
        self.link_options = link_options or {}   # a simulated fleet's ramp, handshake gate, jitter
        self.clock = clock
        self.session = session
        self.drivers = drivers
        self._start_drivers = start_drivers if drivers is not None else True
        self.seed = seed
        self.rng = rng or random.Random(seed)
        self.log = log or logging.getLogger(f"streamql.edge.{config.id}")
        self.run_tests = run_tests
        self.callables = callables
        self.max_fragments = max_fragments or config.limits.max_queries
        self.process = process  # what reports CPU and memory (a simulated edge's own load)
        self.engine = None
        self.autostarts = AutostartSet([])
        self.checkpoints: CheckpointStore | None = None
        self.fragments: FragmentSet | None = None
        self.link: Link | None = None
        self._link_task: asyncio.Task | None = None
        self._send_task: asyncio.Task | None = None
        self._deploy_lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task] = set()
        self._compile_lock = threading.Lock()
        self._stopped = asyncio.Event()
        self._health_due = False      # a health frame is about to go out (status changes coalesce)
        self.started = False

    # == life ===================================================================================
    async def start(self) -> "EdgeDaemon":
        config = self.config
        self.loop = asyncio.get_running_loop()
        self._deploy_lock = asyncio.Lock()
        self.store = EdgeStore(config.store)
        restarts = bump_restarts(config.store)
        self._start_guarded()
        self.buffer = StoreForwardBuffer(
            self.store.buffer_dir, max_records=config.buffer.max_records, max_bytes=config.buffer.max_bytes,
            overflow=config.buffer.overflow, fsync=config.buffer.fsync,
            fsync_interval=config.buffer.fsync_interval_s, clock=self.clock)
        if self.drivers is None:
            base = config.source.parent if config.source else None
            self.drivers = build_drivers(config.signals, clock=self.clock, base_dir=base, callables=self.callables)
        self.checkpoints = CheckpointStore(config.store, sync=config.buffer.fsync == "always", log=self.log)
        battery = self._battery_reader()
        self.monitor = HealthMonitor(clock=self.clock, restarts=restarts, battery=battery, process=self.process)
        self._error_handler = ErrorLogHandler(self.monitor.errors)
        self.log.addHandler(self._error_handler)
        self.publisher = Publisher(self.buffer, self.loop, log=self.log)
        self.monitor.watch_buffer(self.buffer.stats)
        self.monitor.add_queue("buffer", lambda: self.buffer.count)
        self.monitor.add_queue("publish_unacked", lambda: self.publisher.unacked)
        self.monitor.add_queue("fragments", lambda: len(self.fragments.running) if self.fragments else 0)
        self.monitor.add_queue("fragments_paused", lambda: self.fragments.paused() if self.fragments else 0)
        self.monitor.watch_queries(lambda: self.fragments.qids() if self.fragments else [])
        base = config.source.parent if config.source else None
        keys = load_trusted_keys(config.trusted_keys, base)
        self.trusted_keys = keys
        self.deployments = Deployments(self.store, self._new_engine, self.fit_capabilities(), keys,
                                       log=self.log, run_tests=self.run_tests)
        self.deployments.crash_hook = _crash_hook
        engine = await asyncio.to_thread(self.deployments.restore)
        for message in self.deployments.restore_errors:
            self.monitor.errors.add(message, "RestoreError")
        specs = self.deployments.autostart()
        self._resume_replays(specs)
        await self._swap(engine, specs)
        if self._start_drivers:   # once the autostart queries read their signals: no reading is missed
            await asyncio.to_thread(self.autostarts.wait_ready, 5.0)
            await self.drivers.start()
        if self.deployments.bundles:
            self.log.info("restored %s", ", ".join(f"{n} {v}" for n, v in self.deployments.active().items()))
        if config.nats:   # the link over NATS (edge_engine/nats_link.py): same frames, same handler
            from .nats_link import NatsLink

            self.link = NatsLink(self, config.nats, config.id, config.token, reconnect=config.reconnect,
                                 heartbeat_s=config.heartbeat_s, stats=self.monitor.link, rng=self.rng, log=self.log,
                                 **self.link_options)
            self._link_task = self.loop.create_task(self.link.run(), name=f"link {config.id}")
        elif config.federation:
            self.link = Link(self, config.federation, config.token, reconnect=config.reconnect,
                             heartbeat_s=config.heartbeat_s, session=self.session, clock=self.clock,
                             stats=self.monitor.link, rng=self.rng, log=self.log, tls=config.tls,
                             **self.link_options)
            self._link_task = self.loop.create_task(self.link.run(), name=f"link {config.id}")
        self.started = True
        return self

    def _start_guarded(self) -> None:
        """Under the process guard: statements running at a memory restart are quarantined, and
        what runs from now on is written ahead (edge_engine/guard.py)."""
        self.quarantine = Quarantine(self.config.store)
        self.guard = guard_state()
        self.running_log = RunningLog(self.config.store) if self.guard is not None else None
        if self.running_log is None:
            return
        was_running = self.running_log.collect()
        last = self.guard.get("last") or {}
        if last.get("kind") == "memory" and was_running:
            self.quarantine.add(was_running, self.config.guard.quarantine_s, last.get("reason", "memory"))
            self.log.warning("restarted by the guard (%s); %d statements running then are refused for %g s",
                             last.get("reason"), len(was_running), self.config.guard.quarantine_s)
        elif last:
            self.log.warning("restarted by the guard: %s", last.get("reason"))

    def guard_view(self) -> dict | None:
        """Health `guard`: restarts by the guard, the last reason and time, statements quarantined."""
        if self.guard is None and not len(self.quarantine):
            return None
        last = (self.guard or {}).get("last") or {}
        return {"restarts": int((self.guard or {}).get("restarts", 0)), "reason": last.get("reason"),
                "time": last.get("time"), "quarantined": len(self.quarantine)}

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        if self.link is not None:
            await self.link.stop()
        if self._link_task is not None:
            try:
                await asyncio.wait_for(self._link_task, 5.0)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001
                self._link_task.cancel()
        if self.fragments is not None:
            self.fragments.drop_all()
        for task in list(self._tasks):
            task.cancel()
        if self.autostarts.queries:   # a thread hop only when there is something to stop (10,000 edges stop at once)
            await asyncio.to_thread(self.autostarts.stop)
        if self._start_drivers and self.drivers is not None:
            await self.drivers.stop()
        self.buffer.close()
        self.log.removeHandler(self._error_handler)
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def spawn(self, coroutine) -> asyncio.Task:
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # == the engine =============================================================================
    def _new_engine(self):
        engine = streamql.Engine(clock=self.clock, seed=self.seed, trusted_keys=self.trusted_keys, name=self.config.id,
                                 files=self.config.files_dir,   # statements read the operator's files only
                                 foreign=self.config.foreign,   # … and call only the Python it names
                                 statement_cache=STATEMENT_CACHE)
        for name, live in self.drivers.signals.items():
            engine.add_signal(name, live, type=live.type_name or None)
        return engine

    async def _swap(self, engine, specs) -> None:
        """Make `engine` the one that runs: stop the old autostart queries, start the new ones."""
        old = self.autostarts
        self.autostarts = AutostartSet([])
        await asyncio.to_thread(old.stop)
        self.engine = engine
        # a failing query logs a warning, which the health frame's errors pick up
        config = self.config
        self.autostarts = AutostartSet.start(engine, specs, self.publisher.emit, log=self.log,
                                             on_status=self._autostart_changed, checkpoints=self.checkpoints,
                                             checkpoint_interval_s=config.autostart.checkpoint_interval_s,
                                             max_failures=config.autostart.max_failures, buffer=self.buffer,
                                             limits=autostart_limits(config.limits))

    def _resume_replays(self, specs) -> None:
        """Start each CSV replay where the autostart queries reading it had got to by their
        checkpoints (the earliest of them), rather than at the top of the file."""
        positions: dict[str, int] = {}
        for spec in specs:
            key = checkpoint_key(spec.bundle, spec.version, spec.path, spec.index, spec.text)
            for name, readings in source_positions(self.checkpoints.snapshot(spec.name, key)).items():
                positions[name] = min(positions.get(name, readings), readings)
        for driver in self.drivers.drivers:
            position = positions.get(driver.name)
            if position and isinstance(driver, CsvReplayDriver):
                driver.resume_at(position)
                self.log.info("signal %s: replay resumes at reading %d (autostart checkpoints)", driver.name, position)

    def _autostart_changed(self, query) -> None:
        """From a query's thread: its status changed, so the federation hears it soon."""
        try:
            self.loop.call_soon_threadsafe(self.health_soon)
        except RuntimeError:  # the loop is closed: the daemon is gone
            pass

    def health_soon(self, delay: float = 0.1) -> None:
        """Send a health frame in `delay` seconds (changes within that time share one frame)."""
        if self._health_due or not self.started:
            return
        self._health_due = True
        self.loop.call_later(delay, lambda: self.spawn(self._send_health()))

    async def _send_health(self) -> None:
        self._health_due = False
        conn = self.link.connection if self.link is not None else None
        if conn is None:
            return
        try:
            await conn.send(wire.make("health", **self.health()))
        except (ConnectionError, RuntimeError, aiohttp.ClientError, wire.ProtocolError) as exc:
            self.log.debug("health not sent: %s", exc)

    def loaded_models(self, bundle: str | None = None) -> dict[str, str]:
        """Model name → version of the models the running engine has loaded (of one bundle)."""
        engine = self.engine
        if engine is None:
            return {}
        prefix = None if bundle is None else f"bundle {bundle} "
        return {e.name: e.version for e in engine.models.entries()
                if prefix is None or (e.origin or "").startswith(prefix)}

    def fit_capabilities(self) -> dict:
        """What deployability is checked against: configured RAM, flash and CPU, signal names, runtimes."""
        caps = {k: v for k, v in (("ram_kb", self.config.capabilities.ram_kb),
                                   ("flash_kb", self.config.capabilities.flash_kb),
                                   ("cpu", self.config.capabilities.cpu)) if v is not None}
        caps["signals"] = sorted(self.drivers.signals)
        caps["runtimes"] = self._runtimes()
        return caps

    @staticmethod
    def _runtimes() -> dict[str, str]:
        runtimes = {"numpy": np.__version__}
        detected = detect_runtimes()
        for name in ("litert", "tflite_runtime"):
            if name in detected:
                runtimes["tflite"] = detected[name]
                break
        return runtimes

    def _battery_reader(self):
        live = self.drivers.signals.get("battery")
        if live is None:
            return None

        def read():
            value = live.latest()
            return None if value is None else {"percent": round(float(value), 2), "charging": None,
                                               "source": "signal"}
        return read

    # == the link's handler =====================================================================
    def hello(self) -> dict:
        capabilities = self.config.capabilities_dict(self.drivers.describe())
        capabilities["runtimes"] = {**capabilities.get("runtimes", {}), **self._runtimes()}
        capabilities["functions"] = self.engine.function_signatures() if self.engine is not None else []
        return {"edge": self.config.id, "software": SOFTWARE, "metadata": dict(self.config.metadata),
                "capabilities": capabilities, "models": self.deployments.active(),
                "restarts": self.monitor.restarts, "versions": list(wire.SUPPORTED_VERSIONS),
                "resume": self.buffer.resume_info(), "time": self.clock.now()}

    def health(self) -> dict:
        fields = self.monitor.sample()
        fields["errors"] = fields.get("errors", [])[-100:]
        fields["autostart"] = self.autostarts.describe()
        fields["models"] = self.deployments.active()
        fields["publish"] = self.publisher.stats()
        guard = self.guard_view()
        if guard is not None:
            fields["guard"] = guard
        fields["loaded"] = self.loaded_models()
        return fields

    async def connected(self, conn: Connection, welcome: wire.Frame) -> None:
        self.publisher.connected(welcome["publish_acked"])
        limits = self.config.limits
        self.fragments = FragmentSet(self.loop, send_frame=conn.send, send_bytes=conn.send_bytes,
                                     engine=lambda: self.engine,
                                     default_limits=Limits(limits.rows, limits.seconds, limits.memory_mb),
                                     max_running=self.max_fragments,
                                     max_per_principal=limits.max_queries_per_principal,
                                     one_shot_reserve=limits.one_shot_reserve,
                                     compile_lock=self._compile_lock, log=self.log, max_frame=welcome.get("max_frame"),
                                     refuse=self.quarantine.refuse, running_log=self.running_log)
        self.publisher.max_frame = welcome.get("max_frame") or wire.MAX_FRAME_BYTES
        self._send_task = self.spawn(self._publish(conn))

    def over_quota(self, seq: int, hold: int, retry_after_s: float, message: str) -> None:
        """The federation refused a published record over this device's quota: slow down, keep it."""
        self.publisher.over_quota(seq, hold, retry_after_s, message)

    async def _publish(self, conn: Connection) -> None:
        try:
            await self.publisher.send_loop(conn.send_bytes)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            self.log.debug("publishing stopped: %s", exc)

    async def disconnected(self, conn: Connection) -> None:
        if self.fragments is not None:
            self.fragments.drop_all()
            self.fragments = None
        if self._send_task is not None:
            self._send_task.cancel()
            self._send_task = None
        self.publisher.disconnected()

    async def handle(self, conn: Connection, frame: wire.Frame) -> None:
        t = frame.t
        if t == "query":
            try:
                self.fragments.start(frame.fields)
            except DuplicateQuery:
                await conn.send(wire.error_frame("duplicate_query", f"query {frame['qid']} is already running",
                                                 ref=frame["qid"]))
        elif t == "credit":
            self.fragments.credit(frame["qid"], frame["add"])
        elif t == "cancel":
            self.fragments.cancel(frame["qid"], frame.get("reason") or "cancelled")
        elif t in ("deploy", "rollback", "undeploy"):
            self.spawn(self._deployment(frame))
        elif t == "publish_ack":
            self.publisher.acked(frame["upto"], frame.get("log"))

    async def _deployment(self, frame: wire.Frame) -> None:
        async with self._deploy_lock:
            try:
                if frame.t == "deploy":
                    change = await asyncio.to_thread(self.deployments.receive_chunk, frame.fields)
                elif frame.t == "rollback":
                    change = await asyncio.to_thread(self.deployments.rollback, frame["did"], frame["model"],
                                                     frame.get("version"))
                else:
                    change = await asyncio.to_thread(self.deployments.undeploy, frame["did"], frame["model"])
            except Exception as exc:  # noqa: BLE001 - a deployment bug is a nack, never a dead daemon
                self.log.exception("deployment %s failed", frame["did"])
                change = self.deployments._nack(frame["did"], frame["model"], "install",
                                                f"internal error: {type(exc).__name__}: {exc}")
            if change is None:
                return
            if change.engine is not None:
                await self._swap(change.engine, change.autostart)
                self.log.info("%s %s: active %s", frame.t, frame["did"], change.fields["active"])
            if change.frame == "ack":   # what the federation then waits to see healthy
                model = frame["model"]
                change.fields["autostart"] = [q.spec.name for q in self.autostarts.queries if q.spec.bundle == model]
                change.fields["loaded"] = self.loaded_models(model)
        conn = self.link.connection if self.link is not None else None
        if conn is None:
            return      # the federation resends the deployment after reconnecting; did makes it idempotent
        try:
            fields = dict(change.fields)
            if change.frame == "ack":
                fields["functions"] = self.engine.function_signatures()   # what fleet statements may call here
            await conn.send(wire.make(change.frame, **fields))
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            self.log.info("%s of %s not sent (%s); the federation will resend", change.frame, frame["did"], exc)
            return
        if change.frame == "ack":
            self.health_soon(0.0)

    # == conveniences ===========================================================================
    def status(self) -> dict:
        return {"id": self.config.id, "connected": bool(self.link and self.link.connected.is_set()),
                "models": self.deployments.active(), "buffer": self.buffer.stats(),
                "autostart": self.autostarts.describe(),
                "fragments": self.fragments.qids() if self.fragments else []}


async def run_daemon(config: EdgeConfig, *, stop: asyncio.Event | None = None, **options: Any) -> int:
    """Run one daemon until SIGINT/SIGTERM (or, when given, until `stop` is set); the exit code."""
    if stop is None:  # run as the command: SIGTERM/SIGINT stop it, within 10 s whatever happens
        stop = asyncio.Event()
        install_stop_handlers(asyncio.get_running_loop(), stop)
    daemon = EdgeDaemon(config, **options)
    await daemon.start()
    daemon.log.info("edge %s running (store %s, %d signals, federation %s)", config.id, config.store,
                    len(daemon.drivers.signals),
                    f"over NATS {','.join(config.nats)}" if config.nats else config.federation or "none")
    try:
        await stop.wait()
    finally:
        try:  # a query thread that does not stop must not hold the process (the buffer is crash-safe)
            await asyncio.wait_for(daemon.stop(), STOP_DEADLINE_S)
        except asyncio.TimeoutError:
            daemon.log.warning("the daemon did not stop within %.0f s; leaving the rest", STOP_DEADLINE_S)
    return 0


def autostart_limits(limits) -> dict:
    """An autostart query runs under the edge's statement memory budget (`limits.memory_mb`), like
    every fragment; `limits.seconds` and `limits.rows` bound a fleet query's fragment, not a query
    that runs for as long as the device does (its rows are bounded by the publish quota)."""
    return {"memory_mb": limits.memory_mb} if limits.memory_mb is not None else {}

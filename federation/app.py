"""The federation's aiohttp application: `create_app(config)` wires resources, middlewares, routes.

Tests use the same factory through pytest-aiohttp's `aiohttp_client` fixture.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, web

from federation.auth import bootstrap_admin
from federation.config import FederationConfig
from federation.fleet_table import FleetTable
from federation.heartbeats import HeartbeatBuffer
from federation.index import SelectionIndex
from federation.keys import (
    BOOTSTRAP_TOKEN,
    CONFIG,
    DEPLOYMENTS,
    FLEET,
    HEARTBEATS,
    HUB,
    INDEX,
    METRICS,
    QUERY_SERVICE,
    REGISTRY,
    SESSIONS,
    WEBSOCKETS,
)
from federation.limits import limits_middleware, setup_limits
from federation.metrics import FederationMetrics
from federation.middlewares import auth_middleware, error_middleware
from federation.registry_interface import open_registry
from federation.statements import create_query_service
from federation.routes import setup_routes
from federation.sessions import Sessions

log = logging.getLogger("streamql.federation")


def create_app(config: FederationConfig) -> web.Application:
    # bodies past client_max_size are refused by aiohttp itself (413, made JSON by error_middleware)
    app = web.Application(middlewares=[error_middleware, auth_middleware, limits_middleware],
                          client_max_size=config.max_request_bytes)
    app[CONFIG] = config
    app[METRICS] = FederationMetrics()
    app[INDEX] = SelectionIndex()
    app[FLEET] = FleetTable()
    app[WEBSOCKETS] = weakref.WeakSet()
    app[SESSIONS] = Sessions()
    setup_limits(app)
    # resources in dependency order; each is torn down before what it depends on
    app.cleanup_ctx.append(timed(registry_ctx))
    app.cleanup_ctx.append(timed(sessions_ctx))  # revocations by other processes: needs the registry
    app.cleanup_ctx.append(timed(heartbeat_ctx))  # after the registry: flushed before it closes
    app.cleanup_ctx.append(timed(nats_auth_ctx))  # a secured NATS: before the hub, which edges reach through it
    app.cleanup_ctx.append(timed(hub_ctx))  # edges: needs the registry and the heartbeats
    app.cleanup_ctx.append(timed(deployments_ctx))  # rollouts: need the hub
    app.cleanup_ctx.append(timed(query_service_ctx))  # fleet queries: need all of the above
    app.on_shutdown.append(close_edges)
    app.on_shutdown.append(close_websockets)
    app.on_shutdown.append(stop_statements)
    setup_routes(app)
    return app


SLOW_TEARDOWN_S = 1.0


def timed(ctx):
    """A cleanup context whose teardown says how long it took when that was long: a stop at 10,000
    NATS edges spent 4.4 s in "resources closed" and the log could not say in which."""
    async def wrapper(app: web.Application) -> AsyncIterator[None]:
        inner = ctx(app)
        await inner.__anext__()
        yield
        began = time.monotonic()
        try:
            await inner.__anext__()
        except StopAsyncIteration:
            pass
        finally:
            took = time.monotonic() - began
            (log.warning if took >= SLOW_TEARDOWN_S else log.info)("closing %s took %.2f s", ctx.__name__, took)
    wrapper.__name__ = wrapper.__qualname__ = ctx.__name__
    return wrapper


async def registry_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the registry, index every device, create the first admin token; close at the end."""
    config = app[CONFIG]
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    registry = open_registry(config.registry_location, bundle_dir=config.bundle_dir)
    index = app[INDEX]
    registry.mark_all_offline()  # no edge is connected before we accept connections
    devices = list(registry.iter_devices())   # read once for both (100,000 devices: seconds)
    registry.add_listener(index, devices)
    fleet = app[FLEET]
    registry.add_listener(fleet, devices)
    del devices
    fleet.load_models(registry.model_versions())
    index.before_select = registry.poll_external_changes  # devices provisioned by another process
    app[REGISTRY] = registry
    if config.bootstrap_admin:
        token = bootstrap_admin(registry, config.data_dir)
        if token is not None:
            app[BOOTSTRAP_TOKEN] = token
            if config.announce:
                print(f"StreamQL federation: first start; admin token (also in {config.data_dir / 'admin.token'}):\n"
                      f"  {token}", flush=True)
    metrics = app[METRICS]
    metrics.watch_fleet(edges_registered=lambda: len(index), edges_online=index.online_count,
                        deployments=registry.deployment_counts, targets=registry.target_counts)
    if registry.shared:   # other nodes change it: follow them as soon as the database says so
        follow_other_nodes(app, registry)
    try:
        yield
    finally:
        registry.watch(None)
        index.before_select = None
        registry.remove_listener(index)
        registry.remove_listener(fleet)
        registry.close()


def follow_other_nodes(app: web.Application, registry) -> None:
    """The shared registry's watcher thread wakes us: devices another node changed reach the index
    and the fleet table, a token revoked elsewhere closes what it holds here, a deployment whose
    node died is taken over."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task] = set()

    def spawn(coro) -> None:
        task = loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def changed(what: str) -> None:
        try:
            if what == "devices":
                registry.poll_external_changes()
            elif what == "tokens":
                spawn(app[SESSIONS].sweep(registry.revoked_among))
            elif what == "deployments" and DEPLOYMENTS in app:
                spawn(app[DEPLOYMENTS].take_over())
        except Exception:   # the database may be away; the next wake-up tries again
            log.exception("following another node's change (%s) failed", what)

    registry.watch(lambda what: loop.call_soon_threadsafe(changed, what))


async def heartbeat_ctx(app: web.Application) -> AsyncIterator[None]:
    """Flush buffered heartbeats every second, and a last time before the registry closes."""
    buffer = HeartbeatBuffer(app[REGISTRY])
    app[HEARTBEATS] = buffer
    task = asyncio.create_task(buffer.run(), name="heartbeat-flush")
    try:
        yield
    finally:
        await buffer.stop(task)


async def sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    """Every couple of seconds, close what tokens revoked by another process still hold open."""
    task = asyncio.create_task(app[SESSIONS].run_sweeps(app[REGISTRY].revoked_among), name="revocation-sweep")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


CLOSE_ALL_TIMEOUT_S = 1.5


async def close_edges(app: web.Application) -> None:
    """First: the edges (10,000 of them at once, bounded; federation/hub.py `shutdown`)."""
    hub = app.get(HUB)
    if hub is not None:
        await hub.shutdown(CLOSE_ALL_TIMEOUT_S)


async def close_websockets(app: web.Application) -> None:
    """Every open WebSocket told GOING_AWAY at once (a peer that never answers the close frame
    cannot hold up shutdown: each close waits at most CLOSE_ALL_TIMEOUT_S)."""
    async def close(ws) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown"),
                                   CLOSE_ALL_TIMEOUT_S)

    await asyncio.gather(*(close(ws) for ws in list(app[WEBSOCKETS])))


async def nats_auth_ctx(app: web.Application) -> AsyncIterator[None]:
    """On a secured NATS, this node answers the auth callout (federation/nats_auth.py)."""
    if not app[CONFIG].nats:
        yield
        return
    from federation.nats_auth import auth_service_ctx   # the `nats` extra: imported only with --nats
    async for _ in auth_service_ctx(app):
        yield


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    """The edge hub and its published-records log; closed (edges told we go away) at the end."""
    from federation.hub import EdgeHub

    config = app[CONFIG]
    if config.nats:   # edges on NATS (federation/nats_hub.py); WebSocket edges still welcome
        from federation.nats_hub import NatsHub

        hub = NatsHub(app[REGISTRY], config, heartbeats=app[HEARTBEATS], metrics=app[METRICS])
    else:
        hub = EdgeHub(app[REGISTRY], config, heartbeats=app[HEARTBEATS], metrics=app[METRICS])
    app[HUB] = hub
    await hub.start()
    try:
        yield
    finally:
        await hub.close()


async def deployments_ctx(app: web.Application) -> AsyncIterator[None]:
    """The deployer: hears the hub's connects, acks and health; resumes what a previous run left running."""
    from federation.deployments import DeploymentManager
    from federation.rollout import RolloutDefaults

    config = app[CONFIG]
    defaults = RolloutDefaults(config.deploy_waves, config.deploy_first_wave_percent,
                               config.deploy_failure_threshold, config.deploy_wave_timeout_s)
    manager = DeploymentManager(app[REGISTRY], app[HUB], ack_timeout=config.deploy_ack_timeout_s, defaults=defaults,
                                settle_s=config.deploy_settle_s, concurrency=config.deploy_concurrency,
                                in_flight=config.deploy_window, metrics=app[METRICS])
    app[DEPLOYMENTS] = manager
    app[HUB].add_observer(manager)
    resumed = await manager.resume()
    if resumed:
        log.info("resumed %d deployments", resumed)
    takeover = None
    if app[REGISTRY].shared:   # a node that drove a rollout died: one of the others takes it over
        takeover = asyncio.create_task(_take_over_every(manager, TAKEOVER_EVERY_S), name="rollout-takeover")
    try:
        yield
    finally:
        if takeover is not None:
            takeover.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await takeover
        app[HUB].remove_observer(manager)
        await manager.close()


TAKEOVER_EVERY_S = 2.0


async def _take_over_every(manager, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await manager.take_over()
        except Exception:   # the database may be away for a moment
            log.exception("rollout takeover check failed")


async def stop_statements(app: web.Application) -> None:
    """Shutting down: running statements stop, so their requests end instead of holding it up."""
    stop = getattr(app.get(QUERY_SERVICE), "stop_all", None)
    if stop is not None:
        stop()


async def query_service_ctx(app: web.Application) -> AsyncIterator[None]:
    """The statement service (federation/statements.py), unless one was set beforehand."""
    made = None
    if QUERY_SERVICE not in app:
        made = app[QUERY_SERVICE] = create_query_service(app)
    restore = getattr(app.get(QUERY_SERVICE), "restore", None)
    if restore is not None:
        await restore()
    # the parser is built once per process (a quarter of a second): now, off the loop, rather
    # than inside the first statement a client sends
    warming = asyncio.get_running_loop().run_in_executor(None, _warm_parser)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await warming
        if made is not None:
            await made.aclose()


def _warm_parser() -> None:
    from streamql.syntax import parse

    parse("select 1;")

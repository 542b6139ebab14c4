"""Serving the federation as a process: the HTTP timeouts, and a shutdown that always ends.

    serve(config, ssl_context)            # until SIGTERM or SIGINT; the exit code

- **Timeouts** (`runner_options`): a connection that has not sent a complete request head within
  `idle_timeout_s` of connecting or of its previous answer is closed — idle keep-alive and
  slowloris headers alike (aiohttp's keep-alive timer runs from the connection's start); bodies
  are bounded by `body_timeout_s` where handlers read them (federation/http.py).
- **Shutdown**: on SIGTERM or SIGINT the listening sockets close, every WebSocket is told
  GOING_AWAY (at once, each close bounded), running statements stop and those waiting for a
  worker are answered 503, requests in flight get `shutdown_timeout_s / 4` to finish and are then
  cancelled, and the resources are closed — all within `shutdown_timeout_s` (left behind past
  it). A shutdown longer than a quarter of that logs how long each step took.
  A watchdog thread started with the signal ends the process `HARD_EXIT_S` after it whatever
  still runs (a worker thread inside a statement, a peer that never answers), so a supervisor's
  SIGTERM is always obeyed within 10 s.
- **The event loop first**: the interpreter switches threads every millisecond (not every 5), so
  the event loop gets the lock back quickly from statements computing in worker threads (with
  eight busy workers, 7× more loop round trips a second in bench measurements).
"""
from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from aiohttp import web

from federation.app import create_app
from federation.config import FederationConfig
from federation.http import RedactingAccessLogger
from federation.loop_watch import watch_stalls
from streamql import process_limits
from streamql.gc_pauses import GcPauses

log = logging.getLogger("streamql.federation")

HARD_EXIT_S = 9.0      # past it the process ends with code 1; a second before a supervisor's 10 s
SWITCH_INTERVAL_S = 0.001   # the interpreter's thread switch interval (CPython's default: 5 ms)
LINGER_S = 2.0


def runner_options(config: FederationConfig) -> dict[str, Any]:
    """What web.AppRunner (and aiohttp's TestServer) take for the HTTP timeouts of `config`."""
    # lingering: after an answer that left a body unread (a 408, a 413), read and drop the rest
    # for at most LINGER_S before closing, so a slow body cannot keep the connection either
    # requests in flight get a quarter of the shutdown (statements are stopped first, so they end
    # at once; what is still waiting after that — an upload's body, a parse — is cancelled)
    return {"keepalive_timeout": config.idle_timeout_s, "shutdown_timeout": config.shutdown_timeout_s / 4,
            "lingering_time": LINGER_S, "access_log_class": RedactingAccessLogger}


def raise_open_file_limit() -> int:
    """The open-file limit raised for the edges' sockets; a warning when it stays low. The soft limit."""
    soft, _ = process_limits.raise_open_file_limit(log)
    if soft < 4096:
        log.warning("the open-file limit is %d: at most about that many edges can connect", soft)
    return soft


def start_hard_exit_watchdog(seconds: float = HARD_EXIT_S, code: int = 1) -> threading.Timer:
    """A daemon timer that ends the process after `seconds`, with every thread's stack in the log."""
    return process_limits.hard_exit_after(seconds, code, log, dump_threads=True)


def _install_stop_handlers(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT set `stop` and start the hard-exit watchdog. Plain signal handlers, not the
    loop's: the watchdog starts even when the event loop is blocked."""
    fired = threading.Event()

    def handler(signum, frame) -> None:
        if not fired.is_set():
            fired.set()
            start_hard_exit_watchdog()
            # and a backstop that needs no interpreter lock: should the watchdog thread not get
            # it in time (threads busy inside long calls), faulthandler's own thread prints where
            # every thread is and ends the process
            faulthandler.dump_traceback_later(HARD_EXIT_S + 0.3, exit=True)
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:  # the loop is closed already
            pass

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


async def _serve(config: FederationConfig, ssl_context, announce) -> int:
    stop = asyncio.Event()
    _install_stop_handlers(asyncio.get_running_loop(), stop)
    app = create_app(config)
    phases = ShutdownPhases(app)
    runner = web.AppRunner(app, **runner_options(config))
    await runner.setup()
    pauses = GcPauses(asyncio.get_running_loop(), freeze=True).install()
    stalls = asyncio.ensure_future(watch_stalls())
    try:
        site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_context)
        await site.start()
        announce()
        await stop.wait()
        log.info("stopping (at most %.0f s)", config.shutdown_timeout_s)
    finally:
        stalls.cancel()
        pauses.remove()
        phases.mark("signal")
        # not asyncio.wait_for: on its timeout it cancels the cleanup and then *waits* for the
        # cancellation to finish, which a handler that catches it (or a busy loop) stretches past
        # the watchdog; here the rest is simply left behind and the process ends
        cleanup = asyncio.ensure_future(runner.cleanup())
        done, _ = await asyncio.wait({cleanup}, timeout=config.shutdown_timeout_s)
        phases.mark("end")
        phases.report(config.shutdown_timeout_s / 4)
        if cleanup not in done or cleanup.cancelled() or cleanup.exception() is not None:
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
            log.warning("shutdown took longer than %.0f s or failed; leaving the rest (%s)",
                        config.shutdown_timeout_s, "; ".join(_where(t) for t in pending[:8]) or "nothing pending")
            return 1
    return 0


class ShutdownPhases:
    """When each step of a shutdown ended, logged when the whole took long: what waited."""

    def __init__(self, app: web.Application):
        self.times: list[tuple[str, float]] = []

        def marker(name: str):
            async def mark(_app) -> None:
                self.mark(name)
            return mark
        app.on_shutdown.insert(0, marker("listening stopped"))
        app.on_shutdown.append(marker("websockets closed and statements stopped"))
        app.on_cleanup.insert(0, marker("requests in flight ended"))
        app.on_cleanup.append(marker("resources closed"))

    def mark(self, name: str) -> None:
        self.times.append((name, time.monotonic()))

    def report(self, slow_s: float) -> None:
        if len(self.times) < 2:
            return
        total = self.times[-1][1] - self.times[0][1]
        steps = ", ".join(f"{name} +{t - previous:.2f} s" for (name, t), (_, previous)
                          in zip(self.times[1:], self.times))
        (log.warning if total > slow_s else log.info)("shutdown in %.2f s: %s", total, steps)


def _where(task: asyncio.Task) -> str:
    """Where a task waits, for the log of a slow shutdown."""
    frames = task.get_stack(limit=1)
    where = f" at {frames[0].f_code.co_filename.rsplit('/', 2)[-1]}:{frames[0].f_lineno}" if frames else ""
    return f"{task.get_coro().__qualname__}{where}"


def serve(config: FederationConfig, ssl_context=None, announce=lambda: None) -> int:
    """Serve until SIGTERM or SIGINT (see the module docstring); ends the process with its code."""
    # statements compute in worker threads: hand the interpreter lock back to the event loop
    # within 1 ms, not 5, or every read and write of the loop may wait for a busy worker
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    raise_open_file_limit()
    loop = asyncio.new_event_loop()
    code = 1
    try:
        code = loop.run_until_complete(_serve(config, ssl_context, announce))
    except BaseException as exc:   # noqa: BLE001 - said before the hard exit below, which would hide it
        if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            log.critical("the federation failed: %s", exc, exc_info=None if isinstance(exc, OSError) else exc)
            print(f"streamql federation: {type(exc).__name__}: {exc}", file=sys.stderr)
        elif isinstance(exc, SystemExit) and isinstance(exc.code, int):
            code = exc.code
    finally:
        # not asyncio.run: it would wait for executor threads (a statement still inside a worker)
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)

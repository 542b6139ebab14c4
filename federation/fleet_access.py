"""The federation as the engine sees it: `streamql.fleet.FleetAccess` over the registry, the
selection index and the edge hub (either carrier: federation/transport.py).

Fleet statements run in worker threads; the registry, the index and the hub belong to the event
loop. Every call here hops to the loop (and waits for it), so the engine never touches SQLite or
the hub from another thread. Fragments run as tasks on the loop (`hub.fragment`), and their rows
cross to the worker through a bounded buffer: when the worker falls behind, the tasks stop
reading, the hub stops granting credit and the edges pause — nothing piles up in memory.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import threading
from typing import Any, Callable

from streamql.fleet import DeviceInfo, EdgeProfile, FragmentEvent, FragmentRequest
from streamql.selection import Predicate

from federation.hub import EdgeOffline, FragmentError
from federation.transport import EdgeTransport

CALL_TIMEOUT_S = 30.0
BUFFERED_BATCHES = 64       # row batches waiting for the worker, across all of a statement's edges
CREDIT_ROWS = 10_000
# a standing stream's fragments start with less, and their window then follows what the reader
# takes (hub.fragment's follow_s, Grants): they run until the client leaves, and one nobody reads
# should pause within seconds on each edge, not stream 10,000 rows per edge into the hub's queues
# first — nor 512 (51 s of a 10 Hz signal); a reader that keeps up doubles it at each grant
STREAM_CREDIT_ROWS = 64
STREAM_WINDOW_S = 2.0


class HubFleetAccess:
    def __init__(self, loop: asyncio.AbstractEventLoop, registry, index, hub: EdgeTransport, *,
                 credit: int = CREDIT_ROWS, stream_credit: int = STREAM_CREDIT_ROWS):
        self.loop = loop
        self.registry, self.index, self.hub = registry, index, hub
        self.credit = credit
        self.stream_credit = min(credit, stream_credit)
        self._profiles: dict[str, tuple] = {}    # device → (what its profile was made of, the profile)

    def _on_loop(self, fn: Callable[[], Any]) -> Any:
        """fn() run on the event loop; its result here (in a worker thread)."""
        if _running_loop() is self.loop:
            return fn()
        future: concurrent.futures.Future = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                future.set_exception(exc)
        self.loop.call_soon_threadsafe(call)
        return future.result(CALL_TIMEOUT_S)

    # ------------------------------------------------------------------------- FleetAccess
    def metadata_keys(self) -> list[str]:
        return self._on_loop(lambda: sorted(key[1] for key in self.index.keys() if key[0] == "meta"))

    def profiles(self) -> list[EdgeProfile]:
        def read():
            profiles = {self._profile(device, self.hub.announced(device)) for device in self.hub.announced_ids()}
            if len(self._profiles) > 2 * len(self.hub.announced_ids()) + 64:   # forgotten devices
                known = set(self.hub.announced_ids())
                for device in [d for d in self._profiles if d not in known]:
                    del self._profiles[device]
            return profiles
        return sorted((p for p in self._on_loop(read) if p is not None), key=repr)

    def _profile(self, device: str, announced: dict | None) -> EdgeProfile | None:
        """profile_of(announced), made again only when what it is made of changed (on the loop)."""
        made_of = _profile_parts(announced)
        kept = self._profiles.get(device)
        if kept is None or len(kept[0]) != len(made_of) or any(a is not b for a, b in zip(kept[0], made_of)):
            kept = self._profiles[device] = (made_of, profile_of(announced))
        return kept[1]

    def select(self, predicate: Predicate) -> list[str]:
        return self._on_loop(lambda: list(self.index.select(predicate)))

    def devices(self, ids: list[str]) -> dict[str, DeviceInfo]:
        def read():
            records = {d.id: d for d in self.registry.get_devices(list(ids))}
            models = self.registry.model_versions(list(ids))
            out = {}
            for device_id in ids:
                record = records.get(device_id)
                if record is None:
                    continue
                announced = self.hub.announced(device_id)
                out[device_id] = DeviceInfo(
                    device_id, dict(record.metadata), dict(record.capabilities), self.hub.is_online(device_id),
                    record.last_seen, dict(record.health or {}) or None,
                    {name: m.version for name, m in models.get(device_id, {}).items()}, self._profile(device_id, announced))
            return out
        return self._on_loop(read)

    def open_feed(self, *, watch: bool = False) -> "HubFeed":
        return HubFeed(self, watch)


def _profile_parts(announced: dict | None) -> tuple:
    """The objects profile_of reads. The hub replaces them (never changes them in place) when a
    hello or an ack changes what an edge has, so a profile is made again only when one of them is
    not the same object: every fleet statement asks for every edge's profile, and making 100 of
    them took a tenth of the event loop's time under the soak."""
    if not announced:
        return ()
    capabilities = announced.get("capabilities") or {}
    return (announced.get("signals"), announced.get("functions"), announced.get("models"),
            capabilities, capabilities.get("signals"), capabilities.get("functions"))


def profile_of(announced: dict | None) -> EdgeProfile | None:
    """What an edge's hello (kept current by its acks) says it has."""
    if not announced:
        return None
    capabilities = announced.get("capabilities") or {}
    functions = announced.get("functions") or capabilities.get("functions") or ()
    return EdgeProfile.of(announced.get("signals") or capabilities.get("signals") or (),
                          [f for f in functions if isinstance(f, str)], list((announced.get("models") or {}).keys()))


class HubFeed:
    """Fragments of one statement running on edges (see the module docstring)."""

    def __init__(self, access: HubFleetAccess, watch: bool):
        self.access = access
        self.hub = access.hub
        self.loop = access.loop
        self.watch = watch
        self._events: collections.deque = collections.deque()
        self._ready = threading.Condition()
        self._space = asyncio.Event()          # set while the buffer has room (loop side)
        self._tasks: dict[str, asyncio.Task] = {}
        self._closed = False
        self._full = False                     # the loop cleared _space (under _ready)
        self._calls: list = []                 # for the loop, in order (under _calls_lock)
        self._calls_lock = threading.Lock()
        self._later(self._open)

    def _later(self, fn: Callable, *args: Any) -> None:
        """fn(*args) on the loop, after the calls asked before it. The calls a worker makes in a
        row (a fragment started on each of 100 edges) wake the loop once, not once each: under
        the soak, waking it — a write to its self-pipe, the interpreter's lock given up and taken
        again — was most of what the statement threads did."""
        with self._calls_lock:
            self._calls.append((fn, args))
            if len(self._calls) > 1:
                return                         # already asked: the loop runs them all
        if _running_loop() is self.loop:
            self.loop.call_soon(self._run_calls)
        else:
            self.loop.call_soon_threadsafe(self._run_calls)

    def _run_calls(self) -> None:
        with self._calls_lock:
            calls, self._calls = self._calls, []
        for fn, args in calls:
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - as the loop does for a callback: logged, the rest run
                self.loop.call_exception_handler({"message": f"HubFeed call {fn.__name__} failed", "exception": exc})

    def _open(self) -> None:
        self._space.set()
        if self.watch:
            self.hub.add_observer(self)

    # ---------------------------------------------------------------- the worker's side
    def start(self, request: FragmentRequest) -> None:
        self._later(self._start, request)

    def next(self, timeout: float) -> FragmentEvent | None:
        with self._ready:
            if not self._events:
                self._ready.wait(timeout)
            if not self._events:
                return None
            event = self._events.popleft()
            space = self._full and len(self._events) < BUFFERED_BATCHES
            if space:
                self._full = False
        if space:     # only when the loop had stopped reading: not once per event taken
            self._later(self._make_space)
        return event

    def cancel(self, device: str) -> None:
        self._later(self._cancel, device)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._later(self._close)

    # ---------------------------------------------------------------- the loop's side
    def _put(self, event: FragmentEvent) -> None:
        with self._ready:
            self._events.append(event)
            if len(self._events) >= BUFFERED_BATCHES:
                self._space.clear()
                self._full = True
            self._ready.notify()

    def _make_space(self) -> None:
        with self._ready:
            if not self._full:     # (filled up again meanwhile: the next event taken asks again)
                self._space.set()

    def _start(self, request: FragmentRequest) -> None:
        if self._closed:
            return
        self._tasks[request.device] = asyncio.ensure_future(self._run(request))

    async def _run(self, request: FragmentRequest) -> None:
        device = request.device
        outcome, error = "ok", None
        try:
            standing = request.kind == "stream"
            stream = self.hub.fragment(device, request.source, limits=request.limits or None,
                                       credit=self.access.stream_credit if standing else self.access.credit,
                                       params=request.params or None, principal=request.principal,
                                       kind=request.kind, deadline_s=request.deadline_s,
                                       follow_s=STREAM_WINDOW_S if standing else None,
                                       most_credit=self.access.credit)
            try:
                async for batch in stream:
                    if batch.n:
                        await self._space.wait()
                        self._put(FragmentEvent(device, "rows", batch.n, list(batch.cols)))
            finally:
                with contextlib.suppress(Exception):
                    await stream.aclose()
        except EdgeOffline as exc:
            outcome = "dropped" if exc.dropped else "offline"
            error = {"message": exc.reason}
        except FragmentError as exc:
            outcome = exc.outcome
            error = exc.error or {"kind": "RuntimeError", "message": exc.outcome}
        except asyncio.CancelledError:
            return
        except Exception as exc:  # noqa: BLE001 - one device's failure ends only its fragment
            outcome, error = "error", {"kind": "RuntimeError", "message": f"{type(exc).__name__}: {exc}"}
        finally:
            self._tasks.pop(device, None)
        self._put(FragmentEvent(device, "end", outcome=outcome, error=error))

    def _cancel(self, device: str) -> None:
        task = self._tasks.pop(device, None)
        if task is not None:
            task.cancel()

    def _close(self) -> None:
        self._closed = True
        if self.watch:
            self.hub.remove_observer(self)
        for task in list(self._tasks.values()):
            task.cancel()
        self._tasks.clear()
        self._space.set()

    # hub observer (standing streams): a device said hello
    async def edge_connected(self, edge_id: str) -> None:
        if not self._closed:
            self._put(FragmentEvent(edge_id, "connected"))


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None

"""A fleet in one process, for tests and examples: each device is a local Engine.

    fleet = LocalFleet()
    fleet.add("wl-1", engine, {"region": "US", "kind": "wheel loader"})
    fleet.add("d-3", other, {"region": "EU"}, online=False)
    result = streamql.Engine().query("select id(e), signal_value('t')@e from Edge e;", fleet=fleet)

It implements `streamql.fleet.FleetAccess` the way a federation does: fragments run in threads on
the devices' engines with their parameters as session variables, rows come back as events, a
device can fail (`failing`), hang (`slow`), drop offline and connect again (`connect`).
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

from .batch import IDLE
from .errors import QueryCancelled, QueryError
from .fleet import DeviceInfo, EdgeProfile, FragmentEvent, FragmentRequest
from .selection import Predicate, device_lookup

BUSY_RETRY_S = 0.05     # what a busy device's refusal suggests (an edge says 0.5 s; tests wait less)


@dataclass
class LocalDevice:
    id: str
    engine: object
    metadata: dict
    capabilities: dict = field(default_factory=dict)
    online: bool = True
    models: dict = field(default_factory=dict)
    failing: str | None = None     # every fragment fails with this message
    slow: bool = False             # fragments never answer
    after_rows: str | None = None  # "drop": its link drops after it sent its rows; "stall": it never ends
    busy: int = 0                  # the next `busy` fragments are refused as an edge with every slot taken


class LocalFleet:
    def __init__(self):
        self.members: dict[str, LocalDevice] = {}
        self.sources: dict[str, list[str]] = {}    # what each device was sent, in order
        self.requests: list[FragmentRequest] = []
        self._feeds: list["LocalFeed"] = []
        self._lock = threading.Lock()

    def add(self, device_id: str, engine, metadata: dict | None = None, capabilities: dict | None = None, *,
            online: bool = True, models: dict | None = None, failing: str | None = None, slow: bool = False):
        self.members[device_id] = LocalDevice(device_id, engine, dict(metadata or {}), dict(capabilities or {}),
                                              online, dict(models or {}), failing, slow)
        return self.members[device_id]

    def connect(self, device_id: str) -> None:
        """The device comes (back) online: standing streams hear of it."""
        self.members[device_id].online = True
        for feed in list(self._feeds):
            if feed.watch:
                feed.events.put(FragmentEvent(device_id, "connected"))

    def disconnect(self, device_id: str) -> None:
        self.members[device_id].online = False
        for feed in list(self._feeds):
            feed.drop(device_id)

    # ------------------------------------------------------------------------- FleetAccess
    def metadata_keys(self) -> list[str]:
        return sorted({k for d in self.members.values() for k in d.metadata})

    def profile_of(self, device: LocalDevice) -> EdgeProfile:
        engine = device.engine
        types = getattr(engine, "_signal_types", {})
        signals = [{"name": n, "type": str(types[n]) if n in types else None} for n in engine.signals.names()]
        functions = [f.signature for fs in engine.store.functions.values() for f in fs
                     if not hasattr(f, "values")]
        models = engine.models.names()
        return EdgeProfile.of(signals, functions, models)

    def profiles(self) -> list[EdgeProfile]:
        return sorted({self.profile_of(d) for d in self.members.values()}, key=repr)

    def select(self, predicate: Predicate) -> list[str]:
        return [d.id for d in self.members.values()
                if predicate.matches(device_lookup(d.id, d.metadata, d.capabilities, d.online))]

    def devices(self, ids: list[str]) -> dict[str, DeviceInfo]:
        out = {}
        for device_id in ids:
            d = self.members.get(device_id)
            if d is not None:
                out[device_id] = DeviceInfo(d.id, dict(d.metadata), dict(d.capabilities), d.online, time.time(),
                                            {"cpu": 1.0}, dict(d.models), self.profile_of(d))
        return out

    def open_feed(self, *, watch: bool = False) -> "LocalFeed":
        feed = LocalFeed(self, watch)
        with self._lock:
            self._feeds.append(feed)
        return feed


class LocalFeed:
    def __init__(self, fleet: LocalFleet, watch: bool):
        self.fleet = fleet
        self.watch = watch
        self.events: queue.Queue = queue.Queue(maxsize=256)
        self.running: dict[str, threading.Event] = {}

    def start(self, request: FragmentRequest) -> None:
        fleet = self.fleet
        fleet.sources.setdefault(request.device, []).append(request.source)
        fleet.requests.append(request)
        stop = threading.Event()
        self.running[request.device] = stop
        threading.Thread(target=self._run, args=(request, stop), daemon=True).start()

    def _run(self, request: FragmentRequest, stop: threading.Event) -> None:
        device = self.fleet.members[request.device]
        put = self._put
        if not device.online:
            put(FragmentEvent(device.id, "end", outcome="offline", error={"message": "not connected"}), stop)
            return
        if device.busy > 0:
            device.busy -= 1
            put(FragmentEvent(device.id, "end", outcome="error", error={
                "kind": "LimitError", "retry_s": BUSY_RETRY_S, "message": "this edge runs at most 1 queries at once"}),
                stop)
            return
        if device.failing is not None:
            put(FragmentEvent(device.id, "end", outcome="error",
                              error={"kind": "RuntimeError", "message": device.failing}), stop)
            return
        if device.slow:
            stop.wait()
            return
        engine = device.engine
        session = engine.store.session
        try:
            with _COMPILE:
                saved = {k: session.get(k) for k in request.params}
                session.update({k.lower(): v for k, v in request.params.items()})
                try:
                    result = engine.query(request.source)
                finally:
                    for key, value in saved.items():
                        if value is None:
                            session.pop(key.lower(), None)
                        else:
                            session[key.lower()] = value
            result.ctx.cancel = stop
            width = len(result.columns)
            for item in result.items():
                if stop.is_set():
                    return
                if item is IDLE:
                    continue
                if type(item) is dict:
                    put(FragmentEvent(device.id, "rows", 1, [[item[f"$c{i}"]] for i in range(width)]), stop)
                elif item.n:
                    put(FragmentEvent(device.id, "rows", item.n, [item[f"$c{i}"] for i in range(width)]), stop)
            if device.after_rows == "stall":
                stop.wait()
                return
            if device.after_rows == "drop":
                put(FragmentEvent(device.id, "end", outcome="dropped", error={"message": "its link dropped"}), stop)
                return
            put(FragmentEvent(device.id, "end", outcome="ok"), stop)
        except QueryCancelled:
            put(FragmentEvent(device.id, "end", outcome="cancelled"), stop)
        except QueryError as exc:
            put(FragmentEvent(device.id, "end", outcome="error", error=exc.to_dict()), stop)

    def _put(self, event: FragmentEvent, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.events.put(event, timeout=0.05)
                return
            except queue.Full:
                continue

    def next(self, timeout: float) -> FragmentEvent | None:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def cancel(self, device: str) -> None:
        stop = self.running.pop(device, None)
        if stop is not None:
            stop.set()

    def drop(self, device: str) -> None:
        if self.running.pop(device, None) is not None:
            self.events.put(FragmentEvent(device, "end", outcome="dropped", error={"message": "its link dropped"}))

    def close(self) -> None:
        for stop in self.running.values():
            stop.set()
        self.running.clear()
        with self.fleet._lock:
            if self in self.fleet._feeds:
                self.fleet._feeds.remove(self)


_COMPILE = threading.Lock()   # session parameters are the engine's: set them only while compiling

"""The fleet table: every device's listing row in memory, for the fleet views of `GET /v1/edges`.

The registry keeps it in sync as one of its listeners (devices added, changed, removed, online or
offline, model versions changed) and after each heartbeat flush (last seen, health, restarts), so
listing, filtering, sorting, paging and counting 10,000 devices never reads SQLite. Each change
stamps the row with the next value of a counter, the cursor: `changed_since(cursor)` tells a
page which of its rows to send again (`GET /v1/edges?since=…`).

Status is a partition of the fleet: `online`; `offline` (seen within `missing_after`); `missing`
(offline longer, or never seen). Attention reasons, each a pure function of the row:
`low battery` (under 20 %), `errors` (the latest health report lists some), `restarts` (3 or
more), `buffer drops` (the edge's buffer dropped records), `dropped link` (the edge reconnected).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from federation.records import Device, Heartbeat, ModelVersion

LOW_BATTERY = 20.0
RESTARTS = 3
MISSING_AFTER_MIN = 60.0
ATTENTION = ("low battery", "errors", "restarts", "buffer drops", "dropped link")
STATUSES = ("online", "offline", "missing")
MAX_SUMMARY_VALUES = 50   # a metadata key with more distinct values is summarized by its count only


def battery_of(health: dict) -> float | None:
    value = health.get("battery") if isinstance(health, dict) else None
    if isinstance(value, dict):
        value = value.get("percent")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def attention_of(device: Device) -> tuple[str, ...]:
    """Why a device needs an operator's look (module docstring), in the order of ATTENTION."""
    health = device.health or {}
    reasons = []
    battery = battery_of(health)
    if battery is not None and battery < LOW_BATTERY:
        reasons.append("low battery")
    if health.get("errors"):
        reasons.append("errors")
    if (device.restarts or 0) >= RESTARTS:
        reasons.append("restarts")
    buffer = health.get("buffer")
    if isinstance(buffer, dict) and (_number(buffer.get("dropped")) or 0) > 0:
        reasons.append("buffer drops")
    link = health.get("link")
    if isinstance(link, dict) and (_number(link.get("reconnects")) or 0) > 0:
        reasons.append("dropped link")
    return tuple(reasons)


def honest_health(device: Device) -> dict:
    """The health as last reported, except that an offline device's link is never 'connected'."""
    health = device.health or {}
    link = health.get("link")
    if device.online or not isinstance(link, dict) or not link.get("connected"):
        return health
    return {**health, "link": {**link, "connected": False}}


@dataclass(slots=True)
class FleetRow:
    device: Device
    models: dict[str, dict] = field(default_factory=dict)   # name → {version, previous_version, updated}
    changed: int = 0
    attention: tuple[str, ...] = ()
    _words: str | None = None

    def words(self) -> str:
        """What `q` searches, lower case: id, metadata keys and values, models and versions, signals."""
        if self._words is None:
            d = self.device
            parts = [d.id]
            for k, v in d.metadata.items():
                parts += [f"{k}={v}", str(v)]
            for name, mv in self.models.items():
                parts += [name, f"{name}@{mv['version']}"]
            parts += [str(s) for s in (d.capabilities.get("signals") or [])]
            if d.capabilities.get("cpu"):
                parts.append(str(d.capabilities["cpu"]))
            self._words = "\n".join(parts).lower()
        return self._words

    def status(self, now: float, missing_after_s: float) -> str:
        d = self.device
        if d.online:
            return "online"
        if d.last_seen is None or now - d.last_seen > missing_after_s:
            return "missing"
        return "offline"

    def full(self, now: float, missing_after_s: float) -> dict:
        out = self.device.to_dict()
        out["health"] = honest_health(self.device)
        out["models"] = self.models
        out["status"] = self.status(now, missing_after_s)
        out["attention"] = list(self.attention)
        return out

    def compact(self, now: float, missing_after_s: float) -> dict:
        """What a row of the devices page shows, and no more."""
        d = self.device
        health = d.health or {}
        link = health.get("link") if isinstance(health.get("link"), dict) else {}
        return {"id": d.id, "status": self.status(now, missing_after_s), "online": d.online,
                "last_seen": d.last_seen, "metadata": d.metadata, "restarts": d.restarts,
                "cpu_percent": _number(health.get("cpu_percent")), "memory_kb": _number(health.get("memory_kb")),
                "battery": battery_of(health), "uptime_s": _number(health.get("uptime_s")),
                "link": bool(d.online and link.get("connected")),
                "models": {name: mv["version"] for name, mv in self.models.items()},
                "attention": list(self.attention)}


def _sort_value(row: FleetRow, key: str) -> Any:
    d = row.device
    health = d.health or {}
    if key == "id":
        return d.id
    if key in ("online", "status"):
        return 0 if d.online else 1
    if key == "last_seen":
        return d.last_seen
    if key == "battery":
        return battery_of(health)
    if key == "cpu":
        return _number(health.get("cpu_percent"))
    if key == "memory":
        return _number(health.get("memory_kb"))
    if key == "uptime":
        return _number(health.get("uptime_s")) if d.online else None
    if key == "restarts":
        return d.restarts
    if key == "attention":
        return len(row.attention)
    if key.startswith("meta."):
        value = d.metadata.get(key[5:])
        return None if value is None else (0, value) if isinstance(value, (int, float)) else (1, str(value))
    raise KeyError(key)


SORT_KEYS = ("id", "status", "online", "last_seen", "battery", "cpu", "memory", "uptime", "restarts", "attention")


class FleetTable:
    """Every device's row (module docstring); a registry listener."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.rows: dict[str, FleetRow] = {}
        self.cursor = 0
        self.removed: dict[str, int] = {}   # id → cursor of its removal, for pages that showed it

    def _stamp(self) -> int:
        self.cursor += 1
        return self.cursor

    def _put(self, device: Device, models: dict | None = None) -> None:
        row = self.rows.get(device.id)
        if row is None:
            row = self.rows[device.id] = FleetRow(device, dict(models or {}))
            self.removed.pop(device.id, None)
        else:
            row.device = device
            if models is not None:
                row.models = dict(models)
            row._words = None
        row.attention = attention_of(row.device)
        row.changed = self._stamp()

    # --- the registry's listener ----------------------------------------------------------------
    def reset(self, devices: Iterable[Device], models: dict[str, dict[str, ModelVersion]] | None = None) -> None:
        kept = {i: r.models for i, r in self.rows.items()}
        self.rows = {}
        for device in devices:
            found = models.get(device.id) if models is not None else None
            self._put(device, {n: mv.to_dict() for n, mv in found.items()} if found is not None
                      else kept.get(device.id, {}))

    def device_changed(self, device: Device) -> None:
        before = self.rows.get(device.id)
        if before is not None and not device.health:   # a device made in memory carries no health yet
            device = dataclasses.replace(device, health=before.device.health)
        self._put(device)

    def load_models(self, models: dict[str, dict[str, ModelVersion]]) -> None:
        """Every device's model versions at once (at start, from the registry)."""
        for device_id, found in models.items():
            row = self.rows.get(device_id)
            if row is not None:
                self._put(row.device, {n: mv.to_dict() for n, mv in found.items()})

    def device_removed(self, device_id: str) -> None:
        if self.rows.pop(device_id, None) is not None:
            self.removed[device_id] = self._stamp()

    def online_changed(self, device_ids: Sequence[str], online: bool) -> None:
        now = self.clock()
        for device_id in device_ids:
            row = self.rows.get(device_id)
            if row is not None and row.device.online != online:
                self._put(dataclasses.replace(row.device, online=online,
                                              last_seen=now if online else row.device.last_seen))

    def models_changed(self, device_id: str, models: dict[str, ModelVersion]) -> None:
        row = self.rows.get(device_id)
        if row is not None:
            self._put(row.device, {n: mv.to_dict() for n, mv in models.items()})

    def heartbeats_recorded(self, beats: Iterable[Heartbeat]) -> None:
        for beat in beats:
            row = self.rows.get(beat.device_id)
            if row is None:
                continue
            d = row.device
            self._put(dataclasses.replace(
                d, last_seen=max(beat.at, d.last_seen or beat.at),
                health=beat.health if beat.health is not None else d.health,
                restarts=beat.restarts if beat.restarts is not None else d.restarts))

    # --- reading ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    def get(self, device_id: str) -> FleetRow | None:
        return self.rows.get(device_id)

    def select(self, rows: Iterable[FleetRow], *, ids: set[str] | None = None, words: Sequence[str] = (),
               status: str | None = None, missing_after_s: float = MISSING_AFTER_MIN * 60,
               model: str | None = None, version: str | None = None, battery_below: float | None = None,
               cpu_above: float | None = None, memory_above: float | None = None,
               attention: str | None = None) -> list[FleetRow]:
        now = self.clock()
        out = []
        for row in rows:
            d = row.device
            if ids is not None and d.id not in ids:
                continue
            if status is not None and row.status(now, missing_after_s) != status:
                continue
            if model is not None:
                mv = row.models.get(model)
                if mv is None or (version is not None and mv["version"] != version):
                    continue
            elif version is not None and all(mv["version"] != version for mv in row.models.values()):
                continue
            health = d.health or {}
            if battery_below is not None:
                b = battery_of(health)
                if b is None or not b < battery_below:
                    continue
            if cpu_above is not None:
                c = _number(health.get("cpu_percent"))
                if c is None or not c > cpu_above:
                    continue
            if memory_above is not None:
                m = _number(health.get("memory_kb"))
                if m is None or not m > memory_above:
                    continue
            if attention is not None and (attention not in row.attention if attention != "any" else not row.attention):
                continue
            if words:
                text = row.words()
                if not all(w in text for w in words):
                    continue
            out.append(row)
        return out

    @staticmethod
    def sort(rows: list[FleetRow], key: str) -> list[FleetRow]:
        """By `key` (`-key` descending), devices without a value last either way, then by id."""
        descending = key.startswith("-")
        name = key.lstrip("-+")
        rows = sorted(rows, key=lambda r: r.device.id)
        if name == "id":
            return rows[::-1] if descending else rows
        valued = [(v, r) for r in rows if (v := _sort_value(r, name)) is not None]
        missing = [r for r in rows if _sort_value(r, name) is None]
        valued.sort(key=lambda pair: pair[0], reverse=descending)   # stable: ties stay in id order
        return [r for _, r in valued] + missing

    def status_counts(self, missing_after_s: float = MISSING_AFTER_MIN * 60) -> dict[str, int]:
        """The whole fleet by status, and its total (for a page's header, whatever it filters)."""
        now = self.clock()
        counts = dict.fromkeys(STATUSES, 0)
        for row in self.rows.values():
            counts[row.status(now, missing_after_s)] += 1
        return {"total": len(self.rows), **counts}

    def summary(self, rows: Iterable[FleetRow], *, missing_after_s: float = MISSING_AFTER_MIN * 60) -> dict:
        """Counts by status, metadata key and value, model and version, attention reason."""
        now = self.clock()
        status = dict.fromkeys(STATUSES, 0)
        metadata: dict[str, dict[str, int]] = {}
        models: dict[str, dict[str, int]] = {}
        attention = dict.fromkeys(ATTENTION, 0)
        needing = total = 0
        for row in rows:
            total += 1
            status[row.status(now, missing_after_s)] += 1
            for k, v in row.device.metadata.items():
                if isinstance(v, (dict, list)):
                    continue
                counts = metadata.setdefault(k, {})
                text = v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
                counts[text] = counts.get(text, 0) + 1
            for name, mv in row.models.items():
                counts = models.setdefault(name, {})
                counts[mv["version"]] = counts.get(mv["version"], 0) + 1
            for reason in row.attention:
                attention[reason] += 1
            needing += bool(row.attention)
        meta_out = {k: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0])))
                    for k, v in sorted(metadata.items()) if len(v) <= MAX_SUMMARY_VALUES}
        return {"total": total, "status": status, "metadata": meta_out,
                "metadata_keys": {k: len(v) for k, v in sorted(metadata.items())},
                "models": {n: dict(sorted(v.items())) for n, v in sorted(models.items())},
                "attention": attention, "needing_attention": needing, "cursor": self.cursor}

"""The status of a fleet statement: every selected device's outcome, never silently missing.

Outcomes: `running` (its fragment is under way), `answered` (it ran to its end), `offline` (not
connected: reported at once, never waited for), `timed out`, `failed` (with the error, positioned
in the user's text), `skipped` (the statement cannot run there: the reason says why), `cancelled`
(the statement was stopped, or — `by_limit` — its limit was met before this device finished).

A result is complete when every selected device answered, or was cancelled because the limit was
met; anything else makes it incomplete, with the list of devices. A statement that needs only the
registry contacts no device and is complete.

The worker thread running the statement writes; the service (HTTP, WebSocket) reads, also while
rows stream: `changes(after)` gives what changed since a version, for standing streams.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

OUTCOMES = ("running", "answered", "offline", "timed out", "failed", "skipped", "cancelled")
LIMIT_MET = "the limit was met"
STOPPED_AT_LIMIT = "stopped at the limit"   # how a summary names devices cancelled by a met limit
FULL_DETAIL_UP_TO = 100      # devices listed one by one when no more are selected (else: the ones not answered)
_MAX_CHANGES = 10_000


@dataclass
class DeviceOutcome:
    outcome: str
    rows: int = 0
    reason: str | None = None
    error: dict | None = None
    by_limit: bool = False

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"outcome": self.outcome, "rows": self.rows, "reason": self.reason}
        if self.error is not None:
            out["error"] = dict(self.error)
        return out


@dataclass
class FleetStatus:
    devices: dict[str, DeviceOutcome] = field(default_factory=dict)
    registry_only: bool = False
    timings: dict[str, float] = field(default_factory=dict)   # where the time went: seconds by phase
    fan_out_ended: float | None = None                         # perf_counter when the last fragment ended
    _version: int = 0
    _changes: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ------------------------------------------------------------------------------ writing
    def set(self, device: str, outcome: str, reason: str | None = None, error: dict | None = None,
            by_limit: bool = False, news: bool = True) -> None:
        with self._lock:
            current = self.devices.get(device)
            first = current is None
            if first:
                current = self.devices[device] = DeviceOutcome(outcome)
            elif current.outcome == outcome and current.reason == reason:
                return
            current.outcome, current.reason, current.error, current.by_limit = outcome, reason, error, by_limit
            if news and not (first and outcome == "running"):   # a start is no news; a device joining is
                self._note(device, current)

    def add_rows(self, device: str, n: int) -> None:
        with self._lock:
            current = self.devices.get(device)
            if current is None:
                current = self.devices[device] = DeviceOutcome("running")
                self._note(device, current)
            current.rows += n

    def stop_running(self, by_limit: bool) -> None:
        """The statement stopped: devices still running were cancelled."""
        reason = LIMIT_MET if by_limit else "the statement was stopped"
        for device, outcome in list(self.devices.items()):
            if outcome.outcome == "running":   # the end of the statement, not news about a device
                self.set(device, "cancelled", reason, by_limit=by_limit, news=False)

    def _note(self, device: str, outcome: DeviceOutcome) -> None:
        self._version += 1
        self._changes.append((self._version, device, outcome.to_dict()))
        if len(self._changes) > _MAX_CHANGES:
            del self._changes[: len(self._changes) - _MAX_CHANGES]

    # ------------------------------------------------------------------------------ reading
    @property
    def version(self) -> int:
        return self._version

    def changes(self, after: int) -> tuple[list[dict], int]:
        """What changed since version `after`: [{device, outcome, rows, reason, error?}], and the
        version now."""
        with self._lock:
            out = [{"device": device, **state} for version, device, state in self._changes if version > after]
            return out, self._version

    def counts(self) -> dict[str, int]:
        with self._lock:
            out: dict[str, int] = {}
            for outcome in self.devices.values():
                out[outcome.outcome] = out.get(outcome.outcome, 0) + 1
            return out

    def incomplete(self) -> list[str]:
        """The selected devices that did not answer (those cancelled by a met limit excepted)."""
        with self._lock:
            return sorted(d for d, o in self.devices.items()
                          if o.outcome != "answered" and not (o.outcome == "cancelled" and o.by_limit))

    @property
    def complete(self) -> bool:
        return not self.incomplete()

    def first_failure(self) -> tuple[str, DeviceOutcome] | None:
        with self._lock:
            for device in sorted(self.devices):
                outcome = self.devices[device]
                if outcome.outcome == "failed":
                    return device, outcome
        return None

    def __getitem__(self, device: str) -> dict:
        return self.devices[device].to_dict()

    def __contains__(self, device: object) -> bool:
        return device in self.devices

    def __iter__(self):
        return iter(sorted(self.devices))

    def __len__(self) -> int:
        return len(self.devices)

    def summary(self) -> str:
        """`58 answered · 2 offline (wl-0031, dt-0005) · 0 failed`"""
        with self._lock:
            outcomes = {d: (STOPPED_AT_LIMIT if o.by_limit else o.outcome) for d, o in self.devices.items()}
            with_rows = sum(1 for o in self.devices.values() if o.by_limit and o.rows)
        return summarize(_count_names(outcomes), outcomes, self.registry_only, len(outcomes), with_rows)

    def to_dict(self, detail: bool | None = None) -> dict:
        """The status as it travels: counts, completeness, and the devices — every one when asked
        (`detail`) or when few are selected, otherwise the ones that did not answer."""
        counts = self.counts()
        incomplete = self.incomplete()
        with self._lock:
            selected = len(self.devices)
            full = detail if detail is not None else selected <= FULL_DETAIL_UP_TO
            listed = {d: o.to_dict() for d, o in sorted(self.devices.items())
                      if full or o.outcome != "answered"}
        out = {"complete": not incomplete, "selected": selected, "counts": counts,
               "incomplete": incomplete[:1000], "registry_only": self.registry_only, "devices": listed}
        if self.timings:
            out["timings_ms"] = {k: round(v * 1000, 3) for k, v in self.timings.items()}
        return out


def summarize(counts: dict[str, int], outcomes: dict[str, str], registry_only: bool = False,
              selected: int | None = None, stopped_with_rows: int = 0) -> str:
    """One line for people: counts by outcome, naming the devices that did not answer (and, for a
    met limit, how many of the stopped devices had sent rows)."""
    if registry_only:
        return f"{selected if selected is not None else len(outcomes)} selected · answered from the registry"
    parts = []
    for outcome in ("answered", "running", STOPPED_AT_LIMIT, "offline", "timed out", "failed", "skipped",
                    "cancelled"):
        n = counts.get(outcome, 0)
        if not n and (outcome not in ("answered", "failed") or (outcome == "answered" and counts.get(STOPPED_AT_LIMIT))):
            continue
        text = f"{n} {outcome}"
        names = sorted(d for d, o in outcomes.items() if o == outcome)
        if names and outcome not in ("answered", "running", STOPPED_AT_LIMIT):
            text += " (" + ", ".join(names[:5]) + (", …" if len(names) > 5 or n > len(names) else "") + ")"
        if outcome == STOPPED_AT_LIMIT and stopped_with_rows:
            text += f" ({stopped_with_rows} had sent rows)"
        parts.append(text)
    return " · ".join(parts)


class StatusReport(dict):
    """A fleet statement's status as it travels (`FleetStatus.to_dict`), read back by a client:
    device → {outcome, rows, reason, error?} for the devices listed, with the counts, whether the
    answer is complete, and the devices that did not answer."""

    def __init__(self, data: dict | None = None):
        data = data or {}
        devices = data.get("devices") if "devices" in data or "counts" in data else data
        super().__init__(devices or {})
        self.complete = bool(data.get("complete", True))
        self.selected = int(data.get("selected", len(self)))
        self.counts = dict(data.get("counts") or _count(self))
        self.incomplete = list(data.get("incomplete") or [])
        self.registry_only = bool(data.get("registry_only", False))

    def summary(self) -> str:
        outcomes = {d: (STOPPED_AT_LIMIT if (o or {}).get("outcome") == "cancelled" and (o or {}).get("reason") == LIMIT_MET
                        else (o or {}).get("outcome")) for d, o in self.items()}
        counts = dict(self.counts)
        stopped = sum(1 for o in outcomes.values() if o == STOPPED_AT_LIMIT)
        with_rows = 0
        if stopped and len(self) == self.selected:     # every device listed: the limit's share is known
            counts["cancelled"] = counts.get("cancelled", 0) - stopped
            counts[STOPPED_AT_LIMIT] = stopped
            with_rows = sum(1 for d, o in outcomes.items() if o == STOPPED_AT_LIMIT and (self[d] or {}).get("rows"))
        return summarize(counts, outcomes, self.registry_only, self.selected, with_rows)

    def to_dict(self) -> dict:
        return {"complete": self.complete, "selected": self.selected, "counts": dict(self.counts),
                "incomplete": list(self.incomplete), "registry_only": self.registry_only, "devices": dict(self)}


def _count(devices: dict) -> dict:
    out: dict[str, int] = {}
    for outcome in devices.values():
        name = (outcome or {}).get("outcome")
        if name:
            out[name] = out.get(name, 0) + 1
    return out


def _count_names(outcomes: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in outcomes.values():
        out[name] = out.get(name, 0) + 1
    return out

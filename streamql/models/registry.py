"""The store's models: named, versioned, hot-swapped atomically, with history for rollback.

A query fetches `registry.get(name)` once per batch and runs the whole batch on that entry's
model, so installing a new version swaps it for the *next* batch and no batch is ever computed by
two versions. Entries are frozen; a swap replaces the entry, it never changes a model in place.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from streamql.errors import ModelError

from .base import Model
from .loader import restore as restore_model

__all__ = ["ModelEntry", "ModelRegistry", "model_info"]

REGISTRY_FORMAT = 1


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One installed version of a named model."""

    name: str
    version: str
    model: Model = field(repr=False, compare=False)
    sha256: str
    installed_at: float  # seconds since the Unix epoch
    origin: str | None = None


def _iso(seconds: float) -> str:
    moment = _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def model_info(entry: ModelEntry) -> dict:
    """The record `model_info(name)` returns: name, version, installation and the model's info."""
    info = entry.model.info()
    head = {"name": entry.name, "version": entry.version, "installed_at": _iso(entry.installed_at),
            "origin": entry.origin}
    return {**head, **info}


class ModelRegistry:
    """Thread-safe map of model name (case-sensitive) → current entry, plus previous versions.

    `keep` is how many previous versions are kept per name for `rollback` (at least 1).
    `clock` returns seconds since the epoch (tests inject a fake one).
    """

    def __init__(self, keep: int = 3, clock: Callable[[], float] = time.time):
        self.keep = max(1, int(keep))
        self._clock = clock
        self._lock = threading.RLock()
        self._current: dict[str, ModelEntry] = {}
        self._previous: dict[str, list[ModelEntry]] = {}  # oldest first
        self._installs: dict[str, int] = {}
        self._revision = 0

    # --- reading (what queries do, once per batch) ---------------------------------------------
    def get(self, name: str) -> ModelEntry:
        entry = self._current.get(name)  # one dict read: atomic under the GIL
        if entry is None:
            raise ModelError(self._missing(name))
        return entry

    def find(self, name: str) -> ModelEntry | None:
        return self._current.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._current

    def __len__(self) -> int:
        return len(self._current)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._current)

    def entries(self) -> list[ModelEntry]:
        with self._lock:
            return [self._current[n] for n in sorted(self._current)]

    def history(self, name: str) -> list[ModelEntry]:
        """Every kept version of `name`, oldest first, the current one last."""
        with self._lock:
            if name not in self._current:
                raise ModelError(self._missing(name))
            return [*self._previous.get(name, []), self._current[name]]

    @property
    def revision(self) -> int:
        """Increases with every change (install, rollback, remove, load)."""
        return self._revision

    def _missing(self, name: str) -> str:
        close = [n for n in self._current if n.lower() == str(name).lower()]
        hint = f" (names are case-sensitive: did you mean '{close[0]}'?)" if close else ""
        return f"there is no model named '{name}'{hint}"

    # --- changing -----------------------------------------------------------------------------
    def install(self, name: str, model: Model, version: str | None = None,
                origin: str | None = None) -> ModelEntry:
        """Make `model` the current version of `name`; the one it replaces is kept for rollback.

        Without a version, installs are numbered '1', '2', … per name. Installing the version that
        is already current with the same sha256 changes nothing and returns the current entry.
        """
        if not isinstance(name, str) or not name:
            raise ModelError("a model needs a non-empty name")
        if not isinstance(model, Model):
            raise ModelError(f"model '{name}': cannot install a {type(model).__name__}")
        sha = model.sha256
        with self._lock:
            current = self._current.get(name)
            if version is None:
                version = self._next_version(name)
            version = str(version)
            if not version:
                raise ModelError(f"model '{name}': a version cannot be empty")
            if current is not None and current.version == version and current.sha256 == sha:
                return current
            model.name = name
            entry = ModelEntry(name, version, model, sha, float(self._clock()), origin)
            if current is not None:
                previous = self._previous.setdefault(name, [])
                previous.append(current)
                del previous[:-self.keep]
            self._installs[name] = self._installs.get(name, 0) + 1
            self._current[name] = entry  # the swap: one reference assignment
            self._revision += 1
            return entry

    def _next_version(self, name: str) -> str:
        taken = {e.version for e in self._previous.get(name, [])}
        if name in self._current:
            taken.add(self._current[name].version)
        n = self._installs.get(name, 0) + 1
        while str(n) in taken:
            n += 1
        return str(n)

    def rollback(self, name: str) -> ModelEntry:
        """Go back to the previous version of `name` (the current one is dropped)."""
        with self._lock:
            if name not in self._current:
                raise ModelError(self._missing(name))
            previous = self._previous.get(name)
            if not previous:
                raise ModelError(f"model '{name}' has no previous version to roll back to"
                                 f" (version {self._current[name].version} is the only one kept)")
            entry = previous.pop()
            entry.model.name = name
            self._current[name] = entry
            self._revision += 1
            return entry

    def remove(self, name: str) -> ModelEntry:
        """Drop `name` with its history; returns the entry that was current."""
        with self._lock:
            if name not in self._current:
                raise ModelError(self._missing(name))
            self._previous.pop(name, None)
            self._installs.pop(name, None)
            self._revision += 1
            return self._current.pop(name)

    # --- snapshots ------------------------------------------------------------------------------
    def dump(self) -> tuple[dict, dict[str, bytes]]:
        """(meta, payloads): JSON-able meta naming every kept entry, payloads keyed by sha256."""
        with self._lock:
            models = {}
            payloads: dict[str, bytes] = {}
            for name in sorted(self._current):
                rows = []
                for entry in [*self._previous.get(name, []), self._current[name]]:
                    model_meta, payload = entry.model.dump()
                    key = hashlib.sha256(payload).hexdigest()
                    payloads[key] = payload
                    rows.append({"version": entry.version, "sha256": entry.sha256,
                                 "installed_at": entry.installed_at, "origin": entry.origin,
                                 "model": model_meta, "payload": key})
                models[name] = rows
            meta = {"format": REGISTRY_FORMAT, "keep": self.keep, "models": models,
                    "installs": dict(sorted(self._installs.items()))}
            return meta, payloads

    @classmethod
    def restore(cls, meta: dict, payloads: dict[str, bytes], clock: Callable[[], float] = time.time,
                keep: int | None = None) -> "ModelRegistry":
        keep = keep or (int(meta.get("keep", 3)) if isinstance(meta, dict) else 3)
        registry = cls(keep=keep, clock=clock)
        registry.load(meta, payloads)
        return registry

    def load(self, meta: dict, payloads: dict[str, bytes]) -> None:
        """Replace the whole content with a snapshot from `dump()` (all or nothing)."""
        if not isinstance(meta, dict) or meta.get("format") != REGISTRY_FORMAT:
            raise ModelError("the saved model registry has an unknown format")
        current: dict[str, ModelEntry] = {}
        previous: dict[str, list[ModelEntry]] = {}
        try:
            for name, rows in meta["models"].items():
                entries = []
                for row in rows:
                    key = row["payload"]
                    if key not in payloads:
                        raise ModelError(f"the saved model registry lacks the data of '{name}' version {row['version']}")
                    model_meta = dict(row["model"], name=name)
                    # one object per entry: entries must never share a stateful model
                    model = restore_model(model_meta, payloads[key])
                    entries.append(ModelEntry(name, str(row["version"]), model, row["sha256"],
                                              float(row["installed_at"]), row.get("origin")))
                if entries:
                    current[name] = entries[-1]
                    previous[name] = entries[:-1]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ModelError(f"the saved model registry is damaged ({exc})") from None
        with self._lock:
            self._current = current
            self._previous = previous
            self._installs = {k: int(v) for k, v in meta.get("installs", {}).items()}
            self._revision += 1

"""What the registry stores, as frozen records with a JSON view (`to_dict`)."""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    metadata: dict = field(default_factory=dict)
    capabilities: dict = field(default_factory=dict)
    created: float = 0.0
    last_seen: float | None = None
    online: bool = False
    health: dict = field(default_factory=dict)
    restarts: int = 0

    def to_dict(self) -> dict:
        return {"id": self.id, "metadata": self.metadata, "capabilities": self.capabilities,
                "created": self.created, "last_seen": self.last_seen, "online": self.online,
                "health": self.health, "restarts": self.restarts}


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: int
    role: str
    device_id: str | None
    label: str
    created: float
    revoked: float | None

    def to_dict(self) -> dict:
        return {"id": self.id, "role": self.role, "device_id": self.device_id, "label": self.label,
                "created": self.created, "revoked": self.revoked}


@dataclass(frozen=True, slots=True)
class Bundle:
    name: str
    version: str
    sha256: str
    manifest: dict
    size: int
    path: str | None  # relative to the bundle directory; None when stored inline
    uploaded: float
    uploader: str

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "manifest": self.manifest,
                "size": self.size, "uploaded": self.uploaded, "uploader": self.uploader}


@dataclass(frozen=True, slots=True)
class Deployment:
    id: int
    action: str
    bundle: str
    version: str | None
    selection: str
    created: float
    updated: float
    state: str
    waves: dict
    failure_threshold: float
    created_by: str

    def to_dict(self) -> dict:
        return {"id": self.id, "action": self.action, "bundle": self.bundle, "version": self.version,
                "selection": self.selection, "created": self.created, "updated": self.updated,
                "state": self.state, "waves": self.waves, "failure_threshold": self.failure_threshold,
                "created_by": self.created_by}


@dataclass(frozen=True, slots=True)
class DeploymentTarget:
    deployment_id: int
    device_id: str
    state: str
    reason: str | None
    variant: str | None
    wave: int
    updated: float

    def to_dict(self) -> dict:
        return {"device_id": self.device_id, "state": self.state, "reason": self.reason,
                "variant": self.variant, "wave": self.wave, "updated": self.updated}


@dataclass(frozen=True, slots=True)
class ModelVersion:
    device_id: str
    model: str
    version: str
    previous_version: str | None
    updated: float

    def to_dict(self) -> dict:
        return {"version": self.version, "previous_version": self.previous_version, "updated": self.updated}


class NewTarget(NamedTuple):
    """A device a new deployment addresses, with its initial state."""

    device_id: str
    state: str = "pending"
    reason: str | None = None
    variant: str | None = None
    wave: int = 0


class Heartbeat(NamedTuple):
    device_id: str
    at: float
    health: dict | None = None
    restarts: int | None = None


class RegistryListener(Protocol):
    def device_changed(self, device: Device) -> None: ...
    def device_removed(self, device_id: str) -> None: ...
    def online_changed(self, device_ids: Sequence[str], online: bool) -> None: ...
    def reset(self, devices: Iterable[Device]) -> None: ...


def version_key(version: str | None) -> tuple:
    """Order versions as people do: '1.10.0' after '1.9.2'; numbers before text in each part."""
    parts = re.split(r"[.\-+_]", version or "")
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)

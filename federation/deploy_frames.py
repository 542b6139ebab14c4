"""What a deployment sends: its id as edges see it, and a bundle read once with its deploy frames
encoded once per variant choice (federation/deployments.py drives the rollout)."""
from __future__ import annotations

import hashlib
import math
from typing import Any

from federation.registry import Deployment
from streamql import models, wire

FIT_CACHE = 4096   # distinct capabilities remembered per bundle

__all__ = ["did_of", "deployment_number", "capabilities_for_fit", "OutgoingBundle", "variant_label"]


def did_of(deployment: Deployment) -> str:
    """The deployment id edges see: unique across registries, so a fresh federation reusing the
    number 1 is never taken by an edge for a deployment it already did."""
    return f"d{deployment.id}-{int(deployment.created * 1000):x}"


def deployment_number(did: str) -> int | None:
    head = did.split("-", 1)[0]
    return int(head[1:]) if head.startswith("d") and head[1:].isdigit() else None


def capabilities_for_fit(capabilities: dict) -> dict:
    """What `bundle_fit` reads: signals as names (an edge announces them as descriptions)."""
    out = dict(capabilities or {})
    if "signals" in out:
        out["signals"] = [s.get("name") if isinstance(s, dict) else s for s in out["signals"] or []]
    return out


class OutgoingBundle:
    """A bundle read once per deployment, with its deploy frames encoded once per variant choice."""

    def __init__(self, name: str, version: str, data: bytes):
        self.name, self.version, self.data = name, version, data
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.parsed = models.read_bundle(data)
        self._frames: dict[tuple[str, ...], list[bytes]] = {}
        self._fits: dict[str, models.BundleFit] = {}

    def fit(self, capabilities: dict) -> models.BundleFit:
        """How the bundle fits these capabilities; remembered per distinct capabilities (a fleet
        has a few kinds of devices: 10,000 of them are not planned one by one)."""
        wanted = capabilities_for_fit(capabilities)
        # only what the fit reads (a device's list of functions, say, is long and irrelevant)
        key = repr([(k, wanted[k]) for k in models.FIT_CAPABILITIES if k in wanted])
        found = self._fits.get(key)
        if found is None:
            found = models.bundle_fit(self.parsed, wanted)
            if len(self._fits) < FIT_CACHE:
                self._fits[key] = found
        return found

    def frames(self, did: str, variants: tuple[str, ...]) -> list[bytes]:
        found = self._frames.get(variants)
        if found is None:
            size, step = len(self.data), wire.DEPLOY_CHUNK_BYTES
            chunks = max(1, math.ceil(size / step))
            extra: dict[str, Any] = {"variants": list(variants)} if variants else {}
            if self.parsed.requirements:
                extra["requirements"] = self.parsed.requirements
            found = [wire.encode(wire.make("deploy", did=did, model=self.name, version=self.version,
                                           sha256=self.sha256, size=size, chunk=i, chunks=chunks,
                                           data=self.data[i * step:(i + 1) * step], **extra))
                     for i in range(chunks)]
            self._frames[variants] = found
        return found


def variant_label(fit: models.BundleFit) -> tuple[str | None, tuple[str, ...]]:
    chosen = {m: v for m, v in fit.variants().items() if v is not None}
    if not chosen:
        return None, ()
    label = next(iter(chosen.values())) if len(chosen) == 1 else ", ".join(f"{m}: {v}" for m, v in chosen.items())
    return label, tuple(chosen.values())

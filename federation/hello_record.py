"""What a device's hello changes in the registry: the metadata and capabilities it announces,
merged into the registered ones, and the models it says it runs.

`record_hello` does it where it is called: on the event loop with SQLite (a page read). On
PostgreSQL a NATS node does `find_and_record` in a worker thread (`NatsHub._hello`): a hello's
three round trips on the loop, in a connect storm of 10,000 edges, held a node's loop 6–7 s and
left hellos unanswered.
"""
from __future__ import annotations

import time
from typing import Any

from federation.hub_support import plain, signal_descriptions
from federation.records import Device
from federation.registry_interface import RegistryBackend
from streamql import wire


def announcement(edge: str, version: int, hello: wire.Frame) -> dict:
    """What the hub keeps of a hello (`EdgeHub.announced`)."""
    capabilities = dict(hello["capabilities"])
    return {
        "edge": edge, "software": hello["software"], "metadata": {k: plain(v) for k, v in hello["metadata"].items()},
        "capabilities": {k: plain(v) for k, v in capabilities.items()},
        "signals": signal_descriptions(capabilities), "models": dict(hello["models"]),
        "restarts": hello["restarts"], "version": version, "connected_at": time.time(),
    }


def record_hello(registry: RegistryBackend, device: Device, announced: dict) -> Device:
    """Announced metadata over the registered (keys that are names only), capabilities likewise
    (signals by name), and the models it runs; the device as now registered."""
    metadata = {**device.metadata, **{k: v for k, v in announced["metadata"].items() if good_key(k)}}
    capabilities = dict(device.capabilities)
    for key, value in announced["capabilities"].items():
        if key == "signals":
            capabilities["signals"] = [s["name"] for s in announced["signals"]]
        elif value is not None and good_key(key):
            capabilities[key] = value
    if metadata != device.metadata or capabilities != device.capabilities:
        device = registry.update_device(device.id, metadata=metadata if metadata != device.metadata else None,
                                        capabilities=capabilities if capabilities != device.capabilities else None)
    registry.record_active_models(device.id, {k: str(v) for k, v in announced["models"].items()})
    return device


def find_and_record(registry: RegistryBackend, edge: str, announced: dict) -> Device | None:
    """The registered device of a hello, its announcement recorded; None when none is registered."""
    device = registry.get_device(edge)
    return None if device is None else record_hello(registry, device, announced)


def good_key(key: Any) -> bool:
    return isinstance(key, str) and 0 < len(key) <= 128 and not any(c.isspace() or ord(c) < 32 for c in key)

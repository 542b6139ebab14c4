"""Heartbeats of many edges, buffered and written to the registry once a second in one transaction.

The edge hub calls `app[HEARTBEATS].add(Heartbeat(device_id, at, health, restarts))` for each
heartbeat frame; only the latest per device is kept until the next flush (1,000 edges ≈ 5 ms).
"""
from __future__ import annotations

import asyncio
import logging

from federation.registry import Heartbeat, Registry

log = logging.getLogger("streamql.federation")


class HeartbeatBuffer:
    def __init__(self, registry: Registry, interval: float = 1.0):
        self.registry, self.interval = registry, interval
        self._pending: dict[str, Heartbeat] = {}

    def add(self, beat: Heartbeat) -> None:
        self._pending[beat.device_id] = beat

    def __len__(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Write what is pending; returns the number of devices updated."""
        if not self._pending:
            return 0
        beats, self._pending = list(self._pending.values()), {}
        return self.registry.record_heartbeats(beats)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.flush()
            except Exception:  # a locked database must not end the flushing for good
                log.exception("writing heartbeats failed")


"""Heartbeats of many edges, buffered and written to the registry once a second in one transaction.

The edge hub calls `app[HEARTBEATS].add(Heartbeat(device_id, at, health, restarts))` for each
health frame and `touch(device_id, at)` for other traffic (last seen only); per device the latest
is kept until the next flush (1,000 edges ≈ 5 ms). On a registry shared by several nodes, each
flush is followed by reading the heartbeats the other nodes wrote (`poll_heartbeats`); on
PostgreSQL both round trips run in a worker thread, off the event loop. On SQLite (its connection
belongs to the loop's thread) a flush is written in slices of `FLUSH_SLICE` beats, one
transaction each, the loop free between them: 10,000 edges' beats are 2,000 a second, 80–150 ms
of encoding and writing, which would otherwise hold every edge's frames in one piece.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from federation.registry import Heartbeat, Registry

log = logging.getLogger("streamql.federation")

FLUSH_SLICE = 250   # beats per transaction when the flush runs on the event loop
STOP_WAIT_S = 2.0   # a stop waits this long for the flush in flight before cancelling it


class HeartbeatBuffer:
    def __init__(self, registry: Registry, interval: float = 1.0):
        self.registry, self.interval = registry, interval
        self._pending: dict[str, Heartbeat] = {}
        self._heard_only: dict[str, Heartbeat] = {}   # another node writes these: the listeners hear them
        self._stopping = asyncio.Event()

    def add(self, beat: Heartbeat, *, write: bool = True) -> None:
        """A beat to write at the next flush; `write=False`: only to the registry's listeners (this
        node's fleet table), as another node writes it (an edge on NATS every node hears)."""
        if not write:
            self._heard_only[beat.device_id] = beat
            return
        before = self._pending.get(beat.device_id)
        if before is not None and (beat.health is None or beat.restarts is None):
            # a beat without health or restarts keeps what the pending one carried
            beat = beat._replace(health=beat.health if beat.health is not None else before.health,
                                 restarts=beat.restarts if beat.restarts is not None else before.restarts)
        self._pending[beat.device_id] = beat

    def touch(self, device_id: str, at: float) -> None:
        """The device was heard from at `at` (any frame): only its last-seen time moves."""
        before = self._pending.get(device_id)
        if before is None:
            self._pending[device_id] = Heartbeat(device_id, at)
        elif at > before.at:
            self._pending[device_id] = before._replace(at=at)

    def __len__(self) -> int:
        return len(self._pending)

    def _pass_heard(self) -> None:
        if self._heard_only:
            beats, self._heard_only = list(self._heard_only.values()), {}
            self.registry.heartbeats_heard(beats)

    def flush(self) -> int:
        """Write what is pending; returns the number of devices updated."""
        self._pass_heard()
        if not self._pending:
            return 0
        beats, self._pending = list(self._pending.values()), {}
        return self.registry.record_heartbeats(beats)

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval)
                break
            except asyncio.TimeoutError:
                pass
            try:
                await self.flush_off_loop()
            except Exception:  # a locked database must not end the flushing for good
                log.exception("writing heartbeats failed")
            if self._stopping.is_set():
                break
            follow = getattr(self.registry, "poll_heartbeats_off_loop", None)
            try:
                if follow is not None:   # a shared registry: what the other nodes heard of their edges
                    await follow()
                elif hasattr(self.registry, "poll_heartbeats"):   # SQLite: one pragma unless another node wrote
                    self.registry.poll_heartbeats()
            except Exception:
                log.exception("reading other nodes' heartbeats failed")

    async def flush_off_loop(self) -> int:
        """flush, with the round trip in a thread when the registry can (PostgreSQL: 10,000 edges'
        beats take about a second; SQLite's connection belongs to the loop's thread)."""
        off_loop = getattr(self.registry, "record_heartbeats_off_loop", None)
        self._pass_heard()
        if not self._pending:
            return 0
        beats, self._pending = list(self._pending.values()), {}
        if off_loop is not None:
            try:
                return await off_loop(beats)
            except asyncio.CancelledError:   # stopping: the last flush writes them (again), newer ones kept
                self._keep(beats)
                raise
        written = 0
        for start in range(0, len(beats), FLUSH_SLICE):
            if start:
                try:
                    await asyncio.sleep(0)   # the loop's other work between two slices
                except asyncio.CancelledError:
                    self._keep(beats[start:])
                    raise
            try:
                written += self.registry.record_heartbeats(beats[start:start + FLUSH_SLICE])
            except Exception:
                self._keep(beats[start:])   # a locked database: written at the next flush
                raise
        return written

    async def stop(self, task: asyncio.Task, wait_s: float = STOP_WAIT_S) -> None:
        """End `task` (run()) after the flush in flight, then write the rest once. Cancelled
        mid-write, a flush's thread went on writing and the same beats were written again behind
        the row locks it still held: at 5,000 NATS edges on a loaded box 1.3 s of a node's stop."""
        self._stopping.set()
        done, _ = await asyncio.wait({task}, timeout=wait_s)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.flush()

    def _keep(self, beats: list[Heartbeat]) -> None:
        """Beats not written: kept for the next flush, unless a newer one of the device came meanwhile."""
        for beat in beats:
            self._pending.setdefault(beat.device_id, beat)

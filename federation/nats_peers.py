"""The other federation nodes on NATS, and which node writes each NATS edge's heartbeats.

Every node hears every NATS edge's health (its fleet table, the rollouts it drives and its planner
need them), but the registry needs each beat written once: two nodes writing the same 10,000 rows
every heartbeat doubled the registry's work and deadlocked each other's updates on PostgreSQL. So
each node announces itself on `sql.ctl.nodes` every BEACON_S, and the writer of an edge's beats is
chosen among the nodes heard within PEER_TTL_S by rendezvous hashing (highest crc32 of node and
edge): every node computes the same answer, about 1/n of the edges each, and when a node goes
silent its edges move to the others within PEER_TTL_S (their last-seen times lag that long at
most). A node that is not the writer still passes the beat to its own fleet table
(HeartbeatBuffer.add(write=False)).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import zlib
from typing import Any, Callable

log = logging.getLogger("streamql.federation.nats")

PEERS_SUBJECT = "sql.ctl.nodes"   # {"node": id}
BEACON_S = 2.0
PEER_TTL_S = 3 * BEACON_S


class Peers:
    def __init__(self, node_id: str, clock: Callable[[], float] = time.monotonic):
        self.node_id, self.clock = node_id, clock
        self._heard: dict[str, float] = {}
        self._live: tuple[str, ...] = (node_id,)
        self._live_at = float("-inf")

    def heard(self, node: str) -> None:
        self._heard[node] = self.clock()

    def live(self) -> tuple[str, ...]:
        """The nodes heard within PEER_TTL_S, this one included (recomputed at most twice a second)."""
        now = self.clock()
        if now - self._live_at >= 0.5:
            self._live = tuple(sorted({self.node_id, *(n for n, at in self._heard.items() if now - at < PEER_TTL_S)}))
            self._live_at = now
        return self._live

    def writer_of(self, edge: str) -> str:
        live = self.live()
        if len(live) == 1:
            return live[0]
        return max(live, key=lambda node: zlib.crc32(f"{node}\0{edge}".encode()))

    def writes(self, edge: str) -> bool:
        return self.writer_of(edge) == self.node_id

    async def run(self, nc: Any) -> None:
        """Hear the others' beacons and send this node's, until cancelled."""
        async def on_beacon(msg) -> None:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                node = json.loads(msg.data)["node"]
                if isinstance(node, str):
                    self.heard(node)

        sub = await nc.subscribe(PEERS_SUBJECT, cb=on_beacon)
        beacon = json.dumps({"node": self.node_id}).encode()
        try:
            while True:
                with contextlib.suppress(Exception):   # NATS away: nats-py reconnects; the beacon resumes
                    await nc.publish(PEERS_SUBJECT, beacon)
                await asyncio.sleep(BEACON_S)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

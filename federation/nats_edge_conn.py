"""An edge as one federation node sees it on NATS (federation/nats_hub.py): what the planner and
the deployments send it goes to `sql.down.<edge>` with this node's reply subject and run id."""
from __future__ import annotations

import contextlib
import secrets
import time
from typing import TYPE_CHECKING, Any

from nats.errors import Error as NatsError

from federation import nats_subjects as subjects
from federation.hub import EdgeOffline
from federation.nats_leases import RUN_HEADER
from streamql import wire

if TYPE_CHECKING:
    from federation.nats_hub import NatsHub

LEASE_HEADER = "Sql-Lease"


class NatsEdgeConnection:
    """An edge as one node sees it on NATS: the same surface as federation.edge_link.EdgeConnection."""

    def __init__(self, hub: "NatsHub", edge_id: str, version: int):
        self.hub, self.edge_id, self.version = hub, edge_id, version
        self.session = secrets.token_hex(8)
        self.fragments: dict[str, Any] = {}
        self.last_frame = time.monotonic()
        self.last_seen = time.time()
        self.closing = False
        self.close_reason = "closed"
        self.rtt_ms: float | None = None
        self.frame_bytes = 0
        self.publish_hold: int | None = None
        self.down = subjects.down(edge_id)
        self.reply = subjects.up(edge_id, hub.node_id)

    def __repr__(self) -> str:
        return f"<NatsEdgeConnection {self.edge_id} node={self.hub.node_id}>"

    async def send(self, frame: wire.Frame | bytes, headers: dict | None = None) -> None:
        data = frame if isinstance(frame, (bytes, bytearray)) else wire.encode(frame)
        if self.closing or self.hub.nc is None or not self.hub.nc.is_connected:
            raise EdgeOffline(self.edge_id, "dropped its link", dropped=True)
        headers = {**(headers or {}), RUN_HEADER: self.hub.run_id}
        if isinstance(frame, wire.Frame) and frame.t == "query":
            headers[LEASE_HEADER] = f"{self.hub.config.nats_lease_s:g}"
        try:
            await self.hub.nc.publish(self.down, bytes(data), reply=self.reply, headers=headers)
        except NatsError as exc:
            raise EdgeOffline(self.edge_id, f"could not be reached over NATS ({exc})", dropped=True) from None

    def post(self, frame: wire.Frame | bytes) -> None:
        self.hub.spawn(self._send_quietly(frame), name=f"send-{self.edge_id}")

    async def _send_quietly(self, frame: wire.Frame | bytes) -> None:
        with contextlib.suppress(Exception):
            await self.send(frame)

    async def close(self, code: int = 1000, reason: str = "closed") -> None:
        """Forget the edge on this node (its NATS connection is NATS's to close: revocation)."""
        if self.closing:
            return
        self.closing = True
        self.close_reason = reason
        self.hub.detach(self, reason)

    def malformed(self) -> bool:
        return False

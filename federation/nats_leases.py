"""Fragment leases renewed off the node's event loop (federation/nats_hub.py).

An edge cancels the fragments of a node it has not heard from for the query's lease (`Sql-Lease`,
`--nats-lease`): a node that died leaves no orphans. The node renews by pinging the edges that run
its fragments every lease/3. Done from the node's event loop, a node that is merely busy (10,000
edges' hellos, a fan-out's rows, a deployment: loop lags of 10 s and more were measured) went
silent for a lease and lost its own fragments. So the pings come from a thread of their own, with
its own NATS connection and event loop, which the node's loop only feeds: the edges that run its
fragments (a tuple replaced whole) and a tick saying it is still turning. A node whose loop has
not ticked for `max_stall_s` (a wedged node, not a slow one) stops renewing, and its edges cancel
its fragments a lease later.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

from federation import nats_subjects as subjects
from streamql import wire

log = logging.getLogger("streamql.federation.nats")

RUN_HEADER = "Sql-Run"   # the node process: a node restarted under the same id renews none of its old leases


def max_stall_for(lease_s: float) -> float:
    """How long a node's loop may stand still before its leases are left to run out."""
    return max(60.0, 6.0 * lease_s)


class LeaseRenewer:
    """Pings, every lease/3 from its own thread, the edges named in `edges` (module docstring)."""

    def __init__(self, servers: list[str], connect_options: dict[str, Any], *, node_id: str, run_id: str,
                 lease_s: float, max_stall_s: float | None = None):
        self.servers, self.connect_options = list(servers), dict(connect_options)
        self.node_id, self.run_id, self.lease_s = node_id, run_id, lease_s
        self.max_stall_s = max_stall_for(lease_s) if max_stall_s is None else max_stall_s
        self.edges: tuple[str, ...] = ()     # replaced whole by the node's loop (atomic under the GIL)
        self.tick = time.monotonic()         # the node's loop was turning then
        self.sent = 0
        self.connected = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"nats-leases-{node_id}")

    def start(self, timeout: float = 10.0) -> bool:
        """Start the thread; whether its connection is up within `timeout` (else the caller renews)."""
        self._thread.start()
        self.connected.wait(timeout)
        return self.connected.is_set()

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the thread to end; wait at most `timeout` (a daemon thread: a node stopping under load
        must not spend its shutdown budget here; the process ends it anyway)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def feed(self, edges: tuple[str, ...]) -> None:
        """From the node's loop: what runs now, and that the loop turns."""
        self.edges = edges
        self.tick = time.monotonic()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.connected.is_set()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # noqa: BLE001 - the node falls back to renewing from its loop
            self.error = error
            log.warning("lease renewal thread ended: %r", error)

    async def _main(self) -> None:
        import nats

        nc = await nats.connect(self.servers, name=f"streamql-federation {self.node_id} leases",
                                allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                connect_timeout=5, **self.connect_options)
        self.connected.set()
        nonce = 0
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                if began - self.tick <= self.max_stall_s:
                    headers = {RUN_HEADER: self.run_id}
                    for edge in self.edges:
                        nonce += 1
                        with contextlib.suppress(Exception):   # NATS away: nats-py reconnects
                            await nc.publish(subjects.down(edge), wire.encode(wire.make("ping", nonce=nonce,
                                                                                        time=time.time())),
                                             reply=subjects.up(edge, self.node_id), headers=headers)
                            self.sent += 1
                while not self._stop.is_set() and time.monotonic() - began < self.lease_s / 3:
                    await asyncio.sleep(min(0.1, self.lease_s / 30))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 1.0)

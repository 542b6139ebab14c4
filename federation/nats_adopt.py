"""How a federation node on NATS takes in edges it hears but does not hold (federation/nats_hub.py):

- an edge this node held and closed as silent (its frames came late: a busy device, or a busy
  simulator process) is taken back from its next frame, from the hello this node kept of it, with
  the models and functions it has learnt since (acks): no round trip. At 10,000 edges node A closed
  1,316 edges as silent in a fan-out and ~45 s later still held none of them again: their adoption
  read the presence bucket, whose reply waited behind the node's reading backlog past the request's
  5 s timeout, again at every health; and an edge silent longer than three heartbeats had no
  presence entry at all until its next put landed;
- an edge it never held (it connected before this node started; a hello this node missed) is
  adopted from its presence entry (its hello and latest health), at most ADOPT_AT_ONCE reads at once
  (the others are tried again at their next health).
"""
from __future__ import annotations

import asyncio
import logging
import time

from federation import nats_subjects as subjects
from federation.nats_edge_conn import NatsEdgeConnection
from streamql import codec, wire

log = logging.getLogger("streamql.federation.nats")

ADOPT_AT_ONCE = 1024       # presence reads in flight
BEHIND_S = 3.0             # reading this far behind (three of its 1 s probes), a node takes none back
TAKE_BACK_PER_S = 250      # edges closed as silent taken back a second, at most (a hello's registry writes each)
SILENT_REASON = "no frame for"   # hub.EdgeHub._sweep_loop's close reason: the edge may come back

__all__ = ["NatsAdoption", "ADOPT_AT_ONCE", "SILENT_REASON"]


class NatsAdoption:
    """Mixed into NatsHub (which sets `_hellos`, `_taking_back`, `_take_back_task`, `_adopting`, `m_adopted`)."""

    def _keep_hello(self, edge: str, hello: wire.Frame, size: int) -> None:
        self._hellos[edge] = (hello, size)

    def _forget_hello(self, edge: str) -> None:
        self._hellos.pop(edge, None)
        self._taking_back.pop(edge, None)

    def detach(self, conn, reason: str) -> None:
        super().detach(conn, reason)
        # closed for another reason than silence (bye, revocation, the edge's own close): the edge
        # says hello again before this node takes its frames
        if isinstance(conn, NatsEdgeConnection) and self._connections.get(conn.edge_id) is None \
                and not reason.startswith(SILENT_REASON):
            self._forget_hello(conn.edge_id)

    def _adopt_later(self, edge: str, health: wire.Frame | None = None) -> None:
        """A frame from an edge this node does not hold: take it in (see the module docstring)."""
        if self.stopping or edge in self._hellos_pending:   # its hello is being answered (nats_hellos)
            return
        if edge in self._hellos:
            self._taking_back[edge] = (health, time.monotonic())
            worker = self._take_back_task
            if worker is None or worker.done():
                self._take_back_task = self.spawn(self._take_back(), name="nats-take-back")
            return
        if edge not in self._adopting and len(self._adopting) < ADOPT_AT_ONCE:
            self._adopting.add(edge)
            self.spawn(self._adopt(edge), name=f"adopt-{edge}")

    async def _take_back(self) -> None:
        """Edges closed as silent, accepted again from their kept hellos, at most TAKE_BACK_PER_S a
        second (and a quarter of the loop's time) and only while this node reads its subscription within a heartbeat or BEHIND_S (its own probe,
        nats_hub.silent_for): a burst of a thousand is a thousand registry writes on the loop, and a
        node behind its reading (a connect storm, a held loop) first reads its backlog — its hellos
        and other nodes' edges' frames — rather than compete with it; the edges wait meanwhile."""
        while self._taking_back and not self.stopping:
            if time.monotonic() - self._caught_up_to > max(self.config.heartbeat_s, BEHIND_S):
                await asyncio.sleep(1.0)
                continue
            edge = next(iter(self._taking_back))
            health, heard = self._taking_back.pop(edge)
            kept = self._hellos.get(edge)
            began = time.monotonic()
            try:
                if kept is not None and edge not in self._connections:
                    hello, size = kept
                    welcome = self._accept_hello(edge, self._hello_now(edge, hello), size, heard=heard)
                    conn = self._connections.get(edge)
                    if welcome["accepted"] and conn is not None:
                        self.m_adopted.inc(via="kept_hello")
                        if health is not None:
                            self.on_health(conn, health)
                    else:
                        self.m_adopted.inc(via="refused")
            except Exception:  # noqa: BLE001 - the registry away: the next health tries again
                log.exception("taking %s back failed", edge)
            # its registry writes wait for PostgreSQL's device-change lock, which every node's flips
            # share: at 10,000 edges such waits held a node's loop 15 s. A take-back has at most a
            # quarter of the loop's time, whatever one costs.
            await asyncio.sleep(max(1.0 / TAKE_BACK_PER_S, 3 * (time.monotonic() - began)))

    def _hello_now(self, edge: str, hello: wire.Frame) -> wire.Frame:
        """The kept hello with what the edge runs now: a deployment since changed its models (the
        acks told this node), which an old hello would write back into the registry."""
        announced = self._announced.get(edge)
        if announced is None:
            return hello
        fields = dict(hello.fields, models=dict(announced["models"]))
        functions = announced["capabilities"].get("functions")
        if functions is not None:
            fields["capabilities"] = {**dict(hello["capabilities"]), "functions": list(functions)}
        return wire.make("hello", **fields)

    async def _adopt(self, edge: str) -> None:
        """An edge this node has not heard say hello (it connected before the node started)."""
        try:
            entry = await self.presence.get(subjects.presence_key(edge))
            self._adopt_entry(edge, entry.value)
        except Exception as exc:  # noqa: BLE001 - gone meanwhile, a bad entry, or the read timed out
            self.m_adopted.inc(via="no_presence")
            log.debug("no presence for %s: %s", edge, exc)
        finally:
            self._adopting.discard(edge)

    def _adopt_entry(self, edge: str, value: bytes | None) -> None:
        if not value or edge in self._connections:
            return
        document = codec.unpack(value)
        hello = wire.decode(document["hello"], accept=wire.FROM_EDGE)
        if hello.t != "hello":
            return
        welcome = self._accept_hello(edge, hello, len(document["hello"]))
        if welcome["accepted"]:
            self.m_adopted.inc(via="presence")
        if welcome["accepted"] and document.get("health"):
            health = wire.decode(document["health"], accept=wire.FROM_EDGE)
            conn = self._connections.get(edge)
            if health.t == "health" and conn is not None:
                self.on_health(conn, health)

    async def _load_presence(self) -> None:
        """The edges up before this node started (their presence entries)."""
        try:
            keys = await self.presence.keys()
        except Exception:  # noqa: BLE001 - nats raises NoKeysError for an empty bucket
            return
        for key in keys:
            try:
                edge = subjects.decode_token(key)
                entry = await self.presence.get(key)
                self._adopt_entry(edge, entry.value)
            except Exception as exc:  # noqa: BLE001
                log.debug("presence entry %s skipped: %s", key, exc)
        if keys:
            log.info("%d edges already present on NATS", len(self._connections))

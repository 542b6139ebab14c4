"""A federation node's copy of the edges' published records on NATS (federation/nats_hub.py):
the JetStream stream `SQL_PUB` read through the node's own durable consumer into its own publish
log, each message acknowledged only once its record is committed (exactly once across restarts of
NATS and of the node), with a rewind when an edge's log shows a hole a dead server left behind."""
from __future__ import annotations

import asyncio
import contextlib
import logging

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from federation import nats_subjects as subjects
from federation.edge_link import EdgeConnection
from streamql import wire

log = logging.getLogger("streamql.federation.nats")

LOG_HEADER = "Sql-Log"
FETCH_BATCH = 256

__all__ = ["NatsPublished", "LOG_HEADER", "FETCH_BATCH"]


class NatsPublished:
    """Mixed into NatsHub: reads SQL_PUB into the node's publish log and hands records to subscribers."""

    async def _consume_published(self) -> None:
        """SQL_PUB → this node's publish log; a message is acknowledged once its record is committed."""
        sub = None
        while True:
            try:
                if sub is None:
                    sub = await self.js.pull_subscribe(
                        subjects.publish_wildcard(), durable=self._consumer, stream=subjects.PUBLISH_STREAM,
                        config=self._published_consumer())
                try:
                    messages = await sub.fetch(FETCH_BATCH, timeout=1.0)
                except (asyncio.TimeoutError, nats.errors.TimeoutError):
                    continue
                taken = []
                for msg in messages:
                    if self._past_a_hole(msg):
                        break
                    self._take_published(msg)
                    taken.append(msg)
                self._flush_publish()
                for msg in taken:
                    await msg.ack()
                if len(taken) < len(messages):
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
                    sub = None
                    await self._rewind_published()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - NATS away or restarting: unacked ones come again
                log.info("reading published records: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(1.0)
                sub = None

    def _past_a_hole(self, msg) -> bool:
        """True for a record whose edge's log has a hole just before it that no rewind has looked for
        yet: the records of a fetch whose server died on the way here are redelivered only after
        `ack_wait`, by which time later ones would have been accepted and they refused as old."""
        try:
            edge = subjects.edge_of(msg.subject)
            frame = wire.decode(msg.data, accept=wire.FROM_EDGE)
        except (ValueError, wire.ProtocolError):
            return False
        seq, log_id = frame.fields.get("seq"), (msg.headers or {}).get(LOG_HEADER)
        if frame.t != "publish" or not isinstance(seq, int):
            return False
        same_log = not log_id or self.publish_log.receiver.log(edge) == log_id
        hole = (edge, log_id, (self.publish_log.last(edge) if same_log else 0) + 1)   # a new log starts at 1
        if seq <= hole[2] or hole in self._holes_looked_for:
            return False      # in order; or looked for once and not in the stream: dropped at the edge
        self._holes_looked_for.add(hole)
        return True

    async def _rewind_published(self) -> None:
        """Deliver again, in stream order, from the oldest record this node has not acknowledged
        (the consumer made anew at its ack floor); what was taken already is dropped as a duplicate."""
        try:
            info = await self.js.consumer_info(subjects.PUBLISH_STREAM, self._consumer)
            start = info.ack_floor.stream_seq + 1
            await self.js.delete_consumer(subjects.PUBLISH_STREAM, self._consumer)
            await self.js.add_consumer(subjects.PUBLISH_STREAM, self._published_consumer(start))
            log.info("published records: a hole in an edge's log; delivering again from stream record %d", start)
        except Exception as exc:  # noqa: BLE001 - the next fetch's error path makes a consumer anew
            log.info("published records: could not rewind (%s: %s)", type(exc).__name__, exc)

    def _published_consumer(self, start: int | None = None) -> ConsumerConfig:
        more = {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": start} if start else {}
        return ConsumerConfig(durable_name=self._consumer, filter_subject=subjects.publish_wildcard(),
                              max_ack_pending=4 * FETCH_BATCH, ack_wait=30.0, **more)

    def _take_published(self, msg) -> None:
        try:
            edge = subjects.edge_of(msg.subject)
            frame = wire.decode(msg.data, accept=wire.FROM_EDGE)
        except (ValueError, wire.ProtocolError) as exc:
            self.m_protocol.inc(code="publish")
            log.warning("a published record on %s was dropped: %s", msg.subject, exc)
            return
        if frame.t != "publish":
            return
        log_id = (msg.headers or {}).get(LOG_HEADER)
        if log_id and self.publish_log.receiver.log(edge) != log_id:
            self.publish_log.hello(edge, log_id)
        if self.publish_log.accept(edge, frame.fields):
            self.m_published.inc()
        else:
            self.m_duplicates.inc()

    def _acks_publish(self, conn) -> bool:
        """NATS edges were acknowledged by JetStream already; WebSocket edges connected here get
        their publish_ack as on the embedded hub (EdgeHub._flush_publish)."""
        return isinstance(conn, EdgeConnection)

"""Results of autostart queries to the federation: into the store-and-forward buffer, out as `publish`.

Producers (autostart query threads) call `emit`: each batch becomes one buffer record
`{flow, n, cols, names, time}` — on disk before anything is sent, so it survives the link and
the process. While connected, `send_loop` sends held records in sequence order as `publish`
frames, at most 256 records (or 8 MiB) unacknowledged; `publish_ack {upto}` trims the buffer and
lets it go on. After a reconnect, `welcome.publish_acked` trims what the federation already has
and sending restarts from the oldest record held, so every record is delivered at least once on
the wire and exactly once after the federation's deduplication by sequence (docs/protocol.md §8).

Over its quota, the federation refuses a record with `error {code: "over_quota", ref: seq, hold,
retry_after_s}` (`over_quota`): the refused record and those sent after it stay in the buffer,
sending pauses for `retry_after_s`, and resumes from the refused record with `hold` on its first
frame — slowed down, nothing dropped (counted in `throttled`, reported in health `publish`).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Awaitable, Callable

from streamql import codec, wire

from .autostart import AutostartSpec
from .buffer import BufferError, StoreForwardBuffer

__all__ = ["Publisher", "WINDOW_RECORDS", "WINDOW_BYTES"]

WINDOW_RECORDS = 256
WINDOW_BYTES = 8 << 20
READ_BATCH = 64


class Publisher:
    """The buffer between autostart queries and the link (see the module docstring)."""

    def __init__(self, buffer: StoreForwardBuffer, loop: asyncio.AbstractEventLoop, *,
                 log: logging.Logger | None = None, window_records: int = WINDOW_RECORDS,
                 window_bytes: int = WINDOW_BYTES):
        self.buffer = buffer
        self.loop = loop
        self.log = log or logging.getLogger("streamql.edge.publish")
        self.window_records, self.window_bytes = window_records, window_bytes
        self._wake = asyncio.Event()
        self._inflight: collections.deque[tuple[int, int]] = collections.deque()   # (seq, frame bytes)
        self._unresolved: set[int] = set()      # in flight when a connection dropped
        self.max_frame = wire.MAX_FRAME_BYTES     # the federation's, from welcome
        self.appended = 0
        self.refused = 0        # records too large for the buffer at all (also counted as errors)
        self.sent = 0
        self.skipped = 0        # held records that could not be read back or framed
        self.throttled = 0      # over_quota refusals heeded
        self.paused_s = 0.0     # time spent paused by them
        self.last_reason: str | None = None
        self._resume: tuple[int, int, float] | None = None    # (resend from seq, hold, not before)

    # == producers (any thread) =================================================================
    def emit(self, spec: AutostartSpec, n: int, cols: list, names: list, progress: dict | None = None) -> int | None:
        """Store one batch of an autostart query's rows for its flow; the record's sequence.
        `progress` (the query's row count with this record) stays in the buffer: a restarted
        query finds there what it had published (edge_engine/checkpoints.py)."""
        if spec.flow is None:
            return None
        record = {"flow": spec.flow, "n": n, "cols": cols, "names": names, "time": time.time()}
        if progress is not None:
            record["progress"] = progress
        try:
            seq = self.buffer.append(record)
        except BufferError as exc:
            self.refused += 1
            self.log.error("results of %s not kept: %s", spec.name, exc)
            return None
        self.appended += 1
        self.loop.call_soon_threadsafe(self._wake.set)
        return seq

    # == the link (event loop) ==================================================================
    @property
    def unacked(self) -> int:
        return len(self._inflight)

    def acked(self, upto: int, log: str | None = None) -> None:
        """A publish_ack on this connection: the federation accepted everything up to `upto`.

        Records sent on this connection arrive in order, so those of them <= upto reached it —
        even ones the buffer dropped meanwhile (full while their ack was on its way): they are
        taken off the drop count. An ack past a gap says nothing about records never sent here.
        """
        if log is not None and log != self.buffer.log_id:
            self.log.warning("publish_ack for log %s ignored: this edge's log is %s", log, self.buffer.log_id)
            return
        sent = []
        while self._inflight and self._inflight[0][0] <= upto:
            sent.append(self._inflight.popleft()[0])
        self.buffer.ack(upto, sent=sent)
        self._wake.set()

    def connected(self, publish_acked: int) -> None:
        """A welcome: the federation's last accepted record. Of what was in flight when the
        previous connection dropped, what is <= publish_acked arrived (the prefix rule of one
        connection); dropped ones among them were not lost."""
        unresolved, self._unresolved = self._unresolved, set()
        self.buffer.ack(publish_acked, sent=unresolved)
        self._wake.set()

    def disconnected(self) -> None:
        """Records in flight are now of unknown fate, until the next welcome says."""
        self._unresolved |= {seq for seq, _ in self._inflight}
        self._inflight = collections.deque()
        self._resume = None     # a hold lives as long as its connection; welcome says where to go on

    def over_quota(self, seq: int, hold: int, retry_after_s: float, message: str = "") -> None:
        """The federation refused record `seq` and everything sent after it on this connection:
        they stay held; sending pauses, then resumes from `seq` carrying `hold`."""
        if not any(entry[0] == seq for entry in self._inflight):
            self.log.debug("over_quota for record %d, which is not in flight", seq)
        self._inflight = collections.deque(entry for entry in self._inflight if entry[0] < seq)
        pause = min(60.0, max(0.0, float(retry_after_s)))
        self._resume = (seq, hold, time.monotonic() + pause)
        self.throttled += 1
        self.paused_s += pause
        self.last_reason = message[:200] or "over quota"
        self.log.info("the federation refused publish record %d (over quota): resending in %.2f s", seq, pause)
        self._wake.set()

    def stats(self) -> dict:
        """Health `publish`: refusals heeded and time paused by them."""
        return {"throttled": self.throttled, "paused_s": round(self.paused_s, 3), "last_reason": self.last_reason}

    async def send_loop(self, send_bytes: Callable[[bytes], Awaitable[None]]) -> None:
        """Send held records while the connection lasts (cancel the task when it drops)."""
        self._inflight = collections.deque()
        self._resume = None
        next_seq = self.buffer.first_seq or self.buffer.next_seq
        hold = None
        while True:
            self._wake.clear()
            if self._resume is not None:    # refused over quota: pause, then go back to the refused record
                next_seq, hold, not_before = self._resume
                self._resume = None
                await asyncio.sleep(max(0.0, not_before - time.monotonic()))
                if self._resume is not None:
                    continue
            room = self.window_records - len(self._inflight)
            room_bytes = self.window_bytes - sum(size for _, size in self._inflight)
            sent_any = False
            if room > 0 and room_bytes > 0:
                records = self.buffer.read_from(next_seq, max_records=min(room, READ_BATCH), max_bytes=room_bytes,
                                                raw=True)
                for seq, payload in records:
                    data = self._frame(seq, payload, hold)
                    next_seq = seq + 1
                    if data is None:
                        continue
                    hold = None
                    # in flight before the send: its ack may be handled while the send still awaits
                    self._inflight.append((seq, len(data)))
                    await send_bytes(data)
                    self.sent += 1
                    sent_any = True
                    if self._resume is not None:
                        break       # refused meanwhile: the rest of this batch waits too
                if records and not sent_any and self._resume is None:
                    continue        # all skipped: read on
            if not sent_any and self._resume is None:
                await self._wake.wait()

    def _frame(self, seq: int, payload: bytes, hold: int | None = None) -> bytes | None:
        try:
            record = codec.unpack(payload)
            fields = {"seq": seq, "flow": record["flow"], "n": record["n"], "cols": record["cols"],
                      "dropped": self.buffer.dropped}
            if hold is not None:
                fields["hold"] = hold
            if record.get("names") is not None:
                fields["names"] = record["names"]
            if record.get("time") is not None:
                fields["time"] = record["time"]
            return wire.encode(wire.make("publish", **fields), max_size=self.max_frame)
        except (codec.CodecError, wire.ProtocolError, KeyError, TypeError) as exc:
            self.skipped += 1
            self.log.error("buffer record %d cannot be sent and is skipped: %s", seq, exc)
            return None

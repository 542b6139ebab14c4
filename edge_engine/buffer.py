"""The store-and-forward buffer: results meant for the federation, kept on disk until acknowledged.

Guarantees (docs/protocol.md, "Publish"):
- **In order, numbered**: `append` gives each record the next sequence number (1, 2, 3, …) of
  this buffer's log; numbers never go back, across restarts too. `log_id` (random, made when the
  directory is first used) names the log, so a federation can tell a wiped store from a resend.
- **Crash-safe**: records live in append-only segment files, each record framed by its length, a
  CRC-32 and its sequence number. After `kill -9` (or a power cut, with `fsync="always"`) a torn
  record at the tail is detected on open and cut off; every record whose `append` returned is
  still there. The control state (acknowledged and dropped positions, counters) is written
  alternately into two checksummed slots, so a write torn by a crash leaves the other intact. Damage in the middle of a file (the disk, not a crash) is
  skipped: the records after it are found again by their framing, the unreadable ones are
  counted in `damaged` and never returned, and no sequence number is ever reused.
- **Bounded, drops counted exactly**: with `max_records` and/or `max_bytes` set, a full buffer
  drops its OLDEST unacknowledged records to make room (policy `drop_oldest`, the default: on a
  monitoring device the newest results matter most, and dropping at the head keeps the log
  append-only) or refuses the new one (`drop_newest`: `append` returns None). Either way
  `dropped` counts every record lost that way, and the count persists across restarts.
- **Dropped means lost**: a record dropped after it was sent but before its acknowledgement may
  have reached the federation; the sender, which knows what it sent on which connection, names
  them when it acknowledges (`ack(upto, sent=…)`) and they leave the count, so `dropped` equals
  the gaps the federation sees (`PublishReceiver.missing`).
- **Trimmed by acknowledgement**: `ack(upto)` forgets records ≤ upto; whole segment files are
  deleted once every record in them is gone, so the disk holds at most `max_bytes` plus one
  segment.

A buffer is used from one thread at a time (the daemon's event loop); a lock makes accidental
sharing safe rather than fast.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import struct
import threading
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from streamql import codec
from streamql.clock import SYSTEM_CLOCK, Clock

from .store import fsync_dir

log = logging.getLogger("streamql.edge.buffer")

__all__ = ["StoreForwardBuffer", "BufferError", "FSYNC_POLICIES", "OVERFLOW_POLICIES", "RECORD_OVERHEAD"]

FSYNC_POLICIES = ("always", "interval", "never")
OVERFLOW_POLICIES = ("drop_oldest", "drop_newest")

_SEGMENT_MAGIC = b"SQLBSEG1"
_SEGMENT_HEADER = struct.Struct("<8s16sQ")       # magic, log id (16 bytes), first sequence
_RECORD_HEADER = struct.Struct("<IIQ")           # payload length, CRC-32 of seq+payload, sequence
RECORD_OVERHEAD = _RECORD_HEADER.size
_MAX_RECORD = 1 << 30
_STATE_SLOTS = ("state.0", "state.1")   # written alternately: a torn write spoils one, never both


class BufferError(Exception):
    """The buffer cannot do what was asked (a record larger than the whole capacity, a bad directory)."""


@dataclass
class _Segment:
    path: Path
    first: int                                   # sequence of its first record
    offsets: array = field(default_factory=lambda: array("Q"))   # offset of each record's header
    end: int = _SEGMENT_HEADER.size              # offset just past the last record

    @property
    def count(self) -> int:
        return len(self.offsets)

    @property
    def last(self) -> int:
        return self.first + len(self.offsets) - 1

    def size_of(self, index: int) -> int:
        stop = self.offsets[index + 1] if index + 1 < len(self.offsets) else self.end
        return stop - self.offsets[index]


class StoreForwardBuffer:
    """A bounded, crash-safe, ordered log of records on disk (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike, *, max_records: int | None = None,
                 max_bytes: int | None = None, overflow: str = "drop_oldest", fsync: str = "interval",
                 fsync_interval: float = 1.0, segment_bytes: int = 4 << 20, clock: Clock = SYSTEM_CLOCK):
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}, not {overflow!r}")
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        for name, limit in (("max_records", max_records), ("max_bytes", max_bytes)):
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be positive")
        self.directory = Path(directory)
        self.max_records, self.max_bytes = max_records, max_bytes
        self.overflow, self.fsync = overflow, fsync
        self.fsync_interval = fsync_interval
        self.segment_bytes = max(segment_bytes, 1024)
        self.clock = clock
        self._lock = threading.RLock()
        self._segments: list[_Segment] = []
        self._fd: int | None = None              # append descriptor of the last segment
        self._dirty = False
        self._last_sync = clock.monotonic()
        self.log_id = ""
        self.head = 0          # every record with seq <= head is gone (acknowledged or dropped)
        self.acked = 0         # highest sequence acknowledged by the federation
        self.dropped = 0       # records lost to overflow, ever (persisted)
        self.truncated = 0     # torn tails cut off when opening (this process)
        self.recovered = False  # the state was unreadable and rebuilt from the segments
        self._state_counter = 0
        self._damaged: set[int] = set()   # held sequence numbers whose record is unreadable
        self.count = 0         # records held
        self.bytes = 0         # their size on disk, framing included
        self._next = 1
        self.directory.mkdir(parents=True, exist_ok=True)
        self._open()

    # -- public API ------------------------------------------------------------------------------
    def append(self, record: Any) -> int | None:
        """Store a value (any codec value); its sequence number, or None when refused (full, drop_newest)."""
        return self.append_bytes(codec.pack(record))

    def append_bytes(self, payload: bytes) -> int | None:
        size = RECORD_OVERHEAD + len(payload)
        if len(payload) > _MAX_RECORD or (self.max_bytes is not None and size > self.max_bytes):
            raise BufferError(f"a record of {size} bytes cannot fit a buffer of {self.max_bytes} bytes")
        with self._lock:
            self._check_open()
            if self._would_overflow(1, size):
                if self.overflow == "drop_newest":
                    self.dropped += 1
                    self._save_state()
                    return None
                while self.count and self._would_overflow(1, size):
                    self._drop_oldest()
                self._save_state()
                self._delete_dead_segments()
            seq = self._next
            segment = self._writable_segment(size)
            header = _RECORD_HEADER.pack(len(payload), _crc(seq, payload), seq)
            _write_all(self._fd, header + payload)
            segment.offsets.append(segment.end)
            segment.end += size
            self._next = seq + 1
            self.count += 1
            self.bytes += size
            self._dirty = True
            self._maybe_sync()
            return seq

    def read_from(self, seq: int, max_records: int = 256, max_bytes: int | None = None,
                  raw: bool = False) -> list[tuple[int, Any]]:
        """Up to `max_records` held records with sequence >= seq, oldest first, as (seq, record).

        Records before the oldest held one are gone (acknowledged or dropped); reading starts at
        the oldest held then. `max_bytes` bounds the payload bytes returned (at least one record).
        """
        out: list[tuple[int, Any]] = []
        total = 0
        with self._lock:
            self._check_open()
            start = max(seq, self.head + 1)
            for segment in self._segments:
                if segment.last < start or not segment.count:
                    continue
                index = max(0, start - segment.first)
                with open(segment.path, "rb") as handle:
                    fd = handle.fileno()
                    while index < segment.count and len(out) < max_records:
                        item = self._read_record(fd, segment, index)
                        index += 1
                        if item is None:
                            continue
                        record_seq, payload = item
                        if out and max_bytes is not None and total + len(payload) > max_bytes:
                            return out
                        total += len(payload)
                        out.append((record_seq, payload if raw else codec.unpack(payload)))
                if len(out) >= max_records:
                    break
        return out

    def records_after(self, seq: int) -> list[tuple[int, Any]]:
        """Every record with sequence > seq still on disk, acknowledged ones included (a segment
        is deleted only once sealed and all gone): what a restarted autostart query looks for
        to know what it had emitted after its checkpoint (edge_engine.checkpoints)."""
        out: list[tuple[int, Any]] = []
        with self._lock:
            self._check_open()
            for segment in self._segments:
                if segment.last <= seq or not segment.count:
                    continue
                with open(segment.path, "rb") as handle:
                    fd = handle.fileno()
                    for index in range(max(0, seq + 1 - segment.first), segment.count):
                        item = self._read_record(fd, segment, index)
                        if item is not None:
                            try:
                                out.append((item[0], codec.unpack(item[1])))
                            except codec.CodecError:
                                continue
        return out

    def ack(self, upto: int, sent: Iterable[int] = ()) -> int:
        """The federation has every record <= upto: forget them. Returns how many were removed.

        `sent`: records the caller knows reached the federation (sent on the connection the ack
        came by, and <= upto); those among them dropped meanwhile leave the drop count. Checked
        and acknowledged under one lock, so an append dropping records cannot slip in between.
        """
        with self._lock:
            self._check_open()
            reached = sum(1 for seq in sent if seq <= upto and self.dropped_unacked(seq))
            if reached:
                self.dropped = max(0, self.dropped - reached)
            upto = min(int(upto), self._next - 1)
            if upto <= self.acked and upto <= self.head:
                if reached:
                    self._save_state()
                return 0
            before = self.count
            self.acked = max(self.acked, upto)
            self._advance_head(upto)
            self._save_state()
            self._delete_dead_segments()
            return before - self.count

    def dropped_unacked(self, seq: int) -> bool:
        """Whether record `seq` was dropped by overflow before an acknowledgement covered it."""
        return self.acked < seq <= self.head and seq not in self._damaged

    @property
    def damaged(self) -> int:
        """Held records that cannot be read back (damaged on disk); read_from skips them."""
        return sum(1 for seq in self._damaged if seq > self.head)

    @property
    def next_seq(self) -> int:
        return self._next

    @property
    def first_seq(self) -> int | None:
        """The oldest held record's sequence, or None when empty."""
        for segment in self._segments:
            if segment.count and segment.last > self.head:
                return max(segment.first, self.head + 1)
        return None

    @property
    def last_seq(self) -> int:
        """The sequence of the newest record ever appended (0 before the first)."""
        return self._next - 1

    def resume_info(self) -> dict:
        """What `hello.resume` carries: this log, its held range, count and drops."""
        first = self.first_seq
        return {"log": self.log_id, "first": first if first is not None else self._next,
                "last": self.last_seq, "count": self.count, "dropped": self.dropped}

    def stats(self) -> dict:
        return {"records": self.count, "bytes": self.bytes, "dropped": self.dropped, "damaged": self.damaged,
                "acked": self.acked, "next": self._next, "truncated": self.truncated,
                "segments": len(self._segments)}

    def flush(self) -> None:
        """Make everything appended so far durable now (fsync), whatever the policy."""
        with self._lock:
            if self._fd is not None and self._dirty:
                os.fsync(self._fd)
                self._dirty = False
            self._last_sync = self.clock.monotonic()

    def close(self) -> None:
        with self._lock:
            if self._fd is None and not self._segments and not self.log_id:
                return
            if self._fd is not None:
                if self.fsync != "never":
                    self.flush()
                os.close(self._fd)
                self._fd = None
            self._save_state()
            self._segments = []
            self.log_id = ""

    def __enter__(self) -> "StoreForwardBuffer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.count

    # -- capacity ----------------------------------------------------------------------------
    def _would_overflow(self, records: int, size: int) -> bool:
        return ((self.max_records is not None and self.count + records > self.max_records)
                or (self.max_bytes is not None and self.bytes + size > self.max_bytes))

    def _drop_oldest(self) -> None:
        first = self.first_seq
        if first is None:
            return
        self._advance_head(first)
        self.dropped += 1

    def _advance_head(self, upto: int) -> None:
        """Forget held records <= upto (their counts and bytes); head moves to upto."""
        if upto <= self.head:
            return
        for segment in self._segments:
            if not segment.count or segment.last <= self.head:
                continue
            if segment.first > upto:
                break
            lo = max(0, self.head + 1 - segment.first)
            hi = min(segment.count, upto - segment.first + 1)
            for index in range(lo, hi):
                self.count -= 1
                self.bytes -= segment.size_of(index)
        self.head = upto

    def _delete_dead_segments(self) -> None:
        """Delete files whose records are all gone (state already saved), keeping the last one."""
        keep = []
        for i, segment in enumerate(self._segments):
            last_segment = i == len(self._segments) - 1
            if not last_segment and (segment.last <= self.head or not segment.count):
                try:
                    segment.path.unlink()
                except FileNotFoundError:
                    pass
            else:
                keep.append(segment)
        self._segments = keep

    # -- files -------------------------------------------------------------------------------
    def _writable_segment(self, size: int) -> _Segment:
        current = self._segments[-1] if self._segments else None
        if (current is None or self._fd is None or current.first + current.count != self._next
                or (current.count and current.end + size > self.segment_bytes)):
            self._new_segment()
        return self._segments[-1]

    def _new_segment(self) -> None:
        if self._fd is not None:
            if self.fsync != "never" and self._dirty:
                os.fsync(self._fd)
                self._dirty = False
            os.close(self._fd)
            self._fd = None
        path = self.directory / f"seg-{self._next:020d}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        _write_all(fd, _SEGMENT_HEADER.pack(_SEGMENT_MAGIC, bytes.fromhex(self.log_id), self._next))
        if self.fsync != "never":
            os.fsync(fd)
            fsync_dir(self.directory)
        self._fd = fd
        # the previous (now sealed) segment may be entirely gone already
        self._segments.append(_Segment(path, self._next))
        self._delete_dead_segments()

    def _maybe_sync(self) -> None:
        if self.fsync == "always":
            os.fsync(self._fd)
            self._dirty = False
        elif self.fsync == "interval" and self.clock.monotonic() - self._last_sync >= self.fsync_interval:
            self.flush()

    def _read_record(self, fd: int, segment: _Segment, index: int) -> tuple[int, bytes] | None:
        offset, size = segment.offsets[index], segment.size_of(index)
        seq = segment.first + index
        if seq not in self._damaged and size >= RECORD_OVERHEAD:
            data = os.pread(fd, size, offset)
            if len(data) == size:
                length, crc, stored_seq = _RECORD_HEADER.unpack_from(data)
                payload = data[RECORD_OVERHEAD:]
                if stored_seq == seq and length == len(payload) and crc == _crc(seq, payload):
                    return seq, payload
        self._damaged.add(seq)  # damaged after it was written (the disk, or someone else): skip it
        return None

    def _save_state(self) -> None:
        self._state_counter += 1
        body = json.dumps({"format": 1, "counter": self._state_counter, "log": self.log_id, "head": self.head,
                           "acked": self.acked, "dropped": self.dropped, "next": self._next}, sort_keys=True)
        text = f"{body}\n{zlib.crc32(body.encode()):08x}\n".encode()
        path = self.directory / _STATE_SLOTS[self._state_counter % 2]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, text)
            if self.fsync == "always" or (self.fsync == "interval" and
                                          self.clock.monotonic() - self._last_sync >= self.fsync_interval):
                os.fsync(fd)
        finally:
            os.close(fd)

    def _check_open(self) -> None:
        if not self.log_id:
            raise BufferError("the buffer is closed")

    # -- recovery ----------------------------------------------------------------------------
    def _open(self) -> None:
        state = self._load_state()
        segments = sorted(self.directory.glob("seg-*.log"))
        self.log_id = state.get("log") or ""
        for path in segments:
            segment = self._scan(path)
            if segment is not None:
                self._segments.append(segment)
        if not self.log_id:
            self.log_id = secrets.token_hex(16) if not self._segments else self.log_id
        self.head = int(state.get("head", 0))
        self.acked = int(state.get("acked", 0))
        self.dropped = int(state.get("dropped", 0))
        last = max([s.last for s in self._segments if s.count] + [self.head, int(state.get("next", 1)) - 1])
        self._next = last + 1
        if self._segments and not self._segments[-1].count and self._segments[-1].first != self._next:
            self._segments.pop().path.unlink()  # an empty tail that cannot take the next sequence
        self._recount()
        if not state or self._would_overflow(0, 0):
            # a crash between dropping in memory and saving: enforce the capacity again (same result)
            while self.count and self._would_overflow(0, 0):
                self._drop_oldest()
            self._save_state()
        self._delete_dead_segments()
        if self._segments:
            tail = self._segments[-1]
            self._fd = os.open(tail.path, os.O_WRONLY | os.O_APPEND)

    def _load_state(self) -> dict:
        """The newest intact state slot; {} for a new buffer. Unreadable slots only: recover."""
        best: dict = {}
        seen = False
        for name in _STATE_SLOTS:
            path = self.directory / name
            try:
                body, crc, *_ = path.read_bytes().split(b"\n") + [b"", b""]
            except FileNotFoundError:
                continue
            seen = True
            try:
                if f"{zlib.crc32(body):08x}".encode() != crc:
                    continue
                state = json.loads(body)
            except ValueError:
                continue
            if isinstance(state, dict) and state.get("format") == 1 and state.get("counter", 0) > best.get("counter", -1):
                best = state
        if seen and not best:
            # both slots damaged (a disk fault, not a crash): rebuild from the segments; the
            # acknowledged position and the drop count restart from what the segments show
            log.warning("store-and-forward buffer %s: state unreadable, recovered from the segments", self.directory)
            self.recovered = True
        self._state_counter = int(best.get("counter", 0))
        return best

    def _scan(self, path: Path) -> _Segment | None:
        """Index a segment file, cutting off a torn or corrupt tail; None (and delete) if unusable."""
        data = path.read_bytes()
        if len(data) < _SEGMENT_HEADER.size:
            path.unlink()  # torn while being created: it never held a record
            return None
        magic, log_bytes, first = _SEGMENT_HEADER.unpack_from(data)
        if magic != _SEGMENT_MAGIC:
            raise BufferError(f"{path}: not a buffer segment")
        if not self.log_id:
            self.log_id = log_bytes.hex()
        elif log_bytes.hex() != self.log_id:
            raise BufferError(f"{path}: belongs to log {log_bytes.hex()}, not {self.log_id}")
        segment = _Segment(path, first)
        offset, seq = _SEGMENT_HEADER.size, first
        while offset < len(data):
            end = _valid_record_end(data, offset, seq)
            if end is None:
                found = _resync(data, offset, seq)
                if found is None:
                    break  # a torn tail: nothing valid follows
                # damage in the middle: keep what follows; the records in between are unreadable
                next_offset, next_seq = found
                for missing in range(seq, next_seq):
                    segment.offsets.append(offset)
                    self._damaged.add(missing)
                offset, seq = next_offset, next_seq
                continue
            segment.offsets.append(offset)
            offset, seq = end, seq + 1
        if offset < len(data):
            with open(path, "r+b") as handle:
                handle.truncate(offset)
                if self.fsync != "never":
                    os.fsync(handle.fileno())
            self.truncated += 1
        segment.end = offset
        return segment

    def _recount(self) -> None:
        self.count = self.bytes = 0
        previous = None
        for segment in self._segments:
            if previous is not None and previous.count and segment.first > previous.last + 1:
                self._damaged.update(range(previous.last + 1, segment.first))  # a damaged file was cut
            previous = segment if segment.count else previous
            for index in range(segment.count):
                if segment.first + index > self.head:
                    self.count += 1
                    self.bytes += segment.size_of(index)


def _valid_record_end(data: bytes, offset: int, seq: int) -> int | None:
    """The end of the record of sequence `seq` framed at `offset`, or None when it is not one."""
    if offset + RECORD_OVERHEAD > len(data):
        return None
    length, crc, stored_seq = _RECORD_HEADER.unpack_from(data, offset)
    end = offset + RECORD_OVERHEAD + length
    if stored_seq != seq or end > len(data) or crc != _crc(seq, data[offset + RECORD_OVERHEAD:end]):
        return None
    return end


def _resync(data: bytes, offset: int, seq: int) -> tuple[int, int] | None:
    """The first valid record after damage at `offset` (its offset and sequence), if any."""
    import numpy as np  # only on damage

    candidates = []
    for shift in range(8):  # the sequence field of a header, at every byte alignment
        start = offset + 1 + 8 + shift
        count = (len(data) - start) // 8
        if count <= 0:
            continue
        words = np.frombuffer(data, dtype="<u8", count=count, offset=start)
        hits = np.flatnonzero((words > seq) & (words < seq + (1 << 24)))
        candidates.extend((int(start + 8 * i - 8), int(words[i])) for i in hits)
    for position, found_seq in sorted(candidates):
        if _valid_record_end(data, position, found_seq) is not None:
            return position, found_seq
    return None


def _crc(seq: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(seq.to_bytes(8, "little")))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]

"""The store-and-forward buffer: in order, crash-safe, bounded with exact drop counts."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from edge_engine.buffer import RECORD_OVERHEAD, BufferError, StoreForwardBuffer


def seqs(buffer):
    return [s for s, _ in buffer.read_from(0, 10 ** 6, raw=True)]


def test_append_read_ack_and_values_keep_types(tmp_path):
    with StoreForwardBuffer(tmp_path, fsync="always") as buffer:
        record = {"flow": "alerts", "n": 2, "cols": [np.array([1.5, 2.5]), ["a", "b"]]}
        assert buffer.append(record) == 1 and buffer.append("second") == 2
        (s1, r1), (s2, r2) = buffer.read_from(1)
        assert (s1, s2, r2) == (1, 2, "second") and np.array_equal(r1["cols"][0], record["cols"][0])
        assert buffer.read_from(2) == [(2, "second")] and buffer.read_from(3) == []
        assert buffer.ack(1) == 1 and buffer.read_from(0) == [(2, "second")]
        assert buffer.resume_info()["first"] == 2 and buffer.resume_info()["last"] == 2


def test_sequence_numbers_survive_restart_even_when_all_acked(tmp_path):
    buffer = StoreForwardBuffer(tmp_path, segment_bytes=1024)
    for i in range(50):
        buffer.append(b"x" * 100)
    buffer.ack(50)
    log = buffer.log_id
    buffer.close()
    reopened = StoreForwardBuffer(tmp_path)
    assert reopened.log_id == log and len(reopened) == 0 and reopened.append("next") == 51
    assert len(list(tmp_path.glob("seg-*.log"))) <= 2  # acknowledged segments are deleted


def test_torn_tail_is_truncated_and_earlier_records_kept(tmp_path):
    buffer = StoreForwardBuffer(tmp_path, fsync="never")
    for i in range(10):
        buffer.append({"i": i, "pad": "p" * 40})
    os.close(buffer._fd)  # the process dies: no close(), no state saved
    segment = max(tmp_path.glob("seg-*.log"))
    size = segment.stat().st_size
    with open(segment, "r+b") as handle:  # … in the middle of writing record 10
        handle.truncate(size - 17)
    reopened = StoreForwardBuffer(tmp_path)
    assert seqs(reopened) == list(range(1, 10)) and reopened.truncated == 1
    assert reopened.append("after") == 10  # the torn record's number was never handed out
    assert reopened.read_from(10) == [(10, "after")]
    reopened.close()
    with open(max(tmp_path.glob("seg-*.log")), "r+b") as handle:  # lose a record that WAS handed out
        handle.truncate(handle.seek(0, 2) - 3)
    again = StoreForwardBuffer(tmp_path)
    assert seqs(again) == list(range(1, 10)) and again.append("later") == 11  # 10 is never reused


def test_garbage_tail_and_torn_segment_header(tmp_path):
    buffer = StoreForwardBuffer(tmp_path, segment_bytes=1024)
    for i in range(30):
        buffer.append(b"y" * 100)
    buffer.close()
    last = max(tmp_path.glob("seg-*.log"))
    with open(last, "ab") as handle:
        handle.write(os.urandom(50))
    (tmp_path / "seg-99999999999999999999.log").write_bytes(b"SQLB")  # torn while being created
    reopened = StoreForwardBuffer(tmp_path)
    assert seqs(reopened) == list(range(1, 31)) and reopened.append(b"z") == 31


def test_damage_in_the_middle_is_skipped_and_counted_never_reused(tmp_path):
    buffer = StoreForwardBuffer(tmp_path, segment_bytes=1 << 20)
    for i in range(20):
        buffer.append(bytes([i]) * 64)
    buffer.close()
    segment = max(tmp_path.glob("seg-*.log"))
    data = bytearray(segment.read_bytes())
    offset = 32 + 5 * (RECORD_OVERHEAD + 66)  # inside record 6
    data[offset + 20] ^= 0xFF
    segment.write_bytes(bytes(data))
    reopened = StoreForwardBuffer(tmp_path)
    assert seqs(reopened) == [s for s in range(1, 21) if s != 6]
    assert reopened.damaged == 1 and reopened.append(b"new") == 21


def test_overflow_drops_oldest_and_counts_exactly_across_restarts(tmp_path):
    buffer = StoreForwardBuffer(tmp_path, max_records=10, segment_bytes=1024)
    for i in range(25):
        buffer.append(i)
    assert buffer.dropped == 15 and seqs(buffer) == list(range(16, 26))
    buffer.close()
    buffer = StoreForwardBuffer(tmp_path, max_records=10, segment_bytes=1024)
    assert buffer.dropped == 15
    for i in range(5):
        buffer.append(i)
    assert buffer.dropped == 20 and seqs(buffer) == list(range(21, 31))
    buffer.ack(25)
    assert buffer.dropped == 20 and len(buffer) == 5


def test_dropped_records_that_reached_the_federation_leave_the_count(tmp_path):
    buffer = StoreForwardBuffer(tmp_path, max_records=4)
    for i in range(10):           # 1..6 dropped, 7..10 held
        buffer.append(i)
    assert buffer.dropped == 6 and [buffer.dropped_unacked(s) for s in (1, 6, 7)] == [True, True, False]
    buffer.ack(8)                 # an ack past a gap says nothing about the records in it
    assert buffer.dropped == 6 and not buffer.dropped_unacked(3)
    for i in range(4):            # 11..14; 9, 10 dropped
        buffer.append(i)
    assert buffer.dropped == 8
    buffer.ack(12, sent=[9, 10, 11, 13])   # 9 and 10 had been sent before they were dropped
    assert buffer.dropped == 6 and seqs(buffer) == [13, 14]
    buffer.close()
    assert StoreForwardBuffer(tmp_path, max_records=4).dropped == 6    # persisted


def test_overflow_by_bytes_and_drop_newest(tmp_path):
    size = RECORD_OVERHEAD + 100
    buffer = StoreForwardBuffer(tmp_path / "a", max_bytes=3 * size)
    for i in range(5):
        buffer.append_bytes(b"b" * 100)
    assert len(buffer) == 3 and buffer.dropped == 2 and buffer.bytes == 3 * size
    with pytest.raises(BufferError):
        buffer.append_bytes(b"b" * (3 * size))
    newest = StoreForwardBuffer(tmp_path / "b", max_records=3, overflow="drop_newest")
    assert [newest.append(i) for i in range(5)] == [1, 2, 3, None, None]
    assert newest.dropped == 2 and seqs(newest) == [1, 2, 3]
    newest.close()
    assert StoreForwardBuffer(tmp_path / "b", max_records=3, overflow="drop_newest").dropped == 2


def test_smaller_capacity_on_restart_drops_and_counts(tmp_path):
    buffer = StoreForwardBuffer(tmp_path)
    for i in range(10):
        buffer.append(i)
    buffer.close()
    smaller = StoreForwardBuffer(tmp_path, max_records=4)
    assert smaller.dropped == 6 and seqs(smaller) == [7, 8, 9, 10]


def test_read_limits(tmp_path):
    buffer = StoreForwardBuffer(tmp_path, segment_bytes=1024)
    for i in range(40):
        buffer.append_bytes(b"r" * 90)
    assert seqs(buffer)[:3] == [1, 2, 3]
    assert [s for s, _ in buffer.read_from(15, 4, raw=True)] == [15, 16, 17, 18]
    assert len(buffer.read_from(1, 100, max_bytes=200, raw=True)) == 2
    assert len(buffer.read_from(1, 100, max_bytes=1, raw=True)) == 1  # always at least one
    assert buffer.read_from(3, 1, raw=True) == [(3, b"r" * 90)]


def test_closed_buffer_and_bad_arguments(tmp_path):
    buffer = StoreForwardBuffer(tmp_path)
    buffer.close()
    buffer.close()
    with pytest.raises(BufferError):
        buffer.append(1)
    with pytest.raises(ValueError):
        StoreForwardBuffer(tmp_path, overflow="drop_random")
    with pytest.raises(ValueError):
        StoreForwardBuffer(tmp_path, fsync="sometimes")


def test_torn_state_slot_falls_back_and_both_torn_recovers_from_segments(tmp_path):
    buffer = StoreForwardBuffer(tmp_path, max_records=5)
    for i in range(8):
        buffer.append(i)
    buffer.ack(4)
    log = buffer.log_id
    buffer.close()
    slots = sorted(tmp_path.glob("state.*"), key=lambda p: p.stat().st_mtime_ns)
    slots[-1].write_bytes(b'{"format": 1, "coun')  # the newest write was torn
    reopened = StoreForwardBuffer(tmp_path, max_records=5)
    assert not reopened.recovered and reopened.dropped == 3 and seqs(reopened) == [5, 6, 7, 8]
    reopened.close()
    for slot in tmp_path.glob("state.*"):
        slot.write_bytes(b"garbage")
    rebuilt = StoreForwardBuffer(tmp_path, max_records=5)
    assert rebuilt.recovered and rebuilt.log_id == log and rebuilt.append(9) == 9
    assert seqs(rebuilt)[-1] == 9


CHILD = r"""
import sys
from edge_engine.buffer import StoreForwardBuffer
buffer = StoreForwardBuffer(sys.argv[1], max_records=500, fsync="never", segment_bytes=4096)
i = 0
while True:
    seq = buffer.append({"i": i, "pad": "q" * (i % 97)})
    print(seq, buffer.dropped, flush=True)
    i += 1
"""


def test_kill_9_while_appending_loses_nothing_that_was_appended(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE,
                             text=True, cwd=Path(__file__).resolve().parents[2])
    reported = []
    for line in child.stdout:
        reported.append(tuple(map(int, line.split())))
        if len(reported) >= 1500:
            break
    child.kill()
    child.wait()
    last_seq, dropped_then = reported[-1]
    buffer = StoreForwardBuffer(tmp_path, max_records=500)
    held = seqs(buffer)
    # every record whose append returned is there, in order, without holes; drops add up exactly
    assert held == list(range(held[0], held[-1] + 1)) and held[-1] >= last_seq
    assert buffer.dropped + len(held) == held[-1]
    assert buffer.dropped >= dropped_then


# -- model-based: random appends, acks, reopens and torn writes ----------------------------------
class BufferMachine(RuleBasedStateMachine):
    overflow = "drop_oldest"
    MAX_RECORDS, MAX_BYTES = 8, 8 * (RECORD_OVERHEAD + 40)

    @initialize()
    def start(self):
        self.directory = tempfile.mkdtemp(prefix="sqlbuf-")
        self.live: list[tuple[int, bytes]] = []
        self.dropped = 0
        self.next = 1
        self.buffer = self.open()

    def open(self):
        return StoreForwardBuffer(self.directory, max_records=self.MAX_RECORDS, max_bytes=self.MAX_BYTES,
                                  overflow=self.overflow, fsync="never", segment_bytes=1024)

    def teardown(self):
        if hasattr(self, "buffer"):
            self.buffer.close()
            for name in os.listdir(self.directory):
                os.unlink(os.path.join(self.directory, name))
            os.rmdir(self.directory)

    def fits(self, extra_records, extra_bytes):
        used = sum(RECORD_OVERHEAD + len(p) for _, p in self.live)
        return len(self.live) + extra_records <= self.MAX_RECORDS and used + extra_bytes <= self.MAX_BYTES

    @rule(payload=st.binary(max_size=80))
    def append(self, payload):
        size = RECORD_OVERHEAD + len(payload)
        seq = self.buffer.append_bytes(payload)
        if self.overflow == "drop_newest" and not self.fits(1, size):
            assert seq is None
            self.dropped += 1
            return
        while self.live and not self.fits(1, size):
            self.live.pop(0)
            self.dropped += 1
        assert seq == self.next
        self.live.append((seq, payload))
        self.next += 1

    @rule(data=st.data())
    def ack(self, data):
        upto = data.draw(st.integers(0, self.next + 1))
        self.buffer.ack(upto)
        self.live = [(s, p) for s, p in self.live if s > upto]

    @rule()
    def reopen(self):
        self.buffer.close()
        self.buffer = self.open()

    @precondition(lambda self: self.next > 1)
    @rule(cut=st.integers(1, RECORD_OVERHEAD + 30))
    def crash_during_append(self, cut):
        """A process killed while writing a record: part of its bytes reached the file."""
        self.buffer.close()
        segment = max(Path(self.directory).glob("seg-*.log"))
        header = (RECORD_OVERHEAD + 30).to_bytes(4, "little") + b"\0" * 4 + self.next.to_bytes(8, "little")
        with open(segment, "ab") as handle:
            handle.write((header + b"w" * 30)[:cut])
        self.buffer = self.open()

    @invariant()
    def matches_model(self):
        if not hasattr(self, "buffer"):
            return
        assert self.buffer.read_from(0, 10 ** 6, raw=True) == self.live
        assert self.buffer.dropped == self.dropped
        assert self.buffer.next_seq == self.next
        assert len(self.buffer) == len(self.live)


class DropNewestMachine(BufferMachine):
    overflow = "drop_newest"


TestBufferModel = BufferMachine.TestCase
TestBufferModel.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestDropNewestModel = DropNewestMachine.TestCase
TestDropNewestModel.settings = settings(max_examples=30, stateful_step_count=40, deadline=None)

"""federation/heartbeats.py on SQLite: a flush of many edges' beats is written in slices with the
event loop free between them (10,000 edges' beats held every edge's frames in one piece), every
beat written; a flush cancelled halfway (the federation stopping) keeps what it had not written;
a stop lets the flush in flight finish and writes each beat once."""
from __future__ import annotations

import asyncio
import threading
import time

from federation import heartbeats
from federation.heartbeats import HeartbeatBuffer
from federation.registry import Heartbeat, Registry

DEVICES = 3 * heartbeats.FLUSH_SLICE + 7


def _registry(tmp_path) -> Registry:
    registry = Registry(tmp_path / "registry.sqlite3")
    registry.add_devices((f"d{i}", {}, {}, f"hash{i}") for i in range(DEVICES))
    return registry


def _last_seen(registry: Registry) -> dict[str, float | None]:
    return dict(registry._conn.execute("SELECT id, last_seen FROM devices"))


async def test_a_large_flush_is_written_in_slices_with_the_loop_free_between_them(tmp_path):
    registry = _registry(tmp_path)
    buffer = HeartbeatBuffer(registry)
    for i in range(DEVICES):
        buffer.add(Heartbeat(f"d{i}", 1000.0 + i, {"cpu_percent": i}, 0))
    commits = []
    registry._conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.ensure_future(other_work())
    await asyncio.sleep(0)
    before = turns
    written = await buffer.flush_off_loop()
    other.cancel()
    assert written == DEVICES and len(buffer) == 0
    assert len(commits) == -(-DEVICES // heartbeats.FLUSH_SLICE)   # one transaction per slice
    assert turns - before >= len(commits) - 1                       # the loop ran between slices
    assert _last_seen(registry) == {f"d{i}": 1000.0 + i for i in range(DEVICES)}
    assert registry.get_device(f"d{DEVICES - 1}").health == {"cpu_percent": DEVICES - 1}


async def test_a_flush_cancelled_between_slices_keeps_the_beats_it_had_not_written(tmp_path):
    registry = _registry(tmp_path)
    buffer = HeartbeatBuffer(registry)
    for i in range(DEVICES):
        buffer.add(Heartbeat(f"d{i}", 1000.0 + i, None, 0))
    flush = asyncio.ensure_future(buffer.flush_off_loop())
    await asyncio.sleep(0)     # the first slice is written, the flush waits for its next turn
    flush.cancel()
    try:
        await flush
    except asyncio.CancelledError:
        pass
    written = {d for d, at in _last_seen(registry).items() if at is not None}
    assert 0 < len(written) < DEVICES
    assert len(buffer) == DEVICES - len(written)   # the rest waits for the next (last) flush
    assert buffer.flush() == DEVICES - len(written)
    assert _last_seen(registry) == {f"d{i}": 1000.0 + i for i in range(DEVICES)}


class _SlowOffLoop:
    """A registry whose writes run in a thread and take a while (PostgreSQL under load): counts
    every beat written, by whom."""

    def __init__(self, write_s: float):
        self.write_s = write_s
        self.written: list[tuple[str, str]] = []
        self.writing = None

    def _write(self, beats, how):
        if self.writing is not None:
            self.writing.set()
        time.sleep(self.write_s)
        self.written += [(b.device_id, how) for b in beats]
        return len(beats)

    async def record_heartbeats_off_loop(self, beats):
        return await asyncio.to_thread(self._write, list(beats), "thread")

    def record_heartbeats(self, beats):
        return self._write(list(beats), "last")

    def heartbeats_heard(self, beats):
        pass


async def test_a_stop_during_a_flush_lets_it_finish_and_writes_each_beat_once():
    """A stop used to cancel the flush in flight (its thread went on writing) and write the same
    beats again at once: twice the write, behind the first one's row locks."""
    registry = _SlowOffLoop(write_s=0.6)
    registry.writing = threading.Event()
    buffer = HeartbeatBuffer(registry, interval=0.05)
    for i in range(5):
        buffer.add(Heartbeat(f"d{i}", 1000.0 + i, None, 0))
    task = asyncio.ensure_future(buffer.run())
    await asyncio.to_thread(registry.writing.wait, 10)     # the flush is in its thread now
    buffer.add(Heartbeat("late", 2000.0, None, 0))          # heard meanwhile: the last flush writes it
    await buffer.stop(task)
    assert task.done()
    assert sorted(registry.written) == sorted([(f"d{i}", "thread") for i in range(5)] + [("late", "last")])

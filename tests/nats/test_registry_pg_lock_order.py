"""Two federation nodes writing the same device rows on PostgreSQL must wait for each other, never
deadlock. Seen at 10,000 edges on NATS during a deployment: node B's heartbeat batch (one UPDATE of
thousands of rows, locked in its plan's order) against node A writing the edges its lagging loop
gave up offline (then one transaction, one row after another in the order they dropped; OnlineFlips.flush).
Every multi-row write now takes its rows in id order (registry_pg_beats.lock_devices)."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest
from psycopg import errors as pg_errors

from federation.auth import provision
from federation.hub_support import OnlineFlips
from federation.records import Heartbeat
from federation.registry_pg import PgRegistry

pytestmark = pytest.mark.timeout(120)

DEVICES = [f"d{i:02d}" for i in range(20)]


@pytest.fixture
def nodes(pg_server):
    url = pg_server.new_database()
    opened = [PgRegistry(url), PgRegistry(url)]
    yield opened
    for registry in opened:
        registry.close()


class _Listener:
    """A registry listener hearing nothing but what a subclass overrides."""

    def online_changed(self, device_ids, online):
        pass

    def reset(self, devices):
        pass

    def device_changed(self, device):
        pass

    def device_removed(self, device_id):
        pass


class _BatchMidway(_Listener):
    """A listener of node A's registry: at A's first offline write (inside its transaction, a row
    locked) node B's heartbeat flush of every device starts in a thread, and A goes on only once
    B is under way, so B's batch meets A's transaction halfway."""

    def __init__(self, writer: PgRegistry, beats: list[Heartbeat]):
        self.writer, self.beats = writer, beats
        self.thread: threading.Thread | None = None
        self.errors: list[BaseException] = []

    def online_changed(self, device_ids, online):
        if self.thread is None and not online:
            self.thread = threading.Thread(target=self._flush, daemon=True)
            self.thread.start()
            time.sleep(0.5)

    def _flush(self):
        try:
            self.writer.record_heartbeats(self.beats)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)


async def test_one_nodes_offline_writes_and_the_others_heartbeat_batch_do_not_deadlock(nodes, monkeypatch):
    a, b = nodes
    for device in DEVICES:
        provision(a, device, {}, {})
        a.set_online(device, True)
    # B's flush, watched: a deadlock it loses is retried once inside record_heartbeats (and so
    # would pass unseen), so every attempt is counted here
    attempts: list[str] = []
    update = PgRegistry._update_beats

    def counted(self, rows):
        try:
            result = update(self, rows)
        except pg_errors.DeadlockDetected:
            attempts.append("deadlock")
            raise
        attempts.append("ok")
        return result

    monkeypatch.setattr(PgRegistry, "_update_beats", counted)
    at = time.time() + 1000.0
    midway = _BatchMidway(b, [Heartbeat(device, at, {"cpu": 1.0}, 7) for device in DEVICES])
    a.add_listener(midway, [])

    offline = OnlineFlips(a, lambda edge: False)
    offline.off_loop = None                   # the synchronous form: one row after another, listeners inside
    for device in reversed(DEVICES):          # the order edges happen to drop in, all in one turn
        offline.mark((device,))
    assert len(offline) == len(DEVICES)
    await asyncio.sleep(0.1)                  # the end of the turn: one transaction for them all
    assert len(offline) == 0 and midway.thread is not None
    await asyncio.to_thread(midway.thread.join, 30)
    assert not midway.thread.is_alive()

    assert midway.errors == []
    assert attempts == ["ok"], f"node B's heartbeat batch: {attempts}"
    # both writes landed in full (an oracle read afresh from the database)
    for device in map(b.get_device, DEVICES):
        assert device.online is False, device.id
        assert device.last_seen == pytest.approx(at)
        assert device.restarts == 7


class _Heard(_Listener):
    def __init__(self):
        self.online: dict[str, bool] = {}

    def online_changed(self, device_ids, online):
        self.online.update(dict.fromkeys(device_ids, online))


async def test_flips_waiting_for_the_change_lock_do_not_hold_the_event_loop(nodes, monkeypatch):
    """At 10,000 edges node A's loop was held 15 s waiting for PostgreSQL: each online/offline flip
    took the device-change lock every node's flips share, on the loop. Here node B holds that lock
    2 s while node A's hub flips 20 edges: A's loop keeps turning, the flips land in one batch once
    the lock is free (read back from B), and A's listeners hear them on the loop. The batch is
    written in slices (a transaction each: the lock held for one slice's rows at most)."""
    from federation import registry_pg_beats
    from federation.registry_pg import _CHANGE_LOCK_SQL

    monkeypatch.setattr(registry_pg_beats, "FLIP_SLICE", 6)

    a, b = nodes
    for device in DEVICES:
        provision(a, device, {}, {})
        a.set_online(device, True)
    heard = _Heard()
    a.add_listener(heard, [])
    holding, release = threading.Event(), threading.Event()

    def hold_the_lock():
        with b.transaction() as conn:
            conn.execute(_CHANGE_LOCK_SQL)
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_lock, daemon=True)
    holder.start()
    assert holding.wait(10)
    gone = set(DEVICES[:15])
    flips = OnlineFlips(a, lambda edge: edge not in gone)
    assert flips.off_loop is not None
    loop = asyncio.get_running_loop()
    flips.mark(reversed(DEVICES))
    worst, last = 0.0, loop.time()
    end = last + 2.0
    while loop.time() < end:   # 2 s of 10 ms ticks, each timed
        await asyncio.sleep(0.01)
        now = loop.time()
        worst, last = max(worst, now - last), now
    assert worst < 0.5, f"node A's loop was held {worst:.2f} s while its flips waited for the lock"
    assert not heard.online, "the flips were written while node B held the change lock"
    release.set()
    await flips.drain(20)
    holder.join(10)
    assert heard.online == {device: device not in gone for device in DEVICES}
    assert {d.id: d.online for d in b.get_devices(DEVICES)} == heard.online   # the oracle: the database
    assert flips.written == len(DEVICES) and flips.failures == 0


def test_a_heartbeat_batch_holds_no_row_while_it_encodes_and_is_written_in_slices(nodes, monkeypatch):
    """An edge's hello flips its row online from the event loop, so it must not wait for another
    node's heartbeat batch longer than that batch's statements take. At 10,000 edges one batch
    locked every row, then encoded thousands of health documents, then updated: node A's loop
    waited 3–7 s at a time in `set_online`. Here the encoding of B's batch is held until A's flip
    is done (or 10 s passed): before, the flip waited for the rows B had locked; now B encodes
    before it takes any. The batch is written in slices, every beat of it (read back)."""
    import json

    import psycopg.types.json as pg_json

    from federation import registry_pg_beats

    a, b = nodes
    for device in DEVICES:
        provision(a, device, {}, {})
        a.set_online(device, True)
    monkeypatch.setattr(registry_pg_beats, "BEAT_SLICE", 6, raising=False)
    encoding, release = threading.Event(), threading.Event()
    real_dumps = json.dumps

    def held_dumps(obj, *args, **kwargs):
        if "'marker': 'held'" in repr(obj):     # a health document, or the batch's beats as one
            encoding.set()
            release.wait(30)
        return real_dumps(obj, *args, **kwargs)

    monkeypatch.setattr(json, "dumps", held_dumps)
    pg_json.set_json_dumps(held_dumps)   # the adapters' encoder too (Jsonb), whichever one a batch uses
    try:
        at = time.time() + 1000.0
        beats = [Heartbeat(device, at, {"marker": "held", "cpu": i}, 3) for i, device in enumerate(DEVICES)]
        writer = threading.Thread(target=b.record_heartbeats, args=(beats,), daemon=True)
        writer.start()
        assert encoding.wait(30)
        flip = threading.Thread(target=a.set_online, args=(DEVICES[0], False), daemon=True)
        flip.start()
        flip.join(10)
        flipped_while_encoding = not flip.is_alive()
        release.set()
        writer.join(30)
        flip.join(30)
    finally:
        release.set()
        pg_json.set_json_dumps(real_dumps)
    assert not writer.is_alive() and not flip.is_alive()
    assert flipped_while_encoding, "node A's flip waited for the rows of node B's batch while B encoded"
    for i, device in enumerate(map(a.get_device, DEVICES)):
        assert device.last_seen == pytest.approx(at), device.id
        assert device.health == {"marker": "held", "cpu": i}
        assert device.restarts == 3
    assert a.get_device(DEVICES[0]).online is False and a.get_device(DEVICES[1]).online is True


def test_the_event_loop_gets_a_connection_while_the_nodes_threads_each_hold_one(nodes):
    """Beside the event loop, a node's threads use the registry at once: the heartbeat flush (or
    poll), two auth callout workers, the watcher's sweep. With a pool of 4 they could hold every
    connection, and the loop waited for one (node A's stall log at 10,000 edges: `_connection` in
    wait); the pool leaves the loop room."""
    a, _ = nodes
    provision(a, "d-pool", {}, {})
    holding, release = threading.Barrier(5), threading.Event()

    def hold():
        with a.transaction():
            holding.wait(10)
            release.wait(30)

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        holding.wait(10)   # every thread inside its transaction, a connection each
        assert a.get_device("d-pool").id == "d-pool"   # before: PoolTimeout after 3 s
    finally:
        release.set()
        for thread in threads:
            thread.join(30)

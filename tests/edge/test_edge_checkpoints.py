"""Autostart queries keep their state across restarts: checkpoints in the edge store, resumed
without publishing a row twice; a checkpoint of another version starts fresh and says so; a
query failing again and again is given up; a CSV replay starts where the checkpoints left off."""
from __future__ import annotations

import logging
import time

import numpy as np

import streamql
from edge_engine.autostart import AutostartQuery, AutostartSpec
from edge_engine.buffer import StoreForwardBuffer
from edge_engine.checkpoints import CheckpointStore, source_positions
from edge_engine.drivers import CsvReplayDriver
from streamql.signals import ArraySignal, LiveSignal

LOG = logging.getLogger("test.checkpoints")
WINDOWS = "select stream of w from Vector of Real w where w in winagg(signal_stream('s'), 4, 4);"


def _until(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


class Edge:
    """An engine with a live signal, a buffer and a checkpoint store: an edge's parts, no daemon."""

    def __init__(self, root, text=WINDOWS, version="1.0.0"):
        self.engine = streamql.Engine()
        self.signal = self.engine.add_signal("s", LiveSignal("s", "Real"))
        self.buffer = StoreForwardBuffer(root / "buffer")
        self.checkpoints = CheckpointStore(root)
        self.spec = AutostartSpec("b", "autostart/w.sql", 1, text, "b/w", version)

    def emit(self, spec, n, cols, names, progress=None):
        record = {"flow": spec.flow, "n": n, "cols": cols, "names": names}
        if progress is not None:
            record["progress"] = progress
        return self.buffer.append(record)

    def start(self, **options) -> AutostartQuery:
        query = AutostartQuery(self.engine, self.spec, self.emit, log=LOG, checkpoints=self.checkpoints,
                               checkpoint_interval_s=60, buffer=self.buffer, **options).start()
        assert query.ready.wait(5)
        return query

    def windows(self) -> list:
        return [list(row[0]) for _, record in self.buffer.read_from(1, 10_000)
                for row in zip(*record["cols"])]


def test_a_graceful_stop_and_restart_resumes_the_half_filled_window(tmp_path):
    edge = Edge(tmp_path)
    query = edge.start()
    edge.signal.push_batch(np.arange(6.0))            # one window, and two readings waiting
    _until(lambda: query.rows == 1)
    query.stop()
    assert query.join(5) and query.status == "stopped"
    edge.signal = edge.engine.add_signal("s", LiveSignal("s", "Real"))
    again = edge.start()
    assert again.checkpoint == "restored" and again.rows == 1
    edge.signal.push_batch(np.arange(6.0, 12.0))
    _until(lambda: again.rows == 3)
    again.stop()
    again.join(5)
    assert edge.windows() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_rows_published_after_the_last_checkpoint_are_not_published_again(tmp_path):
    """A kill between records and the next checkpoint: the restored query produces those rows
    again (a replayed signal), and they are counted, not appended again."""
    edge = Edge(tmp_path)
    data = [float(i) for i in range(40)]
    edge.engine.add_signal("s", ArraySignal("s", np.array(data), batch_size=4))   # a window a batch

    class KilledAfterFirst(CheckpointStore):       # the checkpoints after the first never reach the disk
        def save(self, name, data):
            if not self.saved:
                super().save(name, data)
            self.saved += 1

    edge.checkpoints = KilledAfterFirst(tmp_path / "k")
    appended = []

    def emit(spec, n, cols, names, progress=None):
        seq = edge.emit(spec, n, cols, names, progress)
        appended.append(seq)
        if len(appended) == 3:
            query.stop(graceful=False)             # the kill: three records out, one checkpoint kept
        return seq

    query = AutostartQuery(edge.engine, edge.spec, emit, log=LOG, checkpoints=edge.checkpoints,
                           checkpoint_interval_s=60, buffer=edge.buffer).start()
    assert query.join(5) and len(edge.windows()) == 3
    again = edge.start()
    assert again.checkpoint == "restored (2 rows published after it)"
    again.join(5)
    assert edge.windows() == [data[i:i + 4] for i in range(0, 40, 4)]


def test_a_checkpoint_of_another_version_starts_fresh_and_health_says_so(tmp_path):
    edge = Edge(tmp_path)
    query = edge.start()
    edge.signal.push_batch(np.arange(6.0))
    _until(lambda: query.rows == 1)
    query.stop()
    query.join(5)
    upgraded = Edge(tmp_path / "other", version="2.0.0")
    upgraded.checkpoints = edge.checkpoints
    fresh = upgraded.start()
    assert fresh.checkpoint.startswith("fresh: ") and "another query" in fresh.checkpoint
    assert fresh.describe()["checkpoint"] == fresh.checkpoint and fresh.rows == 0
    fresh.stop()
    fresh.join(5)


def test_a_query_that_keeps_failing_is_given_up_and_health_says_so(tmp_path):
    edge = Edge(tmp_path, text="select stream of 1 / 0 from Real x where x in signal_stream('nope');")
    errors = []
    query = AutostartQuery(edge.engine, edge.spec, edge.emit, log=LOG, on_error=errors.append,
                           backoff_initial_s=0.01, backoff_max_s=0.02, max_failures=3).start()
    assert query.join(5)
    described = query.describe()
    assert described["status"] == "gave up" and described["failures"] == 3 and query.restarts == 2
    assert "gave up after 3 failures" in errors[-1]


def test_a_csv_replay_resumes_at_the_checkpoints_position(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("t,v\n" + "".join(f"{i * 0.1},{i}\n" for i in range(20)))
    driver = CsvReplayDriver("r", path, column="v", time_column="t", speed=float("inf"))
    driver.resume_at(source_positions({"operators": {"source#0": {"signal": "r", "readings": 7},
                                                     "source#1": {"signal": "r", "readings": 9}}})["r"])
    reader = driver.signal.open()
    driver.poll(0.0)
    batch = next(reader)
    assert batch.values.tolist() == [float(i) for i in range(7, 20)] and driver.signal.position_base == 7
    assert reader.position == 7 and driver.signal.open().position == 20   # a late reader starts at 20


def test_a_subscriber_of_a_local_flow_resumes_after_its_last_element(tmp_path):
    """Two autostart queries: one publishes a replayed signal into a local flow, the other
    subscribes to it. Killed, the publisher's last checkpoint on disk is its first one (4 elements)
    while the subscriber had read all 40; restarted, the publisher publishes elements 5…40 again
    and the subscriber, resumed by the flow's sequence numbers, publishes none of them again."""
    data = [float(i) for i in range(40)]
    publisher_text = "select stream of x from Real x where x in publish(signal_stream('s'), 'local');"
    subscriber_text = "select stream of x from Real x where x in subscribe('local');"

    class KilledAfterFirst(CheckpointStore):   # the publisher's later checkpoints never reach the disk
        def save(self, name, data):
            if not self.saved:
                super().save(name, data)
            self.saved += 1

    buffer = StoreForwardBuffer(tmp_path / "buffer")

    def emit(spec, n, cols, names, progress=None):
        record = {"flow": spec.flow, "n": n, "cols": cols, "names": names}
        if progress is not None:
            record["progress"] = progress
        return buffer.append(record)

    def run(publisher_store, subscriber_store):
        engine = streamql.Engine()
        engine.add_signal("s", ArraySignal("s", np.array(data), batch_size=4))
        subscriber = AutostartQuery(engine, AutostartSpec("b", "autostart/sub.sql", 1, subscriber_text, "b/sub", "1"),
                                    emit, log=LOG, checkpoints=subscriber_store, checkpoint_interval_s=60,
                                    buffer=buffer).start()
        assert subscriber.ready.wait(5)            # open before anything is published
        publisher = AutostartQuery(engine, AutostartSpec("b", "autostart/pub.sql", 1, publisher_text, "b/pub", "1"),
                                   emit, log=LOG, checkpoints=publisher_store, checkpoint_interval_s=60,
                                   buffer=buffer).start()
        assert publisher.join(10)                  # the replay ends: the publisher is done
        time.sleep(0.5)                            # the subscriber takes what was published
        subscriber.stop()
        assert subscriber.join(5)
        return publisher, subscriber

    def subscribed() -> list:
        return [v for _, record in buffer.read_from(1, 10_000) if record["flow"] == "b/sub"
                for v in record["cols"][0]]

    run(KilledAfterFirst(tmp_path / "pub"), CheckpointStore(tmp_path / "sub"))
    assert subscribed() == data
    publisher, subscriber = run(CheckpointStore(tmp_path / "pub"), CheckpointStore(tmp_path / "sub"))
    assert publisher.checkpoint.startswith("restored") and subscriber.checkpoint.startswith("restored")
    assert subscribed() == data                    # nothing published twice

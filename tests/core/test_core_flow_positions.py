"""A checkpointed subscriber of a flow resumes after the last element it read, by the flow's
sequence numbers, when its checkpointed publisher resumes from an earlier checkpoint of its own
(the elements published again are skipped, none is missed); a publisher that starts afresh
starts a new numbering, and the subscriber then skips nothing."""
from __future__ import annotations

import threading
import time

import numpy as np

import streamql
from streamql.checkpoint import QueryState, decode, encode

PUBLISHER = "select stream of x from Real x where x in publish(signal_stream('src'), 'f');"
SUBSCRIBER = "select stream of x from Real x where x in subscribe('f');"
VALUES = [float(v) for v in range(1, 41)]


class _Crash(BaseException):
    pass


class Subscriber:
    """SUBSCRIBER run in a thread, its snapshot kept at every cut with the rows read by then."""

    def __init__(self, engine, restore: dict | None = None):
        self.rows: list = []
        self.saved: tuple[bytes, int] | None = None

        def on_cut(states: QueryState) -> None:
            self.saved = (encode(states.snapshot()), len(self.rows))
        self.states = QueryState(restore=restore, on_cut=on_cut, interval_s=0)
        self.result = engine.query(SUBSCRIBER, checkpoint=self.states)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        hub = engine.flows.hub("f")
        deadline = time.monotonic() + 10
        while hub.reader_count == 0 and time.monotonic() < deadline:
            time.sleep(0.005)

    def _run(self):
        try:
            for row in self.result:
                self.rows.append(row)
        except Exception:  # noqa: BLE001 - closed by the test
            pass

    def wait_for(self, n: int) -> None:
        deadline = time.monotonic() + 20
        while len(self.rows) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)   # a few idle ticks: the last cut (and snapshot) after the last row
        assert len(self.rows) >= n, (len(self.rows), n)

    def stop(self):
        self.result.close()
        self.thread.join(5)


def publish_all(engine, restore: dict | None = None, keep_at: int | None = None) -> dict | None:
    """Run PUBLISHER over the replay to its end; its snapshot at its `keep_at`-th cut."""
    kept = {}

    def on_cut(states: QueryState) -> None:
        if states.cuts == keep_at:
            kept["snapshot"] = decode(encode(states.snapshot()))
    rows = list(engine.query(PUBLISHER, checkpoint=QueryState(restore=restore, on_cut=on_cut, interval_s=0)))
    assert rows   # the publisher passes its elements on
    return kept.get("snapshot")


def engine_with_source() -> streamql.Engine:
    engine = streamql.Engine()
    engine.add_signal("src", streamql.signals.ArraySignal("src", np.asarray(VALUES), batch_size=3))
    return engine


def test_a_restored_subscriber_resumes_after_its_last_element_when_the_publisher_repeats():
    # first run: the publisher's checkpoint is at its 5th cut (12 elements), the subscriber reads all 40
    first = engine_with_source()
    subscriber = Subscriber(first)
    publisher_snapshot = publish_all(first, keep_at=5)
    subscriber.wait_for(len(VALUES))
    subscriber.stop()
    saved, read = subscriber.saved
    assert read == len(VALUES) and publisher_snapshot["operators"]["publish#0"]["sequence"] == 12

    # the restart: the subscriber restored (40 read), the publisher restored at 12: it publishes
    # 13…40 again, all of which the subscriber had read
    restart = engine_with_source()
    resumed = Subscriber(restart, restore=decode(saved))
    publish_all(restart, restore=publisher_snapshot)
    time.sleep(0.5)
    resumed.stop()
    assert resumed.rows == []   # nothing again
    assert "source#0" in resumed.states.restored_keys


def test_a_subscriber_checkpointed_midway_gets_exactly_the_rest():
    # first run: the subscriber's checkpoint is taken when it has read 20 of the 40 elements
    first = engine_with_source()
    subscriber = Subscriber(first)
    publisher_snapshot = publish_all(first, keep_at=3)   # the publisher's checkpoint: 6 elements
    subscriber.wait_for(len(VALUES))
    subscriber.stop()
    # a snapshot of the subscriber with 20 rows read: restore it by running it over the first 20
    midway = engine_with_source()
    early = Subscriber(midway)
    midway_hub = midway.flows.hub("f")
    midway_hub.declare_sequence(publisher_snapshot["operators"]["publish#0"]["epoch"], 0)
    midway_hub.push_batch(np.asarray(VALUES[:20]))
    early.wait_for(20)
    early.stop()
    saved, read = early.saved
    assert read == 20

    restart = engine_with_source()
    resumed = Subscriber(restart, restore=decode(saved))
    publish_all(restart, restore=publisher_snapshot)   # publishes 7…40 again
    resumed.wait_for(20)
    resumed.stop()
    assert early.rows[:read] + resumed.rows == VALUES   # neither repeated nor skipped


def test_a_publisher_starting_afresh_is_a_new_numbering_the_subscriber_skips_nothing_of():
    first = engine_with_source()
    subscriber = Subscriber(first)
    publish_all(first)
    subscriber.wait_for(len(VALUES))
    subscriber.stop()
    saved, read = subscriber.saved
    restart = engine_with_source()
    resumed = Subscriber(restart, restore=decode(saved))
    publish_all(restart)   # no checkpoint of its own: a new epoch
    resumed.wait_for(len(VALUES))
    resumed.stop()
    assert resumed.rows == VALUES

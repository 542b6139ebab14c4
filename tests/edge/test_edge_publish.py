"""Autostart results to the federation: buffered, in order, none lost or duplicated, overflow counted."""
import asyncio

import pytest

from edge_engine.testing import FakeFederation, make_bundle

COUNTER = "select stream of x from Integer x where x in diota(0.002, 1, 1000000);\n"


@pytest.fixture
def counter_bundle(tmp_path, keys):
    """A bundle whose autostart query publishes 1, 2, 3, … (one record per row, ~500 a second)."""
    return make_bundle(tmp_path, name="count", key=keys[0], autostart={"autostart/counter.sql": COUNTER},
                       requirements={})


async def wait_until(predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def assert_contiguous(values):
    assert values == list(range(1, len(values) + 1)), "a value is missing, repeated or out of order"


async def test_a_cut_link_loses_and_duplicates_nothing(fed, edge_config, start_edge, counter_bundle):
    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    assert (await conn.deploy("d-1", counter_bundle, "count", "1.0.0")).t == "ack"
    await wait_until(lambda: len(fed.values("wl-1")) > 100)
    await conn.drop()                                    # the socket dropped
    await asyncio.sleep(0.3)
    conn = await fed.connection("wl-1", newer_than=conn)
    await wait_until(lambda: len(fed.values("wl-1")) > 400)
    await fed.stop()                                     # the federation stopped for a while
    offline_from = daemon.buffer.last_seq
    await wait_until(lambda: daemon.buffer.last_seq > offline_from + 200)   # it keeps running and buffering
    await fed.start()
    await fed.connection("wl-1", newer_than=conn)
    target = daemon.buffer.last_seq
    await wait_until(lambda: fed.receiver.last("wl-1") >= target)
    values = fed.values("wl-1")
    assert len(values) >= target                         # one row per record
    assert_contiguous(values)
    assert daemon.buffer.dropped == 0 and fed.receiver.missing("wl-1") == 0
    assert [r["seq"] for r in fed.published["wl-1"]] == list(range(1, len(fed.published["wl-1"]) + 1))


async def test_overflow_drops_the_oldest_and_the_count_is_exact(fed, edge_config, start_edge, counter_bundle):
    daemon = await start_edge(edge_config(buffer={"max_records": 60}))
    conn = await fed.connection("wl-1")
    await conn.deploy("d-1", counter_bundle, "count", "1.0.0")
    await wait_until(lambda: len(fed.values("wl-1")) > 50)
    await fed.stop()
    await wait_until(lambda: daemon.buffer.dropped > 200)     # hundreds of records into a buffer of 60
    assert 55 <= daemon.buffer.count <= 60                    # (an append may be under way)
    await fed.start()
    conn = await fed.connection("wl-1", newer_than=conn)
    assert conn.hello["resume"]["dropped"] > 200
    target = daemon.buffer.last_seq + 50
    await wait_until(lambda: fed.receiver.last("wl-1") >= target)
    start = len(conn.frames)
    await conn.send("undeploy", did="u-1", model="count")          # the query stops: counts settle
    assert (await conn.answer("u-1", start)).t == "ack"
    await wait_until(lambda: daemon.buffer.count == 0 and daemon.publisher.unacked == 0)
    values = fed.values("wl-1")
    # what arrived is exactly everything but the dropped records, in order, each once
    assert len(values) == len(set(values)) and values == sorted(values)
    missing_values = set(range(1, values[-1] + 1)) - set(values)
    assert fed.receiver.missing("wl-1") == len(missing_values) == daemon.buffer.dropped > 200
    assert fed.published["wl-1"][-1]["dropped"] <= daemon.buffer.dropped
    health = await conn.next("health", start=len(conn.frames))
    assert health["buffer"]["dropped"] == daemon.buffer.dropped


async def test_at_most_256_records_are_unacknowledged(edge_config, start_edge, counter_bundle):
    fed = FakeFederation(heartbeat_s=0.5, ack_publish=False)
    await fed.start()
    try:
        daemon = await start_edge(edge_config(federation=fed.url))
        conn = await fed.connection("wl-1")
        await conn.deploy("d-1", counter_bundle, "count", "1.0.0")
        await wait_until(lambda: daemon.buffer.count > 420)    # far more records than the window
        await asyncio.sleep(0.1)
        assert fed.publish_frames["wl-1"] == 256 and daemon.publisher.unacked == 256
        await conn.send("publish_ack", upto=100)
        await wait_until(lambda: fed.publish_frames["wl-1"] >= 356)
        await asyncio.sleep(0.2)
        assert fed.publish_frames["wl-1"] == 356
        await conn.send("publish_ack", upto=50, log="some-other-log")     # not ours: ignored
        await asyncio.sleep(0.2)
        assert daemon.buffer.acked == 100
    finally:
        await fed.stop()


async def test_unacknowledged_records_are_sent_again_and_deduplicated(edge_config, start_edge, counter_bundle):
    fed = FakeFederation(heartbeat_s=0.5, ack_publish=False)
    await fed.start()
    try:
        daemon = await start_edge(edge_config(federation=fed.url))
        conn = await fed.connection("wl-1")
        await conn.deploy("d-1", counter_bundle, "count", "1.0.0")
        await wait_until(lambda: fed.publish_frames.get("wl-1", 0) >= 256)
        # the federation forgets it accepted them (as if its acks and state were lost) and
        # drops the connection: the edge sends everything again from its oldest record
        fed.receiver.forget("wl-1")
        fed.published.clear()
        fed.ack_publish = True
        await conn.drop()
        await fed.connection("wl-1", newer_than=conn)
        target = daemon.buffer.last_seq
        await wait_until(lambda: fed.receiver.last("wl-1") >= target)
        assert_contiguous(fed.values("wl-1")[: target])
    finally:
        await fed.stop()

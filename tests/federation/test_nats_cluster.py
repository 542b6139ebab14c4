"""The nats-server fixtures themselves, and a client surviving the loss of one cluster server."""
from __future__ import annotations

import asyncio

import nats
import pytest

from tests.nats_servers import nats_cluster, nats_server  # noqa: F401  (fixtures)


async def test_one_server_with_jetstream(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="T", subjects=["t.>"])
        ack = await js.publish("t.a", b"x")
        assert ack.seq == 1
        assert nats_server.monitor("varz")["server_name"] == "n0"
    finally:
        await nc.close()


async def test_a_client_reconnects_to_another_server_when_its_server_is_killed(nats_cluster):
    """Connected to server 0 (the others in its list), it keeps publishing after server 0 is killed,
    and a subscriber on server 2 receives everything, each message once."""
    reconnected = asyncio.Event()

    async def on_reconnect():
        reconnected.set()

    publisher = await nats.connect(nats_cluster.urls, dont_randomize=True, reconnected_cb=on_reconnect,
                                   reconnect_time_wait=0.1, max_reconnect_attempts=-1)
    subscriber = await nats.connect(nats_cluster[2].url)
    try:
        assert publisher.connected_url.port == nats_cluster[0].port
        got: list[bytes] = []

        async def collect(msg):
            got.append(msg.data)

        sub = await subscriber.subscribe("fleet.x", cb=collect)
        await subscriber.flush()
        await asyncio.sleep(0.3)              # the subscription's interest reaches the other routes
        for index in range(5):
            await publisher.publish("fleet.x", b"%d" % index)
        await publisher.flush()
        nats_cluster.kill(0)
        await asyncio.wait_for(reconnected.wait(), 10)
        assert publisher.connected_url.port in (nats_cluster[1].port, nats_cluster[2].port)
        for index in range(5, 10):
            await publisher.publish("fleet.x", b"%d" % index)
        await publisher.flush()
        for _ in range(50):
            if len(got) >= 10:
                break
            await asyncio.sleep(0.1)
        assert got == [b"%d" % index for index in range(10)]
        await sub.unsubscribe()
        nats_cluster.restart(0)
        assert nats_cluster[0].running
    finally:
        await publisher.close()
        await subscriber.close()

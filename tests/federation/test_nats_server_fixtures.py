"""The nats-server fixtures themselves, and a client surviving the loss of one cluster server."""
from __future__ import annotations

import asyncio

import nats

from tests.nats_servers import nats_cluster, nats_mqtt_server, nats_server  # noqa: F401  (fixtures)


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


async def _until(condition, step=None, timeout=15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting")
        if step is not None:
            await step()
        await asyncio.sleep(0.05)


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
        probed = asyncio.Event()

        async def collect(msg):
            if msg.data != b"probe":       # late probes (below) are not part of the count
                got.append(msg.data)
            else:
                probed.set()

        sub = await subscriber.subscribe("fleet.x", cb=collect)
        await subscriber.flush()
        # until the subscription's interest has crossed the route from server 2 to server 0
        await _until(probed.is_set, lambda: publisher.publish("fleet.x", b"probe"))
        for index in range(5):
            await publisher.publish("fleet.x", b"%d" % index)
        await publisher.flush()
        # core NATS is at most once: what server 0 still held when killed would be lost, so the
        # test kills it once the first five arrived (JetStream is what keeps records: test_nats_publish)
        await _until(lambda: len(got) >= 5)
        nats_cluster.kill(0)
        await asyncio.wait_for(reconnected.wait(), 10)
        assert publisher.connected_url.port in (nats_cluster[1].port, nats_cluster[2].port)
        for index in range(5, 10):
            await publisher.publish("fleet.x", b"%d" % index)
        await publisher.flush()
        await _until(lambda: len(got) >= 10)
        assert got == [b"%d" % index for index in range(10)]
        await sub.unsubscribe()
        nats_cluster.restart(0)
        assert nats_cluster[0].running
    finally:
        await publisher.close()
        await subscriber.close()


async def test_the_mqtt_listener_fixture_carries_mqtt_to_nats(nats_mqtt_server):
    import paho.mqtt.client as mqtt

    nc = await nats.connect(nats_mqtt_server.url)
    try:
        sub = await nc.subscribe("plain.topic")
        await nc.flush()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fixture-check")
        client.connect(*nats_mqtt_server.mqtt_address)
        client.loop_start()
        try:
            await asyncio.to_thread(client.publish("plain/topic", b"21.5", qos=1).wait_for_publish, 10)
            msg = await sub.next_msg(timeout=5)
            assert msg.data == b"21.5"
        finally:
            client.disconnect()
            client.loop_stop()
    finally:
        await nc.close()

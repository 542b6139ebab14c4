"""MQTT-only devices: a real MQTT client (paho-mqtt) on nats-server's MQTT listener, its device token
as the password through the federation's auth callout, its own topics only, and its readings read
by a StreamQL query on a gateway engine (signal kind `mqtt`, edge_engine/mqtt_signals.py)."""
from __future__ import annotations

import asyncio
import threading
import time

import paho.mqtt.client as mqtt
import pytest

import streamql
from edge_engine.mqtt_signals import parse_payload
from edge_engine.signals import build_drivers
from federation.auth import provision
from federation.nats_auth import mqtt_topic
from federation.nats_subjects import encode_token
from tests.federation.nats_secured import secured_nats


class MqttDevice:
    """A paho-mqtt client in its own network thread, connected with (device id, token)."""

    def __init__(self, address, device_id, token):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{encode_token(device_id)}-mqtt")   # NATS refuses "." in client ids
        self.client.username_pw_set(device_id, token)
        self.connack = None
        self.disconnected = threading.Event()
        self._connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.disconnected.set()
        self.address = address

    def _on_connect(self, client, userdata, flags, reason, properties):
        self.connack = reason
        self._connected.set()

    def connect(self, timeout=10.0):
        self.client.connect(*self.address, keepalive=10)
        self.client.loop_start()
        self._connected.wait(timeout)
        return self.connack

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


async def test_an_mqtt_device_publishes_readings_a_gateway_query_reads(tmp_path):
    async with secured_nats(tmp_path, mqtt=True, mqtt_gateways=("gw-1",)) as secured:
        boiler = provision(secured.registry, "boiler.1")        # an id escaped in its topic: boiler=2E1
        provision(secured.registry, "pump-2")
        gateway = provision(secured.registry, "gw-1")
        token_file = tmp_path / "gw.token"
        token_file.write_text(gateway.token + "\n")
        drivers = build_drivers([
            {"name": "boiler_temp", "kind": "mqtt", "device": "boiler.1", "topic": "temp",
             "servers": [secured.server.url], "token_file": "gw.token"},
            {"name": "pump_temp", "kind": "mqtt", "device": "pump-2", "topic": "temp",
             "servers": [secured.server.url], "token_file": "gw.token"}], base_dir=tmp_path)
        assert {d["name"]: d["kind"] for d in drivers.describe()} == {"boiler_temp": "mqtt", "pump_temp": "mqtt"}
        await drivers.start()
        engine = streamql.Engine(name="gw-1")
        for name, live in drivers.signals.items():
            engine.add_signal(name, live, type=live.type_name or None)
        device = MqttDevice(secured.server.mqtt_address, "boiler.1", boiler.token)
        try:
            assert not (await asyncio.to_thread(device.connect)).is_failure
            rows: list = []
            query = engine.aquery("select stream of x from Real x where x in signal_stream('boiler_temp');")

            async def read_three():
                async for row in query:
                    rows.append(row)
                    if len(rows) == 3:
                        return

            reader = asyncio.create_task(read_three())
            # keep publishing 1, 2, 3, … until the query has three rows (it reads from when it starts)
            sent = 0
            deadline = time.monotonic() + 15
            while not reader.done() and time.monotonic() < deadline:
                sent += 1
                info = device.client.publish(mqtt_topic("boiler.1", "temp"), str(sent), qos=1)
                await asyncio.to_thread(info.wait_for_publish, 5)
                await asyncio.sleep(0.1)
            await asyncio.wait_for(reader, 5)
            values = [float(r[0] if isinstance(r, (tuple, list)) else r) for r in rows]
            assert values == [values[0], values[0] + 1, values[0] + 2] and values[-1] <= sent
            # the device may not speak for another one: the server refuses, the gateway never sees it
            forged = device.client.publish(mqtt_topic("pump-2", "temp"), "999", qos=1)
            await asyncio.to_thread(forged.wait_for_publish, 5)
            device.client.publish(mqtt_topic("boiler.1", "temp"), '{"value": 42.5, "time": 1700000000}', qos=1)\
                .wait_for_publish(5)
            for _ in range(100):
                if drivers.signals["boiler_temp"].latest_time() == 1700000000:
                    break
                await asyncio.sleep(0.05)
            latest = list(engine.query("signal_value('boiler_temp');"))
            assert latest and float(latest[0][0] if isinstance(latest[0], (tuple, list)) else latest[0]) == 42.5
            assert drivers.signals["pump_temp"].pushed == 0
            assert 'Publish Violation - Subject "streamql.pump-2.temp"' in secured.server.log_path.read_text()
            # a bad payload is counted, not raised
            device.client.publish(mqtt_topic("boiler.1", "temp"), "not a number", qos=1).wait_for_publish(5)
            mqtt_input = drivers.udp_inputs[0]
            for _ in range(100):
                if mqtt_input.bad_payloads:
                    break
                await asyncio.sleep(0.05)
            assert mqtt_input.bad_payloads == 1 and "temp" in mqtt_input.last_error
        finally:
            await asyncio.to_thread(device.close)
            await drivers.stop()


@pytest.mark.parametrize("password", ["sqf_" + "C" * 43, "wrong", "revoked"])
async def test_mqtt_connections_with_a_bad_or_revoked_token_are_refused(tmp_path, password):
    async with secured_nats(tmp_path, mqtt=True) as secured:
        device = provision(secured.registry, "m1")
        if password == "revoked":
            secured.registry.revoke_device_tokens("m1")
            password = device.token
        client = MqttDevice(secured.server.mqtt_address, "m1", password)
        try:
            reason = await asyncio.to_thread(client.connect)
            assert reason is not None and reason.is_failure and "authorized" in str(reason).lower()
        finally:
            await asyncio.to_thread(client.close)
        assert secured.service.refused == 1


def test_mqtt_payloads():
    assert parse_payload(b"21.5", 7.0) == (21.5, 7.0)
    assert parse_payload(b'{"value": true, "time": "2023-11-14T22:13:20Z"}', 7.0) == (True, 1700000000.0)
    value, stamp = parse_payload(b"[1, 2.5]", 3.0)
    assert list(value) == [1.0, 2.5] and stamp == 3.0
    for bad in (b"abc", b'{"v": 1}', b"[]", b'"text"', b"NaN", b'{"value": 1, "time": "soon"}'):
        with pytest.raises(ValueError):
            parse_payload(bad, 0.0)


async def test_a_gateway_edge_process_answers_queries_over_mqtt_readings(tmp_path):
    """As it runs: `python -m edge_engine` with an mqtt signal on the command line, connected to a
    (fake) federation; an MQTT device publishes; the federation's query reads the reading."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from edge_engine.testing import FakeFederation

    repo = Path(__file__).resolve().parents[2]
    async with secured_nats(tmp_path, mqtt=True, mqtt_gateways=("gw-1",)) as secured:
        boiler = provision(secured.registry, "boiler.1")
        gateway = provision(secured.registry, "gw-1")
        (tmp_path / "gw.token").write_text(gateway.token)
        fed = FakeFederation(heartbeat_s=0.5)
        await fed.start()
        signal_spec = {"name": "boiler_temp", "kind": "mqtt", "device": "boiler.1", "topic": "temp",
                       "servers": [secured.server.url], "token_file": str(tmp_path / "gw.token")}
        log = open(tmp_path / "edge.log", "w")
        process = subprocess.Popen(
            [sys.executable, "-m", "edge_engine", "--id", "gw-1", "--federation", fed.url, "--store",
             str(tmp_path / "store"), "--signal", json.dumps(signal_spec), "--heartbeat", "0.5",
             "--log-level", "warning"], cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)},
            stdout=log, stderr=subprocess.STDOUT)
        device = MqttDevice(secured.server.mqtt_address, "boiler.1", boiler.token)
        try:
            conn = await fed.connection("gw-1", timeout=60)
            announced = {s["name"]: s for s in conn.hello["capabilities"]["signals"]}
            assert announced["boiler_temp"]["kind"] == "mqtt" and announced["boiler_temp"]["device"] == "boiler.1"
            assert not (await asyncio.to_thread(device.connect)).is_failure
            for _ in range(100):         # the gateway subscribes after its hello: publish until it hears
                device.client.publish(mqtt_topic("boiler.1", "temp"), '{"value": 63.5}', qos=1).wait_for_publish(5)
                rows, end = await conn.run_query("signal_value('boiler_temp');")
                if end["outcome"] == "ok" and rows:
                    break
                await asyncio.sleep(0.2)
            assert end["outcome"] == "ok", end
            assert rows == [63.5], rows
        finally:
            await asyncio.to_thread(device.close)
            process.terminate()
            await asyncio.to_thread(process.wait, 20)
            log.close()
            await fed.stop()

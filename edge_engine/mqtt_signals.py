"""Signals read from MQTT-only devices, through nats-server's MQTT listener (signal kind `mqtt`).

A device that speaks only MQTT connects to the NATS cluster's MQTT port with its device token as
the password (the federation's auth callout checks it) and publishes readings on
`streamql/<device>/<signal>`; NATS carries them as `streamql.<device>.<signal>` (<device> is the id
escaped as one subject token, streamql.nats_subjects.encode_token; plain ids stay as they are).
A gateway engine (an edge listed in the federation's `mqtt_gateways`, which may subscribe
`streamql.>`) turns them into signals its queries read like any other:

    [[signals]]
    name = "boiler_temp"        # the signal's name in queries
    kind = "mqtt"
    device = "boiler-1"         # the MQTT device's registry id
    topic = "temp"              # its <signal> topic level (default: name)
    servers = ["nats://nats-1:4222", "nats://nats-2:4222"]
    token_file = "gateway.token"   # this edge's own device token (relative: to edge.toml)

Payloads: a number as text (`21.5`), or JSON: a number, a boolean, a list of numbers (a vector),
or {"value": v, "time": t} with t in seconds or ISO 8601 (default: arrival time). Anything else
is counted in `bad_payloads` (with `last_error`), never raised: a device cannot stop the input.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from streamql import nats_subjects
from streamql.clock import SYSTEM_CLOCK, Clock
from streamql.signals import LiveSignal
from streamql.values import Time

log = logging.getLogger("streamql.edge.signals")

MQTT_PREFIX = "streamql"


def reading_subject(device_id: str, topic: str) -> str:
    return f"{MQTT_PREFIX}.{nats_subjects.encode_token(device_id)}.{topic}"


def parse_payload(data: bytes, arrival: float) -> tuple[object, float]:
    """(value, time) of one MQTT payload; ValueError when it is not a reading."""
    text = data.decode("utf-8").strip()
    item = json.loads(text)
    stamp = arrival
    if isinstance(item, dict):
        if "value" not in item:
            raise ValueError('an object payload is {"value": v, "time": t?}')
        stamp = _time(item.get("time"), arrival)
        item = item["value"]
    if isinstance(item, bool):
        return item, stamp
    if isinstance(item, (int, float)) and math.isfinite(item):
        return float(item), stamp
    if isinstance(item, list) and item and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item):
        return np.array(item, dtype=np.float64), stamp
    raise ValueError(f"a reading is a number, a boolean or a list of numbers, not {text[:40]!r}")


def _time(value, arrival: float) -> float:
    if value is None:
        return arrival
    if isinstance(value, str):
        return Time.parse(value).seconds
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise ValueError(f"time must be seconds or ISO 8601, got {value!r}")


class MqttReadings:
    """One NATS connection feeding the LiveSignals of MQTT devices' readings.

    `routes` maps a signal name to (device id, topic); `signals` holds the LiveSignals (by name).
    """

    def __init__(self, routes: dict[str, tuple[str, str]], signals: dict[str, LiveSignal], *,
                 servers: list[str], token_file: str | Path, clock: Clock = SYSTEM_CLOCK) -> None:
        self.routes = dict(routes)
        self.signals = signals
        self.servers = list(servers)
        self.token_file = Path(token_file)
        self.clock = clock
        self.received = self.bad_payloads = 0
        self.last_error: str | None = None
        self._by_subject = {reading_subject(device, topic): name for name, (device, topic) in self.routes.items()}
        self._nc = None

    def describe_signal(self, name: str) -> dict:
        device, topic = self.routes[name]
        return {"name": name, "type": None, "kind": "mqtt", "device": device, "topic": topic}

    def handle(self, subject: str, data: bytes) -> bool:
        """Push one message's reading into its signal; whether it was a reading."""
        name = self._by_subject.get(subject)
        if name is None:
            return False
        try:
            value, stamp = parse_payload(data, self.clock.now())
        except (ValueError, UnicodeDecodeError, RecursionError) as error:
            self.bad_payloads += 1
            self.last_error = f"{subject}: {type(error).__name__}: {error}"[:200]
            return False
        self.signals[name].push(value, stamp)
        self.received += 1
        return True

    async def start(self) -> None:
        import nats  # the optional `nats` extra; only engines with mqtt signals need it

        token = self.token_file.read_text().strip()

        async def on_message(msg) -> None:
            self.handle(msg.subject, msg.data)

        async def on_error(error) -> None:
            self.last_error = f"NATS: {error}"[:200]
            log.warning("mqtt signals: %s", error)

        self._nc = await nats.connect(self.servers, token=token, name="streamql-edge mqtt signals",
                                      allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                      error_cb=on_error)
        for subject in self._by_subject:
            await self._nc.subscribe(subject, cb=on_message)
        await self._nc.flush()

    async def stop(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            await nc.close()

"""Signal drivers: deterministic simulations equal to their pure form, paced replay, UDP input."""
import asyncio
import json
import math
import socket

import numpy as np
import pytest

from edge_engine.signals import (CallableDriver, CsvReplayDriver, SignalSpecError, SimModel, SimulatedDriver,
                                 UdpJsonInput, build_drivers, check_spec)
from streamql.batch import Batch
from streamql.clock import SYSTEM_CLOCK, FakeClock
from streamql.signals import LiveSignal


class Recorder(LiveSignal):
    """A LiveSignal that also remembers every push: (times, values, was_batch)."""

    def __init__(self, name="s", clock=None):
        super().__init__(name, clock=clock or FakeClock())
        self.pushes = []

    def push(self, value, time=None):
        self.pushes.append((np.array([time]), [value], False))
        super().push(value, time)

    def push_batch(self, values, times=None):
        self.pushes.append((np.asarray(times), values, True))
        super().push_batch(values, times)

    def times(self):
        return np.concatenate([t for t, _, _ in self.pushes]) if self.pushes else np.array([])

    def values(self):
        return np.concatenate([np.asarray(v, dtype=float) for _, v, _ in self.pushes]) if self.pushes else np.array([])


# -- simulated ---------------------------------------------------------------------------------
FULL = dict(shape="walk", rate_hz=200.0, offset=-25.0, amplitude=5.0, reversion_s=30.0, noise=0.2,
            bursts={"every_s": 4.0, "probability": 0.7, "duration_s": 1.0, "amplitude": 3.0},
            spikes={"rate_per_s": 2.0, "amplitude": 10.0},
            level_shifts={"every_s": 5.0, "probability": 0.5, "duration_s": 2.0, "magnitude": 4.0})


@pytest.mark.parametrize("shape", ["sine", "walk", "constant", "noise"])
def test_simulation_is_a_pure_function_of_seed_and_time(shape):
    params = dict(FULL, shape=shape, noise=0.5)
    times = 1.7e9 + np.arange(5000) / 200.0
    a = SimModel(seed=7, **params).values_at(times)
    b = SimModel(seed=7, **params).values_at(times)
    c = SimModel(seed=8, **params).values_at(times)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # any subset, in any order, gives the same values at the same times
    picked = np.random.default_rng(0).permutation(len(times))[:300]
    assert np.array_equal(SimModel(seed=7, **params).values_at(times[picked]), a[picked])


@pytest.mark.parametrize("rate_hz", [1.0, 50.0, 10_000.0])
def test_driver_pushes_exactly_the_pure_form_whatever_the_polling(rate_hz):
    clock = FakeClock(1_700_000_000.25)
    model = SimModel(seed=3, **dict(FULL, rate_hz=rate_hz))
    signal = Recorder(clock=clock)
    driver = SimulatedDriver("vibration", model, clock=clock, signal=signal)
    start = clock.now()
    steps = np.random.default_rng(1).uniform(0.0, 0.3, 40)
    for step in steps:
        clock.advance(float(step))
        driver.poll()
    n = math.floor(clock.now() * rate_hz) - math.floor(start * rate_hz) + 1
    times, values = model.generate(n, start)
    assert np.array_equal(signal.times(), times) and np.array_equal(signal.values(), values)
    assert driver.pushed == n
    if rate_hz == 1.0:
        assert not any(batch for _, _, batch in signal.pushes)  # slow: single readings
    if rate_hz == 10_000.0:
        assert max(len(t) for t, _, _ in signal.pushes) > 100  # fast: numpy batches


def test_walk_is_bounded_and_mean_reverting():
    model = SimModel("walk", seed=11, rate_hz=10.0, offset=-25.0, amplitude=5.0, reversion_s=60.0)
    values = model.values_at(1.7e9 + np.arange(0, 86400, 0.1))
    assert abs(values.mean() + 25.0) < 2.5 and 2.0 < values.std() < 8.0
    assert np.diff(values).std() < 0.3 * values.std()  # a walk: small steps, not white noise
    clipped = SimModel("walk", seed=11, rate_hz=10.0, offset=0, amplitude=5.0, min=-2.0, max=2.0)
    bounded = clipped.values_at(1.7e9 + np.arange(0, 3600, 0.5))
    assert bounded.min() >= -2.0 and bounded.max() <= 2.0


def test_anomalies_show_up_at_their_rates():
    times = 1.7e9 + np.arange(0, 3600, 0.01)
    base = SimModel("constant", seed=5, rate_hz=100.0, offset=1.0).values_at(times)
    assert np.all(base == 1.0)
    spiky = SimModel("constant", seed=5, rate_hz=100.0, offset=1.0, spikes={"rate_per_s": 0.5, "amplitude": 10})
    spikes = np.count_nonzero(spiky.values_at(times) != 1.0)
    assert 0.8 * 1800 < spikes < 1.2 * 1800  # 0.5 per second for an hour
    shifted = SimModel("constant", seed=5, rate_hz=100.0, offset=0.0,
                       level_shifts={"every_s": 60, "probability": 1.0, "duration_s": 30, "magnitude": 2})
    fraction = np.count_nonzero(shifted.values_at(times)) / len(times)
    assert abs(fraction - 0.5) < 0.02  # 30 s of every 60 s
    bursty = SimModel("constant", seed=5, rate_hz=100.0, offset=0.0,
                      bursts={"every_s": 10, "probability": 1.0, "duration_s": 2, "amplitude": 3, "frequency_hz": 5})
    assert 0.1 < np.count_nonzero(bursty.values_at(times)) / len(times) < 0.25


@pytest.mark.parametrize("spec, key", [
    ({"name": "x", "shape": "square"}, "shape"),
    ({"name": "x", "rate_hz": 0}, "rate_hz"),
    ({"name": "x", "noise": -1}, "noise"),
    ({"name": "x", "amplitude": "big"}, "amplitude"),
    ({"name": "x", "seed": 1.5}, "seed"),
    ({"name": "x", "wobble": 1}, "wobble"),
    ({"name": "x", "spikes": {"often": 1}}, "spikes.often"),
    ({"name": "x", "bursts": {"every_s": 1, "duration_s": 2}}, "bursts.duration_s"),
    ({"name": "x", "min": 3, "max": 1}, "min"),
    ({"name": "x y"}, "name"),
    ({"name": "x", "kind": "modbus"}, "kind"),
    ({"name": "x", "kind": "mqtt"}, "device"),
    ({"name": "x", "kind": "mqtt", "device": "d", "topic": "a/b"}, "topic"),
    ({"name": "x", "kind": "mqtt", "device": "d"}, "servers"),
    ({"name": "x", "kind": "mqtt", "device": "d", "servers": ["nats://h:4222"]}, "token_file"),
    ({"name": "x", "kind": "mqtt", "device": "d", "port": 1}, "port"),
    ({"name": "x", "kind": "udp", "port": 70000}, "port"),
    ({"name": "x", "kind": "udp", "port": 1, "rate_hz": 3}, "rate_hz"),
    ({"name": "x", "kind": "csv"}, "path"),
    ({"name": "x", "kind": "csv", "path": "a.csv", "speed": 0}, "speed"),
])
def test_bad_specs_name_their_key(spec, key):
    with pytest.raises(SignalSpecError) as info:
        check_spec(spec)
    assert info.value.key == key


# -- CSV replay ----------------------------------------------------------------------------------
@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "readings.csv"
    lines = ["t,temp,vib"] + [f"{i * 0.5},{20 + i},{i * 0.1:.1f}" for i in range(10)]
    lines.insert(4, "1.25,oops,0")  # a bad row
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_replay_paces_by_time_column_and_speed(csv_file):
    clock = FakeClock(1000.0)
    signal = Recorder(clock=clock)
    driver = CsvReplayDriver("temp", csv_file, column="temp", time_column="t", speed=2.0, clock=clock, signal=signal)
    assert driver.poll() == 1  # row 0 is due at once
    clock.advance(0.24)
    assert driver.poll() == 0
    clock.advance(0.01)  # 0.25 s of replay = 0.5 s of data at speed 2
    assert driver.poll() == 1
    assert driver.next_due() == pytest.approx(1000.5)
    clock.advance(2.0)
    driver.poll()
    assert signal.values().tolist() == [20.0 + i for i in range(10)]
    assert signal.times().tolist() == [i * 0.5 for i in range(10)]  # data times, kept
    assert driver.bad_rows == 1 and driver.finished and signal._ended


def test_csv_replay_by_row_rate_restamp_vectors_and_max_speed(csv_file):
    clock = FakeClock(50.0)
    signal = Recorder(clock=clock)
    driver = CsvReplayDriver("v", csv_file, columns=["temp", "vib"], rate_hz=4.0, speed=math.inf,
                             clock=clock, signal=signal)
    assert driver.poll() == 10 and driver.finished
    times, values, batched = signal.pushes[0]
    # rows are samples at the rate: the bad fourth row keeps its time slot
    assert batched and values.shape == (10, 2)
    assert times.tolist() == [50.0 + i * 0.25 for i in range(11) if i != 3]
    clock2 = FakeClock(0.0)
    restamped = Recorder(clock=clock2)
    slow = CsvReplayDriver("t", csv_file, column=1, rate_hz=2.0, speed=1.0, restamp=True, clock=clock2,
                           signal=restamped)
    for _ in range(8):
        slow.poll()
        clock2.advance(0.5)
    assert restamped.times().tolist() == [i * 0.5 for i in range(8) if i != 3]


def test_csv_replay_loops(csv_file):
    clock = FakeClock(0.0)
    signal = Recorder(clock=clock)
    driver = CsvReplayDriver("temp", csv_file, column="temp", time_column="t", speed=math.inf, loop=True,
                             clock=clock, signal=signal, max_batch=25)
    driver.poll()
    assert len(signal.values()) == 25 and not driver.finished
    assert signal.times()[10] == pytest.approx(5.0) and signal.values()[10] == 20.0  # second pass follows on


def test_csv_errors_name_the_key(csv_file, tmp_path):
    with pytest.raises(SignalSpecError, match="column"):
        CsvReplayDriver("x", csv_file, column="nope", rate_hz=1)
    with pytest.raises(SignalSpecError, match="path"):
        CsvReplayDriver("x", tmp_path / "missing.csv", rate_hz=1)
    with pytest.raises(SignalSpecError, match="rate_hz"):
        CsvReplayDriver("x", csv_file, column="temp")


# -- callables -----------------------------------------------------------------------------------
def test_callable_driver_polls_at_its_rate():
    clock = FakeClock(10.0)
    signal = Recorder(clock=clock)
    calls = []

    def sensor(now):
        calls.append(now)
        if len(calls) == 2:
            return None
        if len(calls) == 3:
            return Batch(np.array([1.0, 2.0]), np.array([now - 0.1, now]))
        return now * 2

    driver = CallableDriver("c", sensor, rate_hz=2.0, clock=clock, signal=signal)
    for _ in range(8):
        driver.poll()
        clock.advance(0.25)
    assert calls == [10.0, 10.5, 11.0, 11.5]
    assert signal.values().tolist() == [20.0, 1.0, 2.0, 23.0]
    no_argument = CallableDriver("d", lambda: 5, rate_hz=1.0, clock=clock, signal=Recorder(clock=clock))
    assert no_argument.poll() == 1


# -- UDP -----------------------------------------------------------------------------------------
async def test_udp_json_lines_on_loopback():
    clock = FakeClock(500.0)
    signals = {"temp": Recorder("temp", clock), "pos": Recorder("pos", clock)}
    udp = UdpJsonInput(signals, port=0, clock=clock)
    port = await udp.start()
    try:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        lines = [{"signal": "temp", "value": 21.5}, {"signal": "temp", "value": 22, "time": 499.0},
                 {"signal": "pos", "value": [1, 2, 3], "time": "1970-01-01T00:08:00Z"},
                 {"signal": "ghost", "value": 1}, {"value": 3}]
        sender.sendto("\n".join(json.dumps(x) for x in lines).encode() + b"\nnot json\n", ("127.0.0.1", port))
        sender.sendto(b'{"signal": "temp", "value": "hot"}', ("127.0.0.1", port))
        sender.sendto(b"\xff\xfe garbage", ("127.0.0.1", port))
        sender.close()
        for _ in range(200):
            if udp.received >= 4 and udp.bad_lines >= 3:
                break
            await asyncio.sleep(0.01)
    finally:
        await udp.stop()
    assert signals["temp"].times().tolist()[:2] == [500.0, 499.0]
    assert [v for _, vs, _ in signals["temp"].pushes for v in vs][:2] == [21.5, 22.0]
    assert signals["temp"].pushes[-1][1] == ["hot"]  # a non-numeric reading is still a reading
    pos_time, pos_value, _ = signals["pos"].pushes[0]
    assert pos_time.tolist() == [480.0] and np.array_equal(pos_value[0], [1.0, 2.0, 3.0])
    assert udp.unknown == 1 and udp.bad_lines == 3


# -- from configuration, run on a loop -----------------------------------------------------------
async def test_driver_set_runs_and_stops_on_the_event_loop(csv_file):
    specs = [{"name": "vibration", "kind": "simulated", "shape": "sine", "rate_hz": 2000, "seed": 1},
             {"name": "slow", "rate_hz": 1, "shape": "constant", "offset": 3},
             {"name": "replay", "kind": "csv", "path": csv_file.name, "column": "temp", "time_column": "t",
              "speed": "max"},
             {"name": "ext", "kind": "udp", "port": 0},
             {"name": "poll", "kind": "callable", "function": "time:time", "rate_hz": 20}]
    drivers = build_drivers(specs, base_dir=csv_file.parent)
    assert [d["name"] for d in drivers.describe()] == ["ext", "poll", "replay", "slow", "vibration"]
    await drivers.start()
    await asyncio.sleep(0.3)
    await drivers.stop()
    assert drivers.signals["vibration"].pushed >= 300
    assert drivers.signals["replay"].pushed == 10
    assert drivers.signals["poll"].pushed >= 3
    assert drivers.describe()[0]["port"] > 0
    with pytest.raises(SignalSpecError, match="twice"):
        build_drivers([specs[1], specs[1]])


def test_driver_set_in_a_thread_and_latest_at():
    drivers = build_drivers([{"name": "t", "shape": "walk", "rate_hz": 100, "seed": 4, "offset": -25}])
    drivers.start_thread()
    try:
        import time
        time.sleep(0.25)
    finally:
        drivers.stop_thread()
    signal = drivers.signals["t"]
    assert signal.pushed >= 10
    model = SimModel("walk", rate_hz=100, seed=4, offset=-25)
    stamp, value = model.latest_at(signal.latest_time() + 0.001)
    assert stamp == signal.latest_time() and value == signal.latest()


def test_a_lingering_reader_takes_readings_at_most_once_per_linger_and_loses_none():
    import threading
    import time

    from streamql.batch import IDLE
    from streamql.clock import CancellableClock
    from streamql.errors import QueryCancelled
    from streamql.signals import LiveSignal

    hub = LiveSignal("s", linger=0.3, idle_tick=0.05)
    cancel = threading.Event()
    reader = hub.open(CancellableClock(SYSTEM_CLOCK, cancel))
    stop = threading.Event()

    def produce() -> None:
        for i in range(60):        # 50 readings a second for 1.2 s
            if stop.is_set():
                return
            hub.push(float(i))
            time.sleep(0.02)

    producer = threading.Thread(target=produce)
    producer.start()
    taken, values = [], []
    started = time.monotonic()
    while len(values) < 60 and time.monotonic() - started < 10:
        item = next(reader)
        if item is IDLE:
            continue
        taken.append(time.monotonic())
        values.extend(list(item.values) if hasattr(item, "values") else [item.value])
    producer.join(5)
    assert values == [float(i) for i in range(60)]                  # every reading, in order
    assert len(taken) <= 8, len(taken)                              # not one wake per reading
    assert all(b - a >= 0.25 for a, b in zip(taken, taken[1:])), taken
    hub.push(99.0)
    next(reader)                                                    # the linger starts after this one
    cancel.set()
    began = time.monotonic()
    with pytest.raises(QueryCancelled):
        next(reader)
    assert time.monotonic() - began < 0.25                          # a cancel ends the linger at once
    stop.set()

"""Health sampling: fields fit the health frame; battery, link, errors, restarts."""
import logging
import time

from edge_engine.health import (ErrorLog, ErrorLogHandler, HealthMonitor, ProcessSampler, _busy, bump_restarts,
                                read_battery)
from streamql import wire
from streamql.clock import FakeClock, Clock


def test_sample_is_a_valid_health_frame(tmp_path):
    clock = FakeClock(1000.0)
    monitor = HealthMonitor(clock=clock, restarts=2, battery_root=tmp_path)
    monitor.add_queue("buffer", lambda: 17)
    monitor.add_queue("broken", lambda: 1 / 0)
    monitor.watch_buffer(lambda: {"records": 17, "bytes": 2048, "dropped": 3, "damaged": 0})
    monitor.watch_queries(lambda: ["q-1"])
    monitor.link.connected()
    monitor.link.record_rtt(0.012)
    monitor.link.record_rtt(0.020)
    clock.advance(30)
    fields = monitor.sample()
    frame = wire.decode(wire.encode(wire.make("health", **fields)))
    assert frame["uptime_s"] == 30 and frame["restarts"] == 2 and frame["queues"] == {"buffer": 17}
    assert frame["buffer"] == {"records": 17, "bytes": 2048, "dropped": 3} and frame["queries"] == ["q-1"]
    assert frame["link"]["rtt_ms"] == 20.0 and frame["link"]["rtt_avg_ms"] == 16.0 and frame["link"]["connected"]
    assert frame["battery"] is None
    assert frame["errors"][0]["kind"] == "ZeroDivisionError"  # a failing queue probe is reported, not raised
    assert frame["memory_kb"] > 1000


def test_cpu_percent_measures_this_process():
    sampler = ProcessSampler(Clock())
    sampler.cpu_percent()
    cpu, wall = time.process_time(), time.monotonic()
    _busy(0.15)
    time.sleep(0.05)
    percent = sampler.cpu_percent()
    # the oracle: what this process really got (a loaded machine gives it less than the busy loop asked)
    expected = 100 * (time.process_time() - cpu) / (time.monotonic() - wall)
    assert abs(percent - expected) <= 15 and percent > 0


def test_battery_from_sysfs_and_from_a_signal(tmp_path):
    (tmp_path / "AC").mkdir()
    (tmp_path / "AC" / "type").write_text("Mains\n")
    battery = tmp_path / "BAT0"
    battery.mkdir()
    (battery / "type").write_text("Battery\n")
    (battery / "capacity").write_text("87\n")
    (battery / "status").write_text("Discharging\n")
    assert read_battery(tmp_path) == {"percent": 87.0, "charging": False, "source": "sysfs"}
    assert read_battery(tmp_path / "none") is None
    simulated = HealthMonitor(clock=FakeClock(), battery=lambda: 55.5)
    assert simulated.battery() == {"percent": 55.5, "charging": None, "source": "signal"}


def test_link_reconnects_and_disconnect_reason():
    monitor = HealthMonitor(clock=FakeClock())
    for _ in range(3):
        monitor.link.connected()
        monitor.link.disconnected("connection reset")
    snapshot = monitor.link.snapshot()
    assert snapshot["reconnects"] == 2 and not snapshot["connected"] and snapshot["last_disconnect"] == "connection reset"


def test_error_log_is_bounded_and_fed_by_logging():
    errors = ErrorLog(size=3, clock=FakeClock(5.0))
    logger = logging.getLogger("test.edge.health")
    handler = ErrorLogHandler(errors)
    logger.addHandler(handler)
    try:
        logger.info("ignored")
        for i in range(5):
            logger.warning("trouble %d", i)
        try:
            raise ValueError("bad frame")
        except ValueError:
            logger.exception("decoding failed")
    finally:
        logger.removeHandler(handler)
    assert [e["message"] for e in errors.list()] == ["trouble 3", "trouble 4", "decoding failed"]
    assert errors.list()[-1]["kind"] == "ValueError" and errors.total == 6


def test_restart_counter_persists(tmp_path):
    assert [bump_restarts(tmp_path / "store") for _ in range(3)] == [0, 1, 2]

"""An edge with every query slot taken refuses with `retry_s` (busy, not wrong): the statement asks
it again, twice as long apart each time (streamql/physical/remote.py) — a stream while it stands, a
one-shot fragment while its device timeout lasts. Other refusals fail the device at once."""
from __future__ import annotations

import time

import numpy as np

from fleet_support import FLEET, online, read_until, vibration

TEMPERATURE = "signal_value('outside_temperature')@e"


def temperatures() -> dict:
    return {d: t for d, _, _, t, _ in online()}


def test_a_one_shot_query_asks_a_busy_device_again_and_its_answer_is_complete(federation, fleet):
    fleet.members["wl-2"].busy = 2
    result = federation.query(f"select id(e), {TEMPERATURE} from Edge e;", fleet=fleet, device_timeout=10)
    assert dict(result) == temperatures()             # the oracle: every online device's constant
    assert result.status.incomplete() == ["d-3"]      # the offline one only
    assert result.status["wl-2"]["outcome"] == "answered"
    assert len(fleet.sources["wl-2"]) == 3            # refused twice, answered the third time
    changes, _ = result.status.changes(0)
    assert any(c["device"] == "wl-2" and "busy" in (c["reason"] or "") for c in changes)


def test_an_aggregate_over_a_busy_device_agrees_with_the_oracle(federation, fleet):
    fleet.members["x-1"].busy = 1
    fleet.members["wl-1"].busy = 3
    result = federation.query(f"select sum({TEMPERATURE}) from Edge e;", fleet=fleet, device_timeout=10)
    assert list(result) == [sum(temperatures().values())]
    assert result.status.incomplete() == ["d-3"]


def test_a_device_busy_past_its_timeout_is_timed_out_not_failed_and_asked_a_bounded_number_of_times(
        federation, fleet):
    fleet.members["wl-1"].busy = 10_000
    started = time.monotonic()
    result = federation.query(f"select id(e), {TEMPERATURE} from Edge e;", fleet=fleet, device_timeout=1.0)
    rows = dict(result)
    assert time.monotonic() - started < 10
    assert "wl-1" not in rows and rows == {d: t for d, t in temperatures().items() if d != "wl-1"}
    assert result.status["wl-1"]["outcome"] == "timed out"
    # 0.05, 0.1, 0.2, 0.4 s apart: within one second at most 5 asks (a 0.1 s poll adds a little)
    assert 2 <= len(fleet.sources["wl-1"]) <= 6


def test_a_refusal_without_retry_fails_the_device_at_once(federation, fleet):
    fleet.members["wl-1"].failing = "this principal runs at most 4 queries on this edge"
    result = federation.query(f"select id(e), {TEMPERATURE} from Edge e;", fleet=fleet, device_timeout=10)
    rows = dict(result)
    assert "wl-1" not in rows and result.status["wl-1"]["outcome"] == "failed"
    assert len(fleet.sources["wl-1"]) == 1


def test_a_stream_joins_a_busy_device_when_it_has_a_slot_and_says_so_meanwhile(federation, fleet):
    for device in ("wl-1", "wl-2", "x-1", "d-1", "d-2"):
        fleet.members[device].busy = 3          # every online device busy at first
    result = federation.query("select stream of id(e), x from Edge e, Real x "
                              "where x in signal_stream('vibration')@e;", fleet=fleet)
    everyone = {d for d, *_ in online()}
    rows, met = read_until(result, lambda rows: {r[0] for r in rows} >= everyone, timeout=30)
    assert met, f"rows only from {sorted({r[0] for r in rows})}"
    changes, _ = result.status.changes(0)
    result.close()
    by_device: dict = {}
    for device, x in rows:
        by_device.setdefault(device, []).append(x)
    offsets = {d: offset for d, _, _, _, offset in FLEET}
    for device, values in by_device.items():   # each device's rows are its own replayed signal, in order
        expected = vibration(offsets[device])[: len(values)]
        assert np.array_equal(np.array(values), expected), device
    busy_said = {c["device"] for c in changes if "busy" in (c["reason"] or "")}
    assert busy_said == {d for d, *_ in online()}
    assert all(len(fleet.sources[d]) == 4 for d, *_ in online())

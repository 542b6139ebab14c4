"""Fleet statements are checked before anything ships, errors point into the user's text, and
every selected device's outcome is in the status — failed, timed out, skipped, offline, cancelled."""
from __future__ import annotations

import time

import pytest

import streamql
from streamql.signals import LiveSignal
from fleet_support import FLEET, online, take, wait_until

TEMPERATURE = "signal_value('outside_temperature')@e"


def error_of(federation, fleet, text) -> streamql.QueryError:
    with pytest.raises(streamql.QueryError) as caught:
        list(federation.query(text, fleet=fleet))
    return caught.value


def at(text: str, fragment: str) -> int:
    """The 1-based column of `fragment` in a one-line statement."""
    return text.index(fragment) + 1


# ------------------------------------------------------------------------ checked before shipping
@pytest.mark.parametrize("text, kind, where, words", [
    ("select count(e) from Edge e where signal_value('outside_temprature')@e < -20;", "NameError",
     "'outside_temprature'", "did you mean 'outside_temperature'?"),
    ("select count(e) from Edge e where signal_value('nothing')@e < -20;", "NameError", "'nothing'",
     "signals: mode, outside_temperature, vibration"),
    (f"select id(e) from Edge e where {TEMPERATURE} < 'cold';", "TypeError", TEMPERATURE,
     "cannot compare Real with Charstring"),
    ("select signal_value('outside_temperature') from Edge e;", "NameError", "signal_value(",
     "did you mean signal_value('outside_temperature')@e"),
    ("select id(e), nosuch(1)@e from Edge e;", "NameError", "nosuch", "unknown function nosuch"),
    ("select predict('vib', [1, 2])@e from Edge e;", "NameError", "'vib'", "no edge has a model 'vib'"),
])
def test_mistakes_in_the_edge_part_are_errors_at_their_position_and_nothing_ships(federation, fleet, text, kind,
                                                                                  where, words):
    error = error_of(federation, fleet, text)
    assert error.kind == kind and words in error.message
    assert (error.line, error.column) == (1, at(text, where))
    assert fleet.sources == {}                     # the recording transport saw nothing


def test_edges_that_cannot_run_the_fragment_are_skipped_with_the_reason(federation, fleet):
    result = federation.query("select id(e), signal_value('mode')@e from Edge e;", fleet=fleet)
    rows = sorted(result)
    assert rows == [("d-1", "idle"), ("d-2", "hauling")]
    status = result.status
    for device in ("wl-1", "wl-2", "x-1"):
        assert status[device]["outcome"] == "skipped"
        assert "this edge has no signal 'mode'" in status[device]["reason"]
        assert status[device]["error"]["column"] == at("select id(e), signal_value('mode')@e", "'mode'")
    assert status["d-3"]["outcome"] == "offline"
    assert set(fleet.sources) == {"d-1", "d-2"}   # nothing was sent where it cannot run
    assert not status.complete and status.summary() == \
        "2 answered · 1 offline (d-3) · 0 failed · 3 skipped (wl-1, wl-2, x-1)"


def test_when_no_selected_edge_can_run_it_the_reason_is_the_error(federation, fleet):
    text = "select signal_value('mode')@e from Edge e where kind(e) = 'wheel loader';"
    error = error_of(federation, fleet, text)
    assert error.kind == "NameError" and "this edge has no signal 'mode'" in error.message
    assert error.column == at(text, "'mode'") and fleet.sources == {}


def test_federation_values_cannot_be_read_on_an_edge(federation, fleet):
    federation.execute("create function owner(Charstring device) -> Charstring as stored;")
    text = "select id(e), owner(id(e))@e from Edge e;"
    error = error_of(federation, fleet, text)
    assert error.kind == "TypeError" and "stored function of the federation" in error.message
    assert error.column == at(text, "owner(id(e))@e")
    text = "select x from Edge e, Integer x where x in iota(1, 3) and (x < signal_value('outside_temperature'))@e;"
    error = error_of(federation, fleet, text)
    assert "value of the federation" in error.message and error.column == at(text, "x < signal")


@pytest.mark.parametrize("text, message", [
    ("select id(a) from Edge a, Edge b;", "Edge"),
    ("select signal_value('t')@x from Edge e, Integer x where x in iota(1, 2);", "Edge variable"),
])
def test_unsupported_shapes_are_clear_errors_with_positions(federation, fleet, text, message):
    error = error_of(federation, fleet, text)
    assert message in error.message and error.line == 1 and error.column is not None


# ------------------------------------------------------------------------ honest status
def test_failed_and_timed_out_devices_are_reported_and_the_others_answer(federation, fleet):
    fleet.members["wl-1"].failing = "the sensor bus is down"
    fleet.members["x-1"].slow = True
    started = time.monotonic()
    result = federation.query(f"select id(e), {TEMPERATURE} from Edge e;", fleet=fleet, device_timeout=1.0)
    rows = sorted(result)
    assert time.monotonic() - started < 15
    assert [d for d, _ in rows] == ["d-1", "d-2", "wl-2"]
    status = result.status
    assert status["wl-1"]["outcome"] == "failed" and status["wl-1"]["reason"] == "the sensor bus is down"
    assert status["x-1"]["outcome"] == "timed out" and "1 s" in status["x-1"]["reason"]
    assert status["d-3"]["outcome"] == "offline"
    assert status.incomplete() == ["d-3", "wl-1", "x-1"]
    wire = status.to_dict()
    assert wire["complete"] is False and wire["counts"] == {"answered": 3, "failed": 1, "timed out": 1, "offline": 1}


def _oracle_cold_by_region(answered: set[str]) -> dict[str, int]:
    """Devices below -20 °C per region, from the fleet's own constants, over those that answered."""
    counts: dict[str, int] = {}
    for device, meta, _caps, temperature, _offset in FLEET:
        if device in answered and temperature < -20:
            counts[meta["region"]] = counts.get(meta["region"], 0) + 1
    return counts


def test_a_device_that_sent_its_rows_but_did_not_answer_is_in_neither_the_answer_nor_the_count(federation, fleet):
    # x-1's link drops after its partial went, wl-1 never ends after its row: the answer counts
    # only devices that answered, as the status says (before, both were counted and reported not answered)
    fleet.members["x-1"].after_rows = "drop"
    fleet.members["wl-1"].after_rows = "stall"
    result = federation.query(f"select region(e), count(e) from Edge e where {TEMPERATURE} < -20 group by region(e);",
                              fleet=fleet, device_timeout=1.0)
    counted = dict(result)
    status = result.status
    assert status["x-1"]["outcome"] == "offline" and status["wl-1"]["outcome"] == "timed out"
    answered = {d for d in status if status[d]["outcome"] == "answered"}
    assert answered == {"wl-2", "d-1", "d-2"}
    assert counted == _oracle_cold_by_region(answered) == {"AU": 1, "SE": 1}
    rows = sorted(federation.query(f"select id(e), {TEMPERATURE} from Edge e;", fleet=fleet, device_timeout=1.0))
    assert [d for d, _ in rows] == ["d-1", "d-2", "wl-2"]


def test_past_the_held_rows_a_devices_rows_flow_as_they_come(federation, fleet, monkeypatch):
    from streamql.physical import remote

    monkeypatch.setattr(remote, "HOLD_DEVICE_ROWS", 0)   # every row past the bound: nothing held
    fleet.members["wl-1"].after_rows = "stall"
    result = federation.query(f"select id(e), {TEMPERATURE} from Edge e;", fleet=fleet, device_timeout=1.0)
    rows = sorted(result)
    assert "wl-1" in [d for d, _ in rows]                 # its row went before it stalled
    assert result.status["wl-1"]["outcome"] == "timed out" and result.status["wl-1"]["rows"] == 1


def test_a_statement_every_selected_device_failed_is_an_error(federation, fleet):
    for device in fleet.members.values():
        device.failing = "disk full"
    text = f"select count(e) from Edge e where {TEMPERATURE} < -20;"
    error = error_of(federation, fleet, text)
    assert error.kind == "RuntimeError" and error.message.startswith("disk full (on ")
    assert "other devices" in error.message


def test_an_error_an_edge_finds_is_reported_at_the_users_position(federation, fleet):
    text = ("select id(e), ([1, 2, 3][cast(signal_value('outside_temperature') as Integer) + 50])@e "
            "from Edge e where id(e) = 'x-1';")
    error = error_of(federation, fleet, text)
    assert error.kind == "RuntimeError" and "x-1" in error.message
    # the edge reported a line and column of the fragment; the user sees their own text
    assert error.line == 1 and error.column >= at(text, "[1, 2, 3]")
    assert error.column < at(text, ")@e")


def test_limits_travel_with_the_fragments(federation, fleet):
    federation.query(f"select {TEMPERATURE} from Edge e;", fleet=fleet, limits={"memory_mb": 8, "seconds": 30})
    list(federation.query(f"select {TEMPERATURE} from Edge e;", fleet=fleet, limits={"memory_mb": 8, "seconds": 30}))
    assert all(r.limits == {"seconds": 30, "memory_mb": 8} for r in fleet.requests)


# ------------------------------------------------------------------------ streams and cancel
def test_closing_the_result_cancels_the_fragments(federation, fleet):
    live = LiveSignal("vibration")
    fleet.members["wl-1"].engine.add_signal("vibration", live)
    result = federation.query("select stream of id(e), x from Edge e, Real x "
                              "where x in signal_stream('vibration')@e and id(e) = 'wl-1';", fleet=fleet)
    assert wait_until(lambda: fleet.sources.get("wl-1")) or True
    reader = _Reader(result)
    assert wait_until(lambda: live.reader_count >= 1)
    live.push(1.5)
    assert wait_until(lambda: reader.rows == [("wl-1", 1.5)])
    result.close()
    assert wait_until(lambda: live.reader_count == 0)
    assert result.status["wl-1"]["outcome"] == "cancelled"


def test_a_standing_stream_reaches_devices_that_connect_later(federation, fleet):
    signals = {}
    for device in ("wl-1", "d-3"):
        signals[device] = LiveSignal("load")
        fleet.members[device].engine.add_signal("load", signals[device], type="Real")
    result = federation.query("select stream of id(e), x from Edge e, Real x where x in signal_stream('load')@e;",
                              fleet=fleet)
    reader = _Reader(result)
    assert wait_until(lambda: signals["wl-1"].reader_count >= 1)
    signals["wl-1"].push(1.0)
    assert wait_until(lambda: ("wl-1", 1.0) in reader.rows)
    assert result.status["d-3"]["outcome"] == "offline"
    fleet.connect("d-3")                        # comes online: the stream reaches it
    assert wait_until(lambda: signals["d-3"].reader_count >= 1)
    signals["d-3"].push(2.0)
    assert wait_until(lambda: ("d-3", 2.0) in reader.rows)
    changes, _ = result.status.changes(0)
    assert [c["outcome"] for c in changes if c["device"] == "d-3"] == ["offline", "running"]
    fleet.disconnect("wl-1")                    # drops its link: reported, the stream goes on
    assert wait_until(lambda: result.status["wl-1"]["outcome"] == "offline")
    assert reader.alive()
    result.close()


def test_a_standing_stream_stays_open_while_every_device_is_away(federation, fleet):
    for device in fleet.members.values():
        device.online = False
    result = federation.query("select stream of id(e), x from Edge e, Real x "
                              "where x in signal_stream('vibration')@e;", fleet=fleet)
    rows = take(result, 1, timeout=1.0)
    assert rows == [] and result.status.counts() == {"offline": 6}


class _Reader:
    """Reads a result in a thread."""

    def __init__(self, result):
        import threading
        self.rows: list = []
        self._thread = threading.Thread(target=self._read, args=(result,), daemon=True)
        self._thread.start()

    def _read(self, result) -> None:
        try:
            for row in result:
                self.rows.append(row)
        except streamql.QueryError:
            pass

    def alive(self) -> bool:
        return self._thread.is_alive()


def test_a_summary_of_a_met_limit_says_how_many_stopped_devices_had_sent_rows():
    from streamql.fleet_status import FleetStatus, StatusReport
    status = FleetStatus()
    for n in range(6):
        status.set(f"d{n}", "running")
    status.add_rows("d0", 3)
    status.add_rows("d1", 2)
    status.set("d5", "failed", "boom")
    status.stop_running(by_limit=True)
    assert status.summary() == "5 stopped at the limit (2 had sent rows) · 1 failed (d5)"
    assert StatusReport(status.to_dict()).summary() == status.summary()

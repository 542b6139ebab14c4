"""Fleet statements planned by the engine's one planner — selection, fragments, aggregate splits,
merges — checked against an oracle computed from the fleet's known signals."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

import streamql
from fleet_support import FLEET, mode, online, take, vibration

MOTIVATING = """select stream of id(e), w
from Edge e, Vector of Real w
where region(e) in ('US', 'EU', 'AU')
  and kind(e) in ('wheel loader', 'dumper')
  and signal_value('outside_temperature')@e < -20
  and w in winagg(signal_stream('vibration'), 256, 256)@e;"""
TEMPERATURE = "signal_value('outside_temperature')@e"


def run(federation, fleet, text, **options):
    result = federation.query(text, fleet=fleet, **options)
    return list(result), result.status


def test_the_motivating_query_returns_exactly_the_oracle_rows(federation, fleet):
    expected = [(d, w) for d, meta, _, t, offset in online()
                if meta["region"] in ("US", "EU", "AU") and meta["kind"] in ("wheel loader", "dumper") and t < -20
                for w in vibration(offset).reshape(-1, 256)]
    result = federation.query(MOTIVATING, fleet=fleet)
    rows = take(result, len(expected))
    assert sorted((r[0], float(r[1][0])) for r in rows) == sorted((d, float(w[0])) for d, w in expected)
    got = {(r[0], float(r[1][0])): r[1] for r in rows}
    for device, window in expected:
        np.testing.assert_array_equal(got[(device, float(window[0]))], window)
    status = result.status
    # every selected device has an outcome; d-3 (offline) is reported, not missing; x-1 (excavator)
    # and d-2 (SE) were never selected
    assert set(status) == {"wl-1", "wl-2", "d-1", "d-3"}
    assert status["d-3"]["outcome"] == "offline"
    assert status["wl-1"]["rows"] == 4 and status["wl-2"]["rows"] == 0


def test_registry_conditions_are_answered_by_the_index_and_never_reach_an_edge(federation, fleet):
    take(federation.query(MOTIVATING, fleet=fleet), 1)
    assert set(fleet.sources) <= {"wl-1", "wl-2", "d-1"}
    fragment = fleet.sources["wl-1"][0]
    assert "region" not in fragment and "kind" not in fragment and "@" not in fragment
    assert fragment == ("select stream of w from Vector of Real w where signal_value('outside_temperature') < -20 "
                        "and w in winagg(signal_stream('vibration'), 256, 256);")


def test_explain_shows_the_index_the_fragment_and_the_devices(federation, fleet):
    text = federation.explain(MOTIVATING, fleet=fleet)
    assert "selection (registry index): meta(e, 'region') in ('US', 'EU', 'AU') and " \
           "meta(e, 'kind') in ('wheel loader', 'dumper')" in text
    assert "the index selects 4 devices: 3 online, 1 offline" in text
    assert "fragment (stream) on each selected edge: select stream of w from Vector of Real w" in text
    assert "rules fired: remote_fragments" in text
    assert fleet.sources == {}   # explaining runs nothing


# ------------------------------------------------------------------------ the table
def test_count_of_edges_with_a_live_condition(federation, fleet):
    rows, status = run(federation, fleet, f"select count(e) from Edge e where {TEMPERATURE} < -20;")
    assert rows == [sum(1 for d in online() if d[3] < -20)]
    assert status.counts() == {"answered": 5, "offline": 1} and not status.complete


def test_avg_min_max_sum_of_a_live_value(federation, fleet):
    temperatures = [d[3] for d in online()]
    rows, _ = run(federation, fleet, f"select avg({TEMPERATURE}) from Edge e;")
    assert rows == [pytest.approx(np.mean(temperatures))]
    rows, _ = run(federation, fleet, f"select min({TEMPERATURE}), max({TEMPERATURE}), sum({TEMPERATURE}) from Edge e;")
    assert rows == [(min(temperatures), max(temperatures), pytest.approx(sum(temperatures)))]


def test_group_by_metadata_with_an_aggregate_of_a_live_value(federation, fleet):
    rows, _ = run(federation, fleet, f"select region(e), count(e), max({TEMPERATURE}) from Edge e group by region(e);")
    groups = defaultdict(list)
    for _, meta, _, t, _ in online():
        groups[meta["region"]].append(t)
    assert sorted(rows) == sorted((region, len(ts), max(ts)) for region, ts in groups.items())


def test_having_over_a_live_condition(federation, fleet):
    rows, _ = run(federation, fleet, f"select region(e), count(e) from Edge e where {TEMPERATURE} < -20 "
                                     "group by region(e) having count(e) >= 2;")
    counts = defaultdict(int)
    for _, meta, _, t, _ in online():
        if t < -20:
            counts[meta["region"]] += 1
    assert sorted(rows) == sorted((r, n) for r, n in counts.items() if n >= 2) and rows


def test_stdev_per_kind(federation, fleet):
    rows, _ = run(federation, fleet, f"select kind(e), stdev({TEMPERATURE}) from Edge e group by kind(e);")
    groups = defaultdict(list)
    for _, meta, _, t, _ in online():
        groups[meta["kind"]].append(t)
    expected = {k: (np.std(v, ddof=1) if len(v) > 1 else None) for k, v in groups.items()}
    assert {k: v for k, v in rows} == pytest.approx(expected)


def test_a_variable_bound_on_the_edge_and_aggregated_here(federation, fleet):
    rows, _ = run(federation, fleet, f"select count(e), avg(t) from Edge e, Real t where t = {TEMPERATURE};")
    temperatures = [d[3] for d in online()]
    assert rows == [(len(temperatures), pytest.approx(np.mean(temperatures)))]


def test_limit_over_a_large_fleet_with_offline_devices_cancels_the_rest(federation):
    from streamql.local_fleet import LocalFleet
    fleet = LocalFleet()
    for i in range(400):
        engine = streamql.Engine()
        engine.add_signal("battery", [float(i)], type="Real")
        fleet.add(f"e-{i:03}", engine, {"region": "EU" if i % 2 else "US"}, online=i % 4 != 1)
    result = federation.query("select id(e), signal_value('battery')@e from Edge e where region(e) = 'EU' limit 3;",
                              fleet=fleet, device_timeout=30)
    rows = list(result)
    assert len(rows) == 3 and all(int(d[2:]) % 2 == 1 and int(d[2:]) % 4 == 3 for d, _ in rows)
    assert all(value == float(int(d[2:])) for d, value in rows)
    status = result.status
    assert status.counts()["offline"] == 100                 # reported at once, never waited for
    assert len(fleet.requests) <= 100                        # no more than the online EU devices were asked
    cancelled = [d for d in status if status[d]["outcome"] == "cancelled"]
    assert all(status.devices[d].by_limit for d in cancelled)
    assert status.incomplete() == sorted(d for d in status if status[d]["outcome"] == "offline")


# ------------------------------------------------------------------------ more shapes
@pytest.mark.parametrize("aggregates", ["avg(x), count(x), sum(x), min(x), max(x), stdev(x), var(x)",
                                        "avg(x), median(x), count(*)", "count(distinct x % 50), count(x)"])
def test_aggregates_over_the_rows_of_each_edge_match_numpy(federation, fleet, aggregates):
    rows, _ = run(federation, fleet, f"select region(e), {aggregates} from Edge e, Real x "
                                     "where x in vectorof(first_n(signal_stream('vibration'), 100))@e "
                                     "group by region(e) order by region(e);")
    by_region: dict = defaultdict(list)
    for _, meta, _, _, offset in online():
        by_region[meta["region"]].append(vibration(offset)[:100])
    oracle = {"avg": np.mean, "count": len, "sum": np.sum, "min": np.min, "max": np.max, "median": np.median,
              "stdev": lambda v: np.std(v, ddof=1), "var": lambda v: np.var(v, ddof=1), "count(*)": len,
              "count(distinct x % 50)": lambda v: len(set((v % 50).tolist()))}
    names = [a.strip() if a.strip() in oracle else a.strip().split("(")[0] for a in aggregates.split(",")]
    assert [r[0] for r in rows] == sorted(by_region)
    for row in rows:
        values = np.concatenate(by_region[row[0]])
        for name, got in zip(names, row[1:]):
            assert got == pytest.approx(oracle[name](values), rel=1e-9), (row[0], name)


def test_the_split_is_shown_and_only_partials_travel(federation, fleet):
    text = ("select region(e), avg(x), stdev(x) from Edge e, Real x "
            "where x in vectorof(signal_stream('vibration'))@e group by region(e);")
    plan = federation.explain(text, fleet=fleet)
    assert "aggregate_split" in plan and "MergeAggregate by region(e)" in plan
    rows, status = run(federation, fleet, text)
    assert fleet.sources["wl-1"] == ["select sum(x), count(x), avg(x), m2(x) from Real x "
                                     "where x in vectorof(signal_stream('vibration'));"]
    assert all(status[d]["rows"] == 1 for d in status if status[d]["outcome"] == "answered")
    us = np.concatenate([vibration(0), vibration(30000)])
    assert dict((r[0], r[2]) for r in rows)["US"] == pytest.approx(np.std(us, ddof=1))


def test_median_and_distinct_ship_the_values(federation, fleet):
    run(federation, fleet, "select median(x) from Edge e, Real x where x in vectorof(signal_stream('vibration'))@e;")
    assert fleet.sources["wl-1"] == ["select x from Real x where x in vectorof(signal_stream('vibration'));"]


def test_group_by_a_value_from_the_edge_and_by_metadata(federation, fleet):
    rows, _ = run(federation, fleet, "select signal_value('mode')@e, count(e) from Edge e where kind(e) = 'dumper' "
                                     "group by signal_value('mode')@e;")
    expected = defaultdict(int)
    for _, meta, _, t, _ in online():
        if meta["kind"] == "dumper":
            expected[mode(meta, t)] += 1
    assert dict(rows) == dict(expected)
    rows, _ = run(federation, fleet, "select region(e), m, count(x) from Edge e, Charstring m, Real x "
                                     "where m = signal_value('mode')@e and x in vectorof(signal_stream('vibration'))@e "
                                     "group by region(e), m;")
    expected = defaultdict(int)
    for _, meta, _, t, _ in online():
        if meta["kind"] == "dumper":
            expected[(meta["region"], mode(meta, t))] += 1024
    assert {(r, m): n for r, m, n in rows} == dict(expected)


def test_order_by_with_limit_waits_for_every_device(federation, fleet):
    rows, status = run(federation, fleet, f"select id(e), {TEMPERATURE} from Edge e order by {TEMPERATURE} limit 2;")
    coldest = sorted(online(), key=lambda d: d[3])[:2]
    assert rows == [(d[0], d[3]) for d in coldest]
    assert status.counts()["answered"] == 5


def test_metadata_inside_an_edge_condition_travels_as_a_parameter(federation, fleet):
    rows, _ = run(federation, fleet, f"select id(e) from Edge e where {TEMPERATURE} < capability(e, 'limit');")
    assert sorted(rows) == sorted(d for d, _, caps, t, _ in online() if t < caps["limit"])
    assert fleet.sources["wl-2"] == ["select true where signal_value('outside_temperature') < :edge_capability_limit;"]
    sent = {r.device: r.params for r in fleet.requests}
    assert sent["wl-2"] == {"edge_capability_limit": -30} and sent["wl-1"] == {"edge_capability_limit": -20}


def test_a_subquery_over_edges(federation, fleet):
    rows, _ = run(federation, fleet, f"select count(select e from Edge e where {TEMPERATURE} < -30), "
                                     "count(select e from Edge e where region(e) = 'EU');")
    assert rows == [(sum(1 for d in online() if d[3] < -30), 2)]


def test_registry_only_statements_contact_no_device_and_are_complete(federation, fleet):
    rows, status = run(federation, fleet, "select region(e), count(e) from Edge e group by region(e) order by region(e);")
    assert rows == [("AU", 1), ("EU", 2), ("SE", 1), ("US", 2)]
    rows, status = run(federation, fleet, "select id(e) from Edge e where capability(e, 'ram_kb') >= 2048 "
                                          "and site(e) is null;")
    assert rows == ["d-2"] and status.complete and status.registry_only
    assert fleet.sources == {}


def test_a_function_defined_at_the_federation_runs_on_the_edges(federation, fleet):
    federation.execute("create function fahrenheit(Number c) -> Real as c * 9 / 5 + 32;")
    rows, _ = run(federation, fleet, f"select id(e), fahrenheit(signal_value('outside_temperature'))@e from Edge e;")
    assert sorted(rows) == sorted((d, t * 9 / 5 + 32) for d, _, _, t, _ in online())
    assert fleet.sources["x-1"] == ["select signal_value('outside_temperature') * 9 / 5 + 32;"]


def test_a_federation_function_shadows_an_edge_function_of_the_same_name(federation, fleet):
    for device in fleet.members.values():
        device.engine.execute("create function calibrated(Number c) -> Real as c + 1000;")
    federation.execute("create function calibrated(Number c) -> Real as c - 1;")
    rows, _ = run(federation, fleet, "select id(e), calibrated(signal_value('outside_temperature'))@e from Edge e;")
    assert sorted(rows) == sorted((d, t - 1) for d, _, _, t, _ in online())


def test_an_edge_function_announced_by_the_edges_is_typed_and_called_there(federation, fleet):
    for device in fleet.members.values():
        device.engine.execute("create function doubled(Real c) -> Real as c * 2;")
    rows, _ = run(federation, fleet, "select id(e), doubled(signal_value('outside_temperature'))@e from Edge e;")
    assert sorted(rows) == sorted((d, t * 2) for d, _, _, t, _ in online())
    with pytest.raises(streamql.QueryTypeError):
        federation.query("select doubled('text')@e from Edge e;", fleet=fleet)


def test_an_aggregate_of_a_subquery_on_each_edge_comes_back_as_one_value(federation, fleet):
    rows, status = run(federation, fleet, "select id(e), count(select x from Real x where x in "
                                          "vectorof(first_n(signal_stream('vibration'), 5))@e and x >= 0) from Edge e;")
    assert sorted(rows) == sorted((d, 5) for d, *_ in online())
    assert all(status[d]["rows"] == 1 for d in status if status[d]["outcome"] == "answered")
    # a bag as a select item is flattened (as in any query): its elements come back as rows
    rows, _ = run(federation, fleet, "select id(e), (select x from Real x where x in "
                                     "vectorof(first_n(signal_stream('vibration'), 3)))@e from Edge e;")
    assert sorted(rows) == sorted((d, float(v)) for d, *_, offset in online() for v in vibration(offset)[:3])


def test_candidates_from_a_bag_of_edges_and_distinct_over_live_values(federation, fleet):
    rows, status = run(federation, fleet, "select id(e) from Edge e where e in edges_with_signal('mode');")
    assert sorted(rows) == sorted(d for d, meta, *_ in FLEET if meta["kind"] == "dumper") and status.registry_only
    rows, _ = run(federation, fleet, f"select distinct region(e) from Edge e where {TEMPERATURE} < 0;")
    assert sorted(rows) == sorted({meta["region"] for _, meta, _, t, _ in online() if t < 0})


def test_a_stream_with_a_limit_ends_and_is_complete(federation, fleet):
    result = federation.query("select stream of id(e), w from Edge e, Vector of Real w "
                              "where w in winagg(signal_stream('vibration'), 4, 4)@e limit 3;", fleet=fleet)
    rows = list(result)                      # a standing stream, ended by its limit
    assert len(rows) == 3 and all(len(w) == 4 for _, w in rows)
    assert result.status.incomplete() == ["d-3"]    # the offline one; the others were cancelled by the limit


# ------------------------------------------------------------------------ deadlines
def test_one_shot_fragments_carry_the_device_timeout_as_their_deadline_and_streams_none(federation, fleet):
    run(federation, fleet, f"select id(e), {TEMPERATURE} from Edge e;", device_timeout=7.5)
    one_shot = list(fleet.requests)
    assert one_shot and all(r.kind != "stream" and r.deadline_s == 7.5 for r in one_shot)
    fleet.requests.clear()
    run(federation, fleet, f"select id(e), {TEMPERATURE} from Edge e;", device_timeout=None)
    assert fleet.requests and all(r.deadline_s is None for r in fleet.requests)   # nobody gives up: no deadline
    fleet.requests.clear()
    result = federation.query("select stream of id(e), x from Edge e, Real x "
                              "where x in signal_stream('vibration')@e;", fleet=fleet, device_timeout=7.5)
    take(result, 3)
    result.close()
    assert fleet.requests and all(r.kind == "stream" and r.deadline_s is None for r in fleet.requests)


def test_an_edge_that_ended_a_fragment_at_its_deadline_reports_the_device_timed_out():
    from types import SimpleNamespace

    from streamql.fleet_status import FleetStatus
    from streamql.physical.remote import _ended
    session = SimpleNamespace(status=FleetStatus())
    end = SimpleNamespace(outcome="cancelled", error={"kind": "DeadlineError", "message": "past 10 s"})
    _ended(session, None, "wl-1", end)
    _ended(session, None, "wl-2", SimpleNamespace(outcome="cancelled", error=None))
    assert session.status["wl-1"]["outcome"] == "timed out"
    assert session.status["wl-2"]["outcome"] == "cancelled"
